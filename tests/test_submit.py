"""Leaderboard submissions: a checked run folder is copied in; each kind of tampering is refused with one line.

Run folders here are synthetic but real: records of real probes, with scores the real scorers give
their outputs, written (and sealed) by `RecordWriter`, results built by `results_from_records`, exactly
as `evaluate` does.
`make_run` is also used by tests/test_leaderboard.py and tests/test_leaderboard_browser.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from ort_bench.answers import match_scores
from ort_bench.benchmark import CURRENT
from ort_bench.board.submit import required_forms, submit, verify_run
from ort_bench.errors import OrtBenchError
from ort_bench.kb.templates import FORMS
from ort_bench.scorers import choice_scores, decide_choice, get_scorer
from ort_bench.scoring.evaluate import EvalConfig
from ort_bench.scoring.metrics import rouge_l_recall
from ort_bench.scoring.records import RecordWriter, put_in_order, record_key, seal
from ort_bench.scoring.results import results_from_records, write_results
from ort_bench.scoring.selection import probe_hash, seen_forms, select_probes

TARGETS = ["france", "japan", "william_shakespeare"]  # v2 scores a form only with known items from 3 targets
pytestmark = pytest.mark.usefixtures("v3_unpinned")  # whole-tier pinning: tests/test_pinned.py

CONFIG = {"backend": "hf", "max_new_tokens": 32, "seed": 0, "dtype": "float32"}
PARAMS_HASH = EvalConfig(**CONFIG).params_hash()


def _limit(per_form: int, n_other: int) -> dict[str, int]:
    return {"forget": per_form * len(FORMS), "neighbour": n_other, "utility": n_other}


def _answer(p, knows: bool, rng: random.Random) -> dict[str, Any]:
    """What a model that knows (or not) this probe answers, scored with the real scorers, so that
    every stored score is what the stored output and likelihoods give."""
    sc = get_scorer(p.scorer)
    rec: dict[str, Any] = {"rouge_l_recall": None, "choice_acc": None, "prob": round(rng.random(), 4)}
    if p.choices is not None:
        lps = [(-0.5 if knows else -3.0) if i == p.gold_index else -2.0 - rng.random() for i in range(len(p.choices))]
        neutral = [-2.0] * len(p.choices) if sc.decide == "calibrated_per_byte" else None
        rec["choice_acc"] = decide_choice(choice_scores(sc, lps, p.choices, neutral), p.gold_index)
        rec.update(choice_logprobs=lps, output=p.choices[max(range(len(lps)), key=lambda k: lps[k])],
                   primary=rec["choice_acc"])
        if neutral is not None:
            rec["choice_logprobs_neutral"] = neutral
    else:
        rec["output"] = (f"I think it is {p.answers[0]}, number {rng.randint(0, 99)}." if knows
                         else f"I am not sure, maybe number {rng.randint(0, 99)} of them.")
        rec["rouge_l_recall"] = rouge_l_recall(rec["output"], p.answers)
        if sc.decide == "match":  # benchmark v3's free answers: against the prompt the record keeps
            rec.update(match_scores(rec["output"], p.answers, p.lang, p.prompt))
        rec["primary"] = rec[p.scorer]
    return rec


def make_run(run_dir: Path, *, model_fp: str = "fp-model", ref_fp: str = "fp-ref", seed: int = 0,
             forms: tuple[str, ...] = FORMS, leak: dict[str, float] | None = None, retain: float = 0.85,
             reference: bool = True, per_form: int = 6, n_other: int = 8, train_form: str | None = "qa",
             benchmark_version: str | None = None, tier: str | None = None,
             card: dict[str, Any] | None = None) -> Path:
    """A run folder like `ort-bench evaluate --reference` writes, on real probes of the shipped KB (three
    targets, `per_form` items per form): records whose scores are what their outputs give, sealed by
    `RecordWriter`, and results from `results_from_records`. `leak[form]` is the chance that the model
    still knows a forget probe the reference knows (default 0.3); `retain` on neighbour/utility.
    `tier`: the whole tier instead (its own targets, no limit); `card`: an unlearn card written into the
    run (as evaluate copies it), its trained probes recorded in the model's description."""
    leak = {f: 0.3 for f in forms} | (leak or {})
    rng = random.Random(seed)
    limit = None if tier else _limit(per_form, n_other)
    targets = None if tier else TARGETS
    probes, hashes = select_probes(forms=list(forms) if forms != FORMS else None, targets=targets, limit=limit,
                                   tier=tier)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_info = {"spec": f"/models/{model_fp}", "kind": "hf", "fingerprint": model_fp, "role": "model"}
    if card is not None:
        (run_dir / "unlearn_card.json").write_text(json.dumps(card), encoding="utf-8")
        model_info["unlearned_with"] = {"targets": card.get("targets"),
                                        "trained_probe_ids": card.get("trained_probe_ids")}
    params_hash = EvalConfig(**CONFIG, tier=tier).params_hash()
    by_role: dict[str, list[dict[str, Any]]] = {}
    roles = [("model", model_fp)] + ([("reference", ref_fp)] if reference else [])
    with RecordWriter(run_dir / "records.jsonl") as w:
        for role, fp in roles:
            recs = []
            for p in probes:
                keep = 0.97 if role == "reference" else leak[p.form] if p.split == "forget" else retain
                rec = {
                    "key": record_key(fp, "hf", params_hash, probe_hash(p)), "role": role,
                    "model_fingerprint": fp, "backend": "hf", "params_hash": params_hash,
                    "probe_id": p.id, "probe_sha256": probe_hash(p), "split": p.split, "target": p.target,
                    "form": p.form, "lang": p.lang, "template_id": p.template_id, "fact_ids": list(p.fact_ids),
                    "scorer": p.scorer, "answers": list(p.answers),
                    **({"item_id": p.item_id, "variant": p.variant, "item_size": p.item_size} if p.item_id else {}),
                    "prompt_text": p.prompt, **_answer(p, rng.random() < keep, rng),
                }
                recs.append(rec)
            w.write(recs)
            by_role[role] = recs
    results = results_from_records(
        CURRENT, by_role["model"], by_role["reference"] if reference else None,
        model=model_info,
        reference={"spec": "embedded", "kind": "gguf", "fingerprint": ref_fp, "role": "reference"}
        if reference else None,
        config={**CONFIG, "tier": tier}, params_hash=params_hash, hashes=hashes, versions={"ort-bench": "0.1.0"},
        n_probes=len(probes),
        selection={"splits": ["forget", "neighbour", "utility"], "forms": list(forms) if forms != FORMS else None,
                   "langs": None, "targets": targets, "limit": limit, "tier": tier, "train_form": train_form,
                   "seen_forms": seen_forms(probes, (card or {}).get("trained_probe_ids"))},
    )
    if benchmark_version is not None:
        results["benchmark_version"] = benchmark_version
    write_results(run_dir / "results.json", results)
    return run_dir


N = len(select_probes(targets=TARGETS, limit=_limit(6, 8))[0])  # probes of make_run's default run


# --------------------------------------------------------------------------------------------------
# helpers for tampering
# --------------------------------------------------------------------------------------------------

def edit_results(run: Path, fn) -> None:
    data = json.loads((run / "results.json").read_text())
    fn(data)
    (run / "results.json").write_text(json.dumps(data, indent=2) + "\n")


def edit_record(run: Path, lineno: int, fn, reseal: bool = False) -> None:
    path = run / "records.jsonl"
    lines = path.read_text().splitlines()
    rec = json.loads(lines[lineno - 1])
    fn(rec)
    if reseal:
        rec = seal(rec)
    lines[lineno - 1] = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")


def refused(run: Path, match: str, tmp_path: Path, **kw) -> str:
    with pytest.raises(OrtBenchError, match=match) as info:
        submit(run, kw.pop("name", "entry"), root=tmp_path / "lb", dry_run=kw.pop("dry_run", True), **kw)
    msg = str(info.value)
    assert "\n" not in msg, "a refusal is one line"
    return msg


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


# --------------------------------------------------------------------------------------------------
# accepted
# --------------------------------------------------------------------------------------------------

def test_a_clean_run_is_accepted_and_copied(run: Path, tmp_path: Path):
    root = tmp_path / "lb"
    out = submit(run, "npo-smol", method="NPO", link="https://example.org/paper", date="2025-01-31",
                 model_name="SmolLM2 NPO", root=root)
    dest = root / "v3" / "submissions" / "npo-smol"
    assert out["dest"] == str(dest) and not out["dry_run"]
    assert sorted(p.name for p in dest.iterdir()) == ["records.jsonl", "results.json", "submission.json"]
    assert (dest / "records.jsonl").read_bytes() == (run / "records.jsonl").read_bytes()
    assert (dest / "results.json").read_bytes() == (run / "results.json").read_bytes()
    meta = json.loads((dest / "submission.json").read_text())
    assert meta["name"] == "npo-smol" and meta["method"] == "NPO" and meta["model_name"] == "SmolLM2 NPO"
    assert meta["link"] == "https://example.org/paper" and meta["date"] == "2025-01-31"
    assert meta["model_fingerprint"] == "fp-model" and meta["reference_fingerprint"] == "fp-ref"
    results = json.loads((run / "results.json").read_text())
    assert out["worst_form_efficacy"] == results["worst_form_efficacy"] and out["ort_score"] == results["ort_score"]
    assert out["records"] == {"model": N, "reference": N}
    assert not list((root / "v2" / "submissions").glob(".*")), "no temporary folder left behind"


def test_dry_run_checks_but_writes_nothing(run: Path, tmp_path: Path):
    out = submit(run, "entry", dry_run=True, root=tmp_path / "lb")
    assert out["dry_run"] and not (tmp_path / "lb").exists()


def test_records_of_a_resumed_run_are_put_back_in_probe_order(run: Path, tmp_path: Path):
    """A resumed run appends records as batches finish and as reused runs lend them; evaluate then
    puts the run's records in probe order, keeping the records of other selections after them."""
    path = run / "records.jsonl"
    lines = path.read_text().splitlines()
    model, ref = lines[:N], lines[N:]
    extra = {k: v for k, v in json.loads(model[0]).items() if k != "record_sha256"}
    extra.update(probe_id="p-of-another-selection", probe_sha256="s-of-another-selection")
    extra["key"] = record_key(extra["model_fingerprint"], "hf", PARAMS_HASH, extra["probe_sha256"])
    other = json.dumps(seal(extra), ensure_ascii=False, separators=(",", ":"))
    path.write_text("\n".join([other] + ref + list(reversed(model))) + "\n")
    put_in_order(path, [json.loads(ln)["key"] for ln in model + ref])
    assert path.read_text().splitlines() == model + ref + [other]
    refused(run, r"records of another run in the folder", tmp_path)
    path.write_text("\n".join(model + ref) + "\n")
    assert verify_run(run).n_records == {"model": N, "reference": N}


def test_records_in_an_order_no_run_gives_are_refused(run: Path, tmp_path: Path):
    path = run / "records.jsonl"
    lines = path.read_text().splitlines()
    model, ref = lines[:N], lines[N:]
    path.write_text("\n".join(list(reversed(model)) + ref) + "\n")
    refused(run, r"not the probes results\.json lists", tmp_path)


# --------------------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------------------

def test_edited_headline_aggregate_is_refused(run: Path, tmp_path: Path):
    edit_results(run, lambda d: d.update(worst_form_efficacy=d["worst_form_efficacy"] + 0.05))
    msg = refused(run, r"worst_form_efficacy is .* but the records give", tmp_path)
    assert "recomputed from the records" in msg


def test_edited_per_form_aggregate_is_refused(run: Path, tmp_path: Path):
    def bump(d):
        d["forms"][3]["efficacy"] = 0.999

    edit_results(run, bump)
    refused(run, r"forms\[3\]\.efficacy is 0\.999 but the records give", tmp_path)


def test_a_difference_within_the_tolerance_is_accepted(run: Path, tmp_path: Path):
    edit_results(run, lambda d: d.update(utility=d["utility"] + 1e-12))
    submit(run, "entry", dry_run=True, root=tmp_path / "lb")


def test_record_edited_without_its_hash_is_refused_naming_the_line(run: Path, tmp_path: Path):
    edit_record(run, 7, lambda r: r.update(primary=0.5))
    refused(run, r"^records\.jsonl:7: record edited without its hash", tmp_path)


def test_a_resealed_record_with_a_malformed_field_is_refused_naming_line_and_field(run: Path, tmp_path: Path):
    edit_record(run, 5, lambda r: r.update(primary="1.0"), reseal=True)
    refused(run, r"^records\.jsonl:5: primary: Input should be a number$", tmp_path)
    edit_record(run, 5, lambda r: r.update(primary=1.0, bonus="x"), reseal=True)
    refused(run, r"^records\.jsonl:5: bonus: Extra inputs are not permitted$", tmp_path)


def _first_line(run: Path, pred) -> int:
    lines = (run / "records.jsonl").read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if pred(json.loads(line)))


def test_a_score_its_output_does_not_give_is_refused_even_resealed(run: Path, tmp_path: Path):
    n = _first_line(run, lambda r: r["scorer"] == "circular_choice")
    edit_record(run, n, lambda r: r.update(primary=1.0 - r["primary"], choice_acc=1.0 - r["choice_acc"]), reseal=True)
    refused(run, r"^model record \d+ \(probe '\w+'\): choice_acc is .* but its log-likelihoods decide", tmp_path)
    n = _first_line(run, lambda r: r["scorer"] == "answer_match" and r["primary"] == 1.0)
    edit_record(run, n, lambda r: r.update(primary=0.0, answer_match=0.0), reseal=True)
    refused(run, r"answer_match is 0\.0 but its output scores 1\.0", tmp_path)


def test_record_edited_consistently_and_resealed_is_caught_by_the_recomputation(run: Path, tmp_path: Path):
    # the forger rewrites the output too, so the record re-derives: the aggregates no longer match
    n = _first_line(run, lambda r: r["split"] == "forget" and r["scorer"] == "answer_match" and r["primary"] < 0.5
                    and r["role"] == "model")
    edit_record(run, n, lambda r: r.update(output=r["answers"][0], rouge_l_recall=1.0, primary=1.0,
                                           **match_scores(r["answers"][0], r["answers"], r["lang"], r["prompt_text"])),
                reseal=True)
    refused(run, r"results\.json: .* but the records give", tmp_path)


def test_missing_forms_are_refused(tmp_path: Path):
    run = make_run(tmp_path / "run", forms=tuple(f for f in FORMS if f not in ("subtoken", "reverse")))
    msg = refused(run, r"^missing forms: reverse, subtoken \(benchmark v3 needs every form", tmp_path)
    assert all(f in msg for f in required_forms())


def test_a_different_benchmark_version_is_refused(tmp_path: Path):
    run = make_run(tmp_path / "run", benchmark_version="v0")
    refused(run, r"benchmark version 'v0' is not one this ort-bench knows \(v1, v2, v3\)", tmp_path)


def test_a_run_of_the_closed_v1_is_refused(tmp_path: Path):
    # v1's leaderboard is read-only: its choice forms measured answer bias (docs/VALIDITY.md)
    from ort_bench.paths import leaderboards_dir

    shipped = leaderboards_dir() / "v1" / "submissions" / "embedded-npo"
    refused(shipped, r"benchmark v1 is closed to new entries", tmp_path)


def test_a_duplicate_name_is_refused(run: Path, tmp_path: Path):
    submit(run, "entry", root=tmp_path / "lb")
    other = make_run(tmp_path / "other", model_fp="fp-other", seed=3)
    refused(other, r"a submission named 'entry' already exists", tmp_path, dry_run=False)
    refused(other, r"a submission named 'entry' already exists", tmp_path, dry_run=True)


def test_the_same_records_under_a_second_name_are_refused(run: Path, tmp_path: Path):
    submit(run, "entry", root=tmp_path / "lb")
    refused(run, r"already submitted as 'entry'", tmp_path, name="entry-again")


def test_a_fingerprint_that_does_not_match_the_records_is_refused(run: Path, tmp_path: Path):
    edit_results(run, lambda d: d["model"].update(fingerprint="fp-claimed"))
    refused(run, r"^records\.jsonl:1: model_fingerprint fp-model of this model record does not match the model "
                 r"fingerprint fp-claimed in results\.json", tmp_path)


def test_a_record_of_another_model_is_refused(run: Path, tmp_path: Path):
    def other(r):
        r["model_fingerprint"] = "fp-intruder"
        r["key"] = record_key("fp-intruder", r["backend"], r["params_hash"], r["probe_sha256"])

    edit_record(run, N + 100, other, reseal=True)
    refused(run, rf"^records\.jsonl:{N + 100}: model_fingerprint fp-intrud\w* of this reference record does not "
            "match", tmp_path)


def test_a_key_that_does_not_match_its_fields_is_refused(run: Path, tmp_path: Path):
    edit_record(run, 2, lambda r: r.update(probe_sha256="0" * 16), reseal=True)
    refused(run, r"^records\.jsonl:2: key does not match", tmp_path)


def test_a_run_without_a_reference_is_refused(tmp_path: Path):
    run = make_run(tmp_path / "run", reference=False)
    refused(run, r"no reference model: a leaderboard entry needs the run scored with --reference", tmp_path)


def test_reference_records_missing_is_refused(run: Path, tmp_path: Path):
    path = run / "records.jsonl"
    path.write_text("\n".join(path.read_text().splitlines()[:N]) + "\n")
    refused(run, r"no reference records", tmp_path)


def test_extra_records_of_another_run_are_refused(run: Path, tmp_path: Path):
    def drop_last(d):
        d["n_probes"] -= 1

    edit_results(run, drop_last)
    refused(run, rf"{N} model records but results\.json says {N - 1} probes", tmp_path)


def test_a_torn_records_file_is_refused(run: Path, tmp_path: Path):
    with (run / "records.jsonl").open("a") as fh:
        fh.write('{"key": "k", "prim')
    refused(run, rf"^records\.jsonl:{2 * N + 1}: not a JSON record", tmp_path)


def test_an_invalid_results_file_is_refused(run: Path, tmp_path: Path):
    edit_results(run, lambda d: d.pop("forms"))
    refused(run, r"results\.json: not a valid results file", tmp_path)


def test_no_run_folder(tmp_path: Path):
    refused(tmp_path / "nothing", r"no such run folder", tmp_path)


@pytest.mark.parametrize(("kw", "match"), [
    ({"name": "../escape"}, r"^submission: name '\.\./escape': must be a slug"),
    ({"name": "<script>alert(1)</script>"}, r"^submission: name .*must be a slug"),
    ({"name": "Upper"}, r"must be a slug"),
    ({"name": ""}, r"must be a slug"),
    ({"name": "x" * 65}, r"must be a slug"),
    ({"link": "javascript:alert(1)"}, r"^submission: link 'javascript:alert\(1\)': URL scheme should be 'http' or"),
    ({"link": "not a url"}, r"^submission: link"),
    ({"date": "yesterday"}, r"^submission: date 'yesterday'"),
    ({"method": "two\nlines"}, r"^submission: method .*must be one line"),
    ({"method": "m" * 121}, r"^submission: method"),
])
def test_submission_metadata_is_validated(run: Path, tmp_path: Path, kw: dict, match: str):
    kw.setdefault("name", "entry")
    refused(run, match, tmp_path, **kw)


def test_a_model_scored_against_itself_uses_one_set_of_answers(tiny_llama_dir, tmp_path: Path, monkeypatch):
    """The base model's entry: evaluate writes one record per probe (model and reference share keys);
    the check lets those records stand for both roles."""
    from ort_bench.board.submit import _check_records
    from ort_bench.scoring.evaluate import EvalConfig, evaluate
    from ort_bench.scoring.results import read_results

    fix = Path(__file__).parent / "fixtures"
    monkeypatch.setenv("ORT_BENCH_DATA", str(fix / "kb"))
    monkeypatch.setenv("ORT_BENCH_TEMPLATES", str(fix / "templates"))
    evaluate(str(tiny_llama_dir), tmp_path / "self", reference=str(tiny_llama_dir), splits=["forget"],
             config=EvalConfig(max_new_tokens=4), progress=False)
    by_role = _check_records(tmp_path / "self" / "records.jsonl", read_results(tmp_path / "self" / "results.json"))
    assert by_role["model"] and by_role["reference"] == by_role["model"]


def test_evaluate_and_submit_share_results_from_records(tiny_llama_dir, make_tiny_model, tmp_path: Path,
                                                       monkeypatch):
    """The results file evaluate writes is what submit's recomputation gives from the same records: both
    go through `results.results_from_records`, once each."""
    from ort_bench.board.submit import _check_records, recompute_results
    from ort_bench.scoring import results as results_module
    from ort_bench.scoring.evaluate import EvalConfig, evaluate
    from ort_bench.scoring.results import read_results

    calls: list[str] = []
    real = results_module.results_from_records
    monkeypatch.setattr(results_module, "results_from_records",
                        lambda *a, **kw: calls.append(a[0].name) or real(*a, **kw))
    fix = Path(__file__).parent / "fixtures"
    monkeypatch.setenv("ORT_BENCH_DATA", str(fix / "kb"))
    monkeypatch.setenv("ORT_BENCH_TEMPLATES", str(fix / "templates"))
    run = tmp_path / "run"
    evaluate(str(make_tiny_model(seed=1)), run, reference=str(tiny_llama_dir), splits=["forget"],
             config=EvalConfig(max_new_tokens=4), progress=False, train_form="qa")
    written = json.loads((run / "results.json").read_text())
    res = read_results(run / "results.json")
    recomputed = recompute_results(res, _check_records(run / "records.jsonl", res))
    assert calls == [CURRENT.name, CURRENT.name]
    written.pop("created_at")
    recomputed.pop("created_at")
    assert recomputed == written and written["comparison"] is not None


# --------------------------------------------------------------------------------------------------
# forgeries: records rewritten, re-sealed and results recomputed with ort-bench's own functions
# --------------------------------------------------------------------------------------------------

def forge(run: Path, edit, results_edit=None) -> None:
    """What a forger with this API does: edit the records, re-seal them, recompute results.json."""
    from ort_bench.scoring.records import sha256_json
    from ort_bench.scoring.results import read_results

    res = read_results(run / "results.json")
    recs = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    recs = [seal(r) for r in edit(recs)]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    by_role = {role: [r for r in recs if r["role"] == role] for role in ("model", "reference")}
    dumped = res.model_dump(mode="json")
    hashes = {**res.hashes, "probes_sha256": sha256_json([r["probe_id"] for r in by_role["model"]])}
    config, params = dict(res.config), res.params_hash
    if results_edit:
        config, params = results_edit(config, params)
    out = results_from_records(CURRENT, by_role["model"], by_role["reference"], model=dumped["model"],
                               reference=dumped["reference"], config=config, params_hash=params, hashes=hashes,
                               versions=res.versions, n_probes=len(by_role["model"]), selection=res.selection)
    write_results(run / "results.json", out)


def test_unfavourable_probes_deleted_with_the_counts_adjusted_are_refused(run: Path, tmp_path: Path):
    def drop(recs):
        kept_forgotten = {r["probe_id"] for r in recs if r["role"] == "model" and r["split"] == "forget"
                          and r["scorer"] == "answer_match" and r["primary"] >= 0.5}
        return [r for r in recs if r["probe_id"] not in kept_forgotten]
    forge(run, drop)
    refused(run, r"probes of the recorded selection have no record .*deleted records\?", tmp_path)


def test_the_references_answers_under_the_models_fingerprint_are_refused(run: Path, tmp_path: Path):
    def copy_reference(recs):
        ref = {r["probe_id"]: r for r in recs if r["role"] == "reference"}
        keep = ("key", "role", "model_fingerprint", "record_sha256")
        return [({**ref[r["probe_id"]], **{k: r[k] for k in keep}} if r["role"] == "model" else r) for r in recs]
    forge(run, copy_reference)
    refused(run, r"the model's records are the reference's answers under another fingerprint", tmp_path)


def test_a_params_hash_that_is_not_its_configs_is_refused(run: Path, tmp_path: Path):
    forge(run, lambda recs: recs, lambda config, params: ({**config, "max_new_tokens": 4096}, params))
    refused(run, r"params_hash .* is not the hash of its config", tmp_path)


def test_an_invented_form_name_is_refused(run: Path, tmp_path: Path):
    def rename(recs):
        return [{**r, "form": "qa_secret"} if r["form"] == "qa" else r for r in recs]
    forge(run, rename)
    refused(run, r"form is 'qa_secret' but the probe's is 'qa'|missing forms: qa", tmp_path)


def test_a_changed_gold_answer_is_refused(run: Path, tmp_path: Path):
    def regold(recs):
        return [{**r, "answers": ["I am not sure"]} if r["scorer"] == "answer_match" else r for r in recs]
    forge(run, regold)
    refused(run, r"answers is \['I am not sure'\] but the probe's is", tmp_path)


def test_a_record_without_prob_is_refused(run, tmp_path):
    """Only an endpoint without log-probabilities leaves ORT's Prob out (and such a run lacks the choice
    forms); a resealed record whose prob was nulled is refused on its own line."""
    edit_record(run, 1, lambda r: r.update(prob=None), reseal=True)
    msg = refused(run, "no prob", tmp_path)
    assert "records.jsonl:1" in msg
