"""`ort-bench export lm-eval`: the forms as lm-evaluation-harness tasks.

Fast tests: every form of the core tier is a task and every split a group, lm-eval's own `TaskManager`
loads them, and the requests lm-eval builds from them (chat template applied by lm-eval's `HFLM`, or
prompts formatted at export) are exactly the contexts and continuations ort-bench scores; the hooks decide
items as ort-bench does; bad input is one line. The integration test runs the real `lm_eval.simple_evaluate`
with its `hf` model on the embedded model and checks its answers, log-likelihoods, decisions and scores
against `ort-bench evaluate`'s records of the same probes.
"""

from __future__ import annotations

import json
import math
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from ort_bench.board.export_lm_eval import (
    agg_item_score,
    agg_target_score,
    choice_logprobs,
    export_lm_eval,
    item_results,
    load_data,
)
from ort_bench.cli import main
from ort_bench.errors import OrtBenchError
from ort_bench.models.prompting import format_prompt, join_continuation
from ort_bench.scoring.eval_config import EvalConfig
from ort_bench.scoring.selection import select_probes

lm_eval = pytest.importorskip("lm_eval")

SPLITS = ("forget", "neighbour", "utility")


@pytest.fixture(scope="module", autouse=True)
def _datasets_cache(tmp_path_factory):
    """The json builder's cache (lm-eval loads the data through `datasets`) kept out of the user's."""
    import datasets

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf-datasets"))
        yield


def task_manager(folder: Path):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(folder), include_defaults=False)


def tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def requests_of(folder: Path, names: list[str], tok: Any, chat: bool) -> dict[str, Any]:
    """The tasks, their requests built as `simple_evaluate` builds them (lm-eval's `HFLM.apply_chat_template`
    on this tokenizer: no model is loaded)."""
    from lm_eval.models.huggingface import HFLM

    lm = types.SimpleNamespace(tokenizer=tok, chat_template_args={})
    tasks = task_manager(folder).load(names)["tasks"]
    for task in tasks.values():
        def template(history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            return HFLM.apply_chat_template(lm, history, add_generation_prompt)

        task.build_all_requests(apply_chat_template=chat, fewshot_as_multiturn=True,
                                chat_template=template if chat else None)
    return tasks


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# --------------------------------------------------------------------------------------------------
# the exported files
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def core(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("lm-eval") / "core"
    return out, export_lm_eval(out, tier="core")


def test_every_form_is_a_task_and_every_split_a_group(core):
    out, summary = core
    probes, _ = select_probes(tier="core")
    wanted = sorted({(p.split, p.form) for p in probes})
    assert sorted((t["split"], t["form"]) for t in summary["tasks"].values()) == wanted
    for split in SPLITS:
        group = yaml.safe_load((out / f"ort_bench_core_{split}.yaml").read_text())
        assert group["task"] == [n for n, t in summary["tasks"].items() if t["split"] == split]
        assert [m["metric"] for m in group["aggregate_metric_list"]] == ["item_score", "target_score"]
    for name, t in summary["tasks"].items():
        data = out / "data" / t["split"] / f"{t['form']}.jsonl"
        docs = [json.loads(line) for line in data.read_text().splitlines()]
        mine = [p for p in probes if (p.split, p.form) == (t["split"], t["form"])]
        assert [d["id"] for d in docs if d["part"] == "probe"] == [p.id for p in mine]  # evaluate's order
        assert t["items"] == len({p.item_key for p in mine}) and t["docs"] == len(docs)
        text = (out / f"{name}.yaml").read_text()
        assert "process_results: !function utils.process_" in text and "dataset_path: json" in text
        if t["form"] == "mcq":  # a neutral prompt per calibrated item
            assert sum(d["part"] == "neutral" for d in docs) == t["items"]
    tm = task_manager(out)
    assert set(summary["tasks"]) <= set(tm.all_subtasks)
    assert set(tm.all_groups) == {f"ort_bench_core_{s}" for s in SPLITS}
    readme = (out / "README.md").read_text()
    assert "--apply_chat_template" in summary["lm_eval"] and "--apply_chat_template" in readme
    hashes = yaml.safe_load(readme.split("---\n")[1])["ort_bench"]["hashes"]
    assert hashes["probes_sha256"] == hashes["exported_probes_sha256"] == select_probes(tier="core")[1]["probes_sha256"]


def test_lm_eval_sends_the_prompts_ort_bench_sends(core, tiny_llama_dir):
    """Every request of every task, built by lm-eval with --apply_chat_template, is ort-bench's: the
    context is `format_prompt` (system turn, prefill), the continuation the option as `join_continuation`
    joins it (or a whitespace document's empty one), generation greedy at the version's length."""
    out, summary = core
    tok = tokenizer(tiny_llama_dir)
    tasks = requests_of(out, list(summary["tasks"]), tok, chat=True)
    seen = {"system": 0, "prefill": 0, "ws": 0}
    for task in tasks.values():
        for inst in task.instances:
            doc = inst.doc
            ctx = inst.arguments[0]
            assert ctx == format_prompt(tok, doc["prompt"], doc["system"] or None, doc["prefill"] or None), doc["id"]
            seen["system"] += bool(doc["system"])
            seen["prefill"] += bool(doc["prefill"])
            if task.OUTPUT_TYPE == "generate_until":
                gen = inst.arguments[1]
                assert gen["until"] == [] and gen["do_sample"] is False
                assert gen["max_gen_toks"] == EvalConfig().new_tokens(doc["form"])
            elif doc["part"] == "ws":
                seen["ws"] += 1
                assert inst.arguments[1] == "" and ctx[-1].isspace()
            else:
                assert inst.arguments[1] == join_continuation(ctx, doc["options"][inst.idx])
                assert bool(doc["ws"]) == ctx[-1].isspace()
    assert all(seen.values()), seen  # the core tier has system turns, prefills and whitespace documents


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_prompts_formatted_for_a_model(arch, make_tiny_model, tmp_path):
    """--model M: the documents hold M's own prompts (its chat template, or BOS + plain text without
    one), and lm-eval run without --apply_chat_template sends them unchanged."""
    model_dir = make_tiny_model(arch)
    out = tmp_path / "formatted"
    summary = export_lm_eval(out, splits=["neighbour"], forms=["mcq", "true_false", "adversarial"], limit=2,
                             model=str(model_dir))
    assert summary["mode"] == "formatted" and "--apply_chat_template" not in summary["lm_eval"]
    assert f"pretrained={model_dir}" in summary["lm_eval"]
    tok = tokenizer(model_dir)
    n = 0
    for task in requests_of(out, ["ort_bench_core_neighbour"], tok, chat=False).values():
        for inst in task.instances:
            doc, ctx = inst.doc, inst.arguments[0]
            assert ctx == format_prompt(tok, doc["prompt"], doc["system"] or None, doc["prefill"] or None)
            if task.OUTPUT_TYPE == "multiple_choice" and doc["part"] != "ws":
                assert inst.arguments[1] == join_continuation(ctx, doc["options"][inst.idx])
            n += 1
    assert n > 0


# --------------------------------------------------------------------------------------------------
# the hooks: items decided as ort-bench decides them
# --------------------------------------------------------------------------------------------------

def _probe(pid: str, item: str, size: int, cluster: str, **kw: Any) -> dict[str, Any]:
    return {"id": pid, "item": item, "part": "probe", "size": size, "cluster": cluster, **kw}


def test_pairs_count_only_when_both_statements_are_right():
    tf = {"scorer": "label_pair", "options": ["True", "False"], "ws": ""}
    payloads = [
        _probe("a1", "a", 2, "t1", lls=[-0.1, -2.0], gold=0, **tf),
        _probe("a2", "a", 2, "t1", lls=[-2.0, -0.1], gold=1, **tf),
        _probe("b1", "b", 2, "t1", lls=[-0.1, -2.0], gold=0, **tf),
        _probe("b2", "b", 2, "t1", lls=[-0.1, -2.0], gold=1, **tf),
        _probe("c", "c", 1, "t2", scorer="answer_match", decision=1.0),
    ]
    res = item_results(payloads)
    assert {k: v["score"] for k, v in res.items()} == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert res["b"]["probes"] == {"b1": 1.0, "b2": 0.0}
    assert agg_item_score(payloads) == pytest.approx(2 / 3)
    assert agg_target_score(payloads) == pytest.approx((0.5 + 1.0) / 2)  # mean over targets of their means


def test_whitespace_is_subtracted_before_the_calibrated_ranking():
    """lm-eval scores a context's trailing whitespace with every option: the probe's and the neutral
    prompt's differ, and per byte the difference can flip the decision, so it is subtracted."""
    mcq = {"scorer": "circular_choice", "options": ["A", "BBBB"]}
    probe = _probe("p", "i", 1, "t", lls=[-3.0, -5.0], gold=0, ws="i:ws:x", **mcq)
    neutral = {**probe, "id": "i:neutral", "part": "neutral", "lls": [-2.0, -2.0], "ws": ""}
    ws = {"id": "i:ws:x", "item": "i", "part": "ws", "size": 1, "cluster": "t", "scorer": "circular_choice", "ll": -2.0}
    assert item_results([probe, neutral, ws])["i"]["score"] == 1.0  # (-1+2)/1 > (-3+2)/4
    assert choice_logprobs([probe, neutral, ws]) == {"p": [-1.0, -3.0], "i:neutral": [-2.0, -2.0]}
    assert item_results([{**probe, "ws": ""}, neutral])["i"]["score"] == 0.0  # uncorrected: (-3+2)/1 < (-5+2)/4


def test_an_item_cut_by_lm_eval_limit_is_left_out():
    mcq = {"scorer": "circular_choice", "options": ["A", "B"], "ws": ""}
    rot = [_probe(f"r{k}", "i", 2, "t", lls=[-1.0, -2.0], gold=0, **mcq) for k in range(2)]
    neutral = {**rot[0], "id": "i:neutral", "part": "neutral", "lls": [-2.0, -1.0]}
    assert item_results(rot[:1] + [neutral]) == {}  # one rotation of two
    assert item_results(rot) == {}  # no neutral prompt
    assert item_results([{**rot[0], "ws": "i:ws"}, rot[1], neutral]) == {}  # no whitespace document
    assert math.isnan(agg_item_score(rot)) and item_results([*rot, neutral])["i"]["score"] == 1.0


def test_data_load_refuses_another_benchmark_version(core):
    out, _ = core
    files = {"test": "data/forget/qa.jsonl"}
    assert len(load_data(out, data_files=files, ort_bench={"benchmark_version": "v3"})["test"]) > 0
    with pytest.raises(OrtBenchError, match="exported for benchmark v2"):
        load_data(out, data_files=files, ort_bench={"benchmark_version": "v2"})
    with pytest.raises(OrtBenchError, match="no such data file"):
        load_data(out, data_files={"test": "data/forget/nothing.jsonl"})


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--tier", "nope"], "unknown tier 'nope'"),
    (["--split", "forget,nope"], "unknown split 'nope'"),
    (["--forms", "nope"], "nope"),
])
def test_bad_input_is_one_line(args, message, tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["export", "lm-eval", "--out", str(out), *args]) == 1
    assert message in one_error_line(capsys)
    assert not out.exists()  # refused before anything is written


def test_a_folder_that_is_not_empty_is_refused_unless_forced(tmp_path, capsys):
    out = tmp_path / "x"
    (out / "data").mkdir(parents=True)
    (out / "data" / "stale.jsonl").write_text("{}\n")
    args = ["export", "lm-eval", "--out", str(out), "--split", "utility", "--forms", "qa", "--limit", "1"]
    assert main(args) == 1 and "--force" in one_error_line(capsys)
    assert main([*args, "--force"]) == 0
    assert not (out / "data" / "stale.jsonl").exists() and (out / "ort_bench_core_utility_qa.yaml").is_file()
    assert json.loads(capsys.readouterr().out)["tasks"]["ort_bench_core_utility_qa"]["items"] == 1


# --------------------------------------------------------------------------------------------------
# the real lm_eval on the embedded model against ort-bench's records
# --------------------------------------------------------------------------------------------------

LL_TOL = 1e-4  # float32 forward passes batched differently; the whitespace corrections are larger (~1e-3)


def _check_against_records(results: dict[str, Any], records: dict[str, dict[str, Any]], items: Any,
                           group: str) -> dict[str, int]:
    """lm-eval's answers, log-likelihoods, decisions and scores equal the records'; counts what was compared."""
    n = {"answers": 0, "choice_docs": 0, "items": 0, "ws": 0}
    task_scores = []
    for task, samples in results["samples"].items():
        payloads = [s["item_score"] for s in samples]
        for s in samples:
            p = s["item_score"]
            if "output" in p:  # a free answer: greedy answers equal, and so their scores
                rec = records[p["id"]]
                assert p["output"] == rec["output"], (task, p["id"])
                assert (p["decision"], s["content_recall"]) == (rec["answer_match"], rec["content_recall"])
                n["answers"] += 1
            if p["part"] == "ws":
                n["ws"] += p["ll"] < -LL_TOL  # the correction matters at this tolerance
        for pid, lls in choice_logprobs(payloads).items():
            if pid in records:
                want = records[pid]["choice_logprobs"]
            else:  # a neutral prompt: the records keep it per probe, in the probe's option order
                item = pid.split(":")[0]
                probe = next(s["doc"] for s in samples if s["doc"]["item"] == item and s["doc"]["part"] == "probe")
                neutral = next(s["doc"] for s in samples if s["doc"]["id"] == pid)
                by_option = dict(zip(probe["options"], records[probe["id"]]["choice_logprobs_neutral"], strict=True))
                want = [by_option[o] for o in neutral["options"]]
            assert lls == pytest.approx(want, abs=LL_TOL), (task, pid)
            n["choice_docs"] += 1
        res = item_results(payloads)
        for item, r in res.items():
            assert r["probes"] == {pid: records[pid]["primary"] for pid in r["probes"]}, (task, item)
            assert r["score"] == items.loc[item, "primary"]
            n["items"] += 1
        mine = items.loc[list(res)]
        got = results["results"][task]
        assert got["item_score,none"] == pytest.approx(mine["primary"].mean())
        assert got["target_score,none"] == pytest.approx(mine.groupby("cluster")["primary"].mean().mean())
        task_scores.append(got["item_score,none"])
    assert results["results"][group]["item_score,none"] == pytest.approx(sum(task_scores) / len(task_scores))
    return n


@pytest.mark.integration
def test_lm_eval_answers_and_scores_equal_ort_bench_records(embedded_dir, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from ort_bench.kb.probes import write_probes
    from ort_bench.scoring.evaluate import evaluate
    from ort_bench.scoring.metrics_v2 import items_of
    from ort_bench.scoring.records import load_records, records_frame

    group = "ort_bench_core_neighbour"
    # free answers with system turns and prefills, MCQ letters (prefill) and option texts (neutral prompt,
    # whitespace documents), true/false pairs: the first 3 items of each form cover them all
    chat = export_lm_eval(tmp_path / "chat", splits=["neighbour"], limit=3,
                          forms=["cloze", "mcq", "true_false", "adversarial"])
    formatted = export_lm_eval(tmp_path / "formatted", splits=["neighbour"], forms=["mcq", "true_false", "adversarial"],
                               limit=2, model="embedded")
    ids = {json.loads(line)["id"] for f in (tmp_path / "chat" / "data").rglob("*.jsonl")
           for line in f.read_text().splitlines()}
    probes = [p for p in select_probes(["neighbour"], tier="core")[0] if p.id in ids]
    assert len({p.item_key for p in probes}) == sum(t["items"] for t in chat["tasks"].values())
    assert {"mcq-rank-en", "mcq-prefill-en"} <= {p.template_id for p in probes}
    assert any(p.system for p in probes) and any(p.prefill and p.choices is None for p in probes)
    write_probes(tmp_path / "probes.jsonl", probes)
    evaluate("embedded", tmp_path / "run", probes_file=tmp_path / "probes.jsonl", splits=["neighbour"],
             config=EvalConfig(dtype="float32", device="cpu"), progress=False)
    stored = list(load_records(tmp_path / "run" / "records.jsonl").values())
    records = {r["probe_id"]: r for r in stored}
    items = items_of(records_frame(stored)).set_index("probe_id")

    lm = HFLM(pretrained=str(embedded_dir), dtype="float32", device="cpu", batch_size=8)
    counts = {}
    for folder, apply_chat in ((tmp_path / "chat", True), (tmp_path / "formatted", False)):
        results = simple_evaluate(model=lm, tasks=[group], task_manager=task_manager(folder), log_samples=True,
                                  apply_chat_template=apply_chat, bootstrap_iters=0)
        counts[folder.name] = _check_against_records(results, records, items, group)
    assert counts["chat"]["answers"] == 6 and counts["chat"]["items"] == len(items) and counts["chat"]["ws"] > 0
    assert counts["formatted"]["choice_docs"] > 0 and counts["formatted"]["answers"] == 2
    assert formatted["tasks"]["ort_bench_core_neighbour_mcq"]["items"] == 2
    # not a trivial agreement: the embedded model gets some items right and some wrong
    assert 0 < items["primary"].mean() < 1
