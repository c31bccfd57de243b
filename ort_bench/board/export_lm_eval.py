"""The benchmark's forms as lm-evaluation-harness tasks, scored by ort-bench's own scorers.

People who already run lm-evaluation-harness (`lm_eval`) want ort-bench's forms next to their other tasks,
on their models and engines. `export_lm_eval` writes a folder that `lm_eval --include_path DIR` loads:

    DIR/README.md                                 how to run it, what the numbers mean, what must match
    DIR/utils.py                                  the hooks: data loading and scoring, imported from ort-bench
    DIR/ort_bench_{tier}_{split}.yaml             a group per split (forget, neighbour, utility)
    DIR/ort_bench_{tier}_{split}_{form}.yaml      a task per form
    DIR/data/{split}/{form}.jsonl                 the task's documents (`dataset_path: json`, `data_files`)

Free-answer forms are `generate_until` tasks (greedy, the version's length per form, no stop string but
EOS); `process_results` is ort-bench's `answer_match`, so the export needs ort-bench installed where lm_eval
runs. Choice forms are `multiple_choice` tasks, one document per prompt ort-bench asks: each statement of a
true/false pair, each rotation of an MCQ, and one neutral-prompt document per MCQ item (the calibration
`circular_choice` subtracts). lm-eval aggregates per document, ort-bench decides per item (all its probes
right), so every document returns its log-likelihoods keyed by item and the metrics' aggregation functions
recombine them with `ort_bench.scorers` (`item_score`: mean over items; `target_score`: mean over targets of
their items' mean, ORT's averaging; neither is corrected for chance nor filtered by a reference's knowledge:
that needs `ort-bench evaluate --reference`).

**The prompt lm-eval sends is the one ort-bench sends** in one of two ways:

- default (`chat`): documents hold the probe's user turn, system turn (`description`, lm-eval's system
  message) and prefill (`gen_prefix`, the start of the reply); run lm_eval with `--apply_chat_template`.
  Exact for chat templates that take a system turn and end the assistant header with whitespace (ChatML as
  SmolLM2 and Qwen, Llama-3, Zephyr). The free-answer scorer voids the words of the system turn,
  prompt and prefill; ort-bench voids those of the whole formatted chat (template markup, a default system
  prompt): the same decision unless an alias consists only of such words.
- `model=` (`formatted`): the prompts are formatted with that model's chat template (or its plain format)
  exactly as `ort-bench evaluate` formats them; run lm_eval WITHOUT `--apply_chat_template`. Exact for
  every model with that tokenizer, and only for it.

lm-eval moves a context's trailing whitespace into the continuation ("assistant\\n" + "Paris" is scored as
"\\nParis"); ort-bench scores the option alone. Where a context ends with whitespace, its item gets a
whitespace document (one empty choice: log p of the whitespace alone), which the aggregation subtracts.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from ort_bench.board.export import _prepare_out, _write_card
from ort_bench.errors import OrtBenchError

PREFIX = "ort_bench"
DATA = "data"
UTILS = "utils.py"
TASK_VERSION = 1.0
FREE_SCORERS = ("answer_match",)  # free answers lm-eval generates and ort-bench's scorer decides
CHOICE_SCORERS = ("label_pair", "circular_choice", "choice_acc")  # options ranked by log-likelihood
METRICS = ("item_score", "target_score")
OWNED = ("README.md", UTILS, DATA, f"{PREFIX}_*.yaml")  # what an export writes (and --force replaces)

log = logging.getLogger(__name__)

UTILS_SOURCE = '''"""lm-evaluation-harness hooks of an ort-bench export (`ort-bench export lm-eval`): data loading and
scoring come from ort-bench itself (`ort_bench.board.export_lm_eval`), so ort-bench must be installed where
lm_eval runs. Data files are named relative to this folder, which lm-eval does not do for `data_files`."""

from pathlib import Path

from ort_bench.board import export_lm_eval as _ort

HERE = Path(__file__).resolve().parent


def load_data(**kwargs):
    return _ort.load_data(HERE, **kwargs)


process_free = _ort.process_free
process_choice = _ort.process_choice
agg_item_score = _ort.agg_item_score
agg_target_score = _ort.agg_target_score
'''


class _Function(str):
    """A YAML `!function` reference (lm-eval's tag for a callable in the task folder's utils.py)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Function, lambda d, v: d.represent_scalar("!function", str(v)))


def _dump_yaml(path: Path, data: dict[str, Any]) -> None:
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
    # PyYAML quotes a tagged scalar; lm-eval's own task files write `!function utils.name`
    path.write_text(re.sub(r"!function '([\w.]+)'", r"!function \1", text), encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# documents
# --------------------------------------------------------------------------------------------------

Formatter = Callable[[str, str | None, str | None], str]


def _cluster(p: Any) -> str:
    """What `metrics_v2.items_of` clusters an item by: its target, else its first fact, else itself."""
    return p.target if p.target is not None else (p.fact_ids[0] if p.fact_ids else p.item_key)


def _free_doc(p: Any, fmt: Formatter | None) -> dict[str, Any]:
    from ort_bench.benchmark import CURRENT
    from ort_bench.scoring.eval_config import EvalConfig

    doc = _common(p, "probe", fmt, p.prompt)
    shown = [p.system, p.prompt, p.prefill]
    return {
        **doc,
        # what the scorer voids: the text the model was shown
        "context": doc["text"] if fmt else "\n".join(s for s in shown if s),
        "answers": list(p.answers), "answer": p.answers[0], "answer_end": CURRENT.end_of_answer(p.form),
        "max_new_tokens": EvalConfig().new_tokens(p.form),
    }


def _choice_doc(p: Any, part: str, prompt: str, fmt: Formatter | None, options: list[str],
                gold: int) -> dict[str, Any]:
    """One prompt of a choice item: its options as lm-eval scores them, joined to the context as
    ort-bench joins them (`join_continuation`); `ws` names the whitespace document of its context."""
    from ort_bench.models.prompting import join_continuation

    doc = _common(p, part, fmt, prompt)
    # the text the options follow; without `fmt` the assistant header is taken to end with whitespace
    end = doc["text"] if fmt else (p.prefill or "\n")
    ws = f"{p.item_key}:ws:{_sha(doc['text'], doc['system'], doc['prefill'])}" if end[-1].isspace() else ""
    return {**doc, "options": options, "choices": [join_continuation(end, o) for o in options], "gold": gold,
            "ws": ws}


def _ws_doc(of: dict[str, Any]) -> dict[str, Any]:
    """The whitespace document of a choice document's context: its one choice is empty, so lm-eval scores
    the context's trailing whitespace alone, which it also scores in front of every option."""
    return {**of, "id": of["ws"], "part": "ws", "variant": "", "options": [], "choices": [""], "gold": 0, "ws": ""}


def _sha(*parts: str) -> str:
    import hashlib

    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:12]


def _common(p: Any, part: str, fmt: Formatter | None, prompt: str) -> dict[str, Any]:
    """The fields every document has: who it is (`part`: probe, neutral, ws), the probe's, and `text`, what
    lm-eval sends as the user turn (chat) or whole (formatted)."""
    return {
        "id": p.id if part == "probe" else f"{p.item_key}:{part}", "item": p.item_key, "part": part,
        "variant": p.variant or "", "size": p.item_size, "split": p.split, "form": p.form, "target": p.target,
        "cluster": _cluster(p), "fact_ids": list(p.fact_ids), "template_id": p.template_id, "lang": p.lang,
        "scorer": p.scorer, "prompt": prompt, "system": p.system or "", "prefill": p.prefill or "",
        "text": fmt(prompt, p.system, p.prefill) if fmt else prompt,
    }


def _docs(items: list[list[Any]], fmt: Formatter | None) -> list[dict[str, Any]]:
    """A task's documents, item by item (so lm_eval's own --limit cuts at most one item): a probe's, the
    neutral prompt's of a calibrated item, then one whitespace document per distinct context that
    needs one (after the documents that name it: lm-eval checks its first document's choices)."""
    from ort_bench.scorers import NEUTRAL_PROMPT, get_scorer

    docs = []
    for item in items:
        if item[0].choices is None:
            docs.extend(_free_doc(p, fmt) for p in item)
            continue
        own = [_choice_doc(p, "probe", p.prompt, fmt, list(p.choices), p.gold_index) for p in item]
        first = item[0]
        if get_scorer(first.scorer).decide == "calibrated_per_byte":  # one neutral prompt per item
            own.append(_choice_doc(first, "neutral", NEUTRAL_PROMPT, fmt, list(first.choices), 0))
        ws = {d["ws"]: _ws_doc(d) for d in own if d["ws"]}
        docs.extend(own + list(ws.values()))
    return docs


# --------------------------------------------------------------------------------------------------
# task files
# --------------------------------------------------------------------------------------------------

def _metric_list(free: bool) -> list[dict[str, Any]]:
    metrics = [{"metric": m, "aggregation": _Function(f"utils.agg_{m}"), "higher_is_better": True} for m in METRICS]
    if free:
        metrics.append({"metric": "content_recall", "aggregation": "mean", "higher_is_better": True})
    return metrics


def _task_config(name: str, data_file: str, free: bool, max_new_tokens: int | None, chat: bool,
                 meta: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": data_file}},
        "custom_dataset": _Function("utils.load_data"), "test_split": "test", "num_fewshot": 0,
        "output_type": "generate_until" if free else "multiple_choice", "doc_to_text": "text",
    }
    if chat:  # lm-eval's system message and assistant prefix, per document
        cfg.update({"description": "system", "gen_prefix": "prefill"})
    if free:
        cfg.update({"doc_to_target": "answer", "target_delimiter": "",
                    "generation_kwargs": {"until": [], "do_sample": False, "temperature": 0.0,
                                          "max_gen_toks": max_new_tokens},
                    "process_results": _Function("utils.process_free")})
    else:  # the choices carry their own joining space (as ort-bench joins them)
        cfg.update({"doc_to_choice": "choices", "doc_to_target": "gold", "target_delimiter": "",
                    "process_results": _Function("utils.process_choice")})
    cfg["metric_list"] = _metric_list(free)
    cfg["metadata"] = {"version": TASK_VERSION, "ort_bench": meta}
    return cfg


def _formatter(model: str) -> tuple[Formatter, dict[str, Any]]:
    """Format prompts as `ort-bench evaluate` does for `model` (its tokenizer's chat template)."""
    from ort_bench.models import load_tokenizer, resolve_model
    from ort_bench.models.prompting import format_prompt, has_chat_template
    from ort_bench.provenance import sha256_json

    resolved = resolve_model(model)
    tok = load_tokenizer(resolved)
    template = tok.chat_template if has_chat_template(tok) else None
    # what lm_eval's `hf` model loads: the directory, and a LoRA adapter on it (`peft=`)
    pretrained = f"{resolved.path}" + (f",peft={resolved.adapter}" if resolved.adapter else "")
    info = {"spec": model, "pretrained": pretrained, "fingerprint": resolved.fingerprint,
            "chat_template_sha256": sha256_json(template) if template else None}
    return (lambda prompt, system, prefill: format_prompt(tok, prompt, system, prefill)), info


def _form_order(form: str) -> int:
    from ort_bench.benchmark import CURRENT

    return CURRENT.forms.index(form) if form in CURRENT.forms else len(CURRENT.forms)


def _check_splits(splits: Iterable[str] | None) -> list[str]:
    from ort_bench.kb.facts import SPLITS

    chosen = list(splits) if splits else list(SPLITS)
    for s in chosen:
        if s not in SPLITS:
            raise OrtBenchError(f"unknown split {s!r} (choose from {', '.join(SPLITS)})")
    return [s for s in SPLITS if s in chosen]


def export_lm_eval(out: str | Path, tier: str | None = None, splits: Iterable[str] | None = None,
                   forms: list[str] | None = None, model: str | None = None, limit: int | None = None,
                   force: bool = False) -> dict[str, Any]:
    """`ort-bench export lm-eval`: the probes of `tier` (default: the version's first) in `splits` (default:
    all) and `forms` (default: all) as lm-evaluation-harness tasks in `out` (module docstring). `model`:
    format the prompts with that model's chat template (run lm_eval without --apply_chat_template); default:
    run it with --apply_chat_template. `limit`: the first N items of each form, in the order `ort-bench
    evaluate --tier` scores them (a smoke run). Returns the tasks, groups and the lm_eval call."""
    from ort_bench.benchmark import CURRENT
    from ort_bench.kb.tiers import get_tier
    from ort_bench.provenance import sha256_json, versions
    from ort_bench.scoring.selection import select_probes

    tier = tier or CURRENT.tiers[0]
    get_tier(tier)  # an unknown tier is refused before anything is written
    chosen = _check_splits(splits)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise OrtBenchError(f"limit must be at least 1 item per form (got {limit!r})")
    for f in forms or ():
        if f not in CURRENT.forms:
            raise OrtBenchError(f"unknown form {f!r} (known: {', '.join(sorted(CURRENT.forms))})")
    # the whole selection, then the forms: an item's place in its form must not depend on the other forms
    probes, hashes = select_probes(chosen, tier=tier)
    probes = [p for p in probes if not forms or p.form in forms]
    if not probes:
        raise OrtBenchError(f"no probes in tier {tier} for splits {', '.join(chosen)}"
                            + (f" and forms {', '.join(forms)}" if forms else ""))
    for p in probes:
        if p.scorer not in FREE_SCORERS + CHOICE_SCORERS:
            raise OrtBenchError(f"probe {p.id} ({p.template_id}): scorer {p.scorer!r} has no lm-eval task here")
    fmt, model_info = _formatter(model) if model is not None else (None, None)
    out = Path(out)
    _prepare_out(out, force, OWNED)
    mode = "formatted" if fmt else "chat"
    meta_base = {"benchmark_version": CURRENT.name, "tier": tier, "mode": mode, "limit": limit,
                 "ort_bench_version": versions(("ort-bench",)).get("ort-bench"), "model": model_info}
    tasks: dict[str, Any] = {}
    groups: dict[str, list[str]] = {}
    exported: list[str] = []
    for split in chosen:
        by_form: dict[str, dict[str, list[Any]]] = {}  # form -> item -> probes, in the order evaluate scores them
        for p in probes:
            if p.split == split:
                by_form.setdefault(p.form, {}).setdefault(p.item_key, []).append(p)
        for form in sorted(by_form, key=_form_order):
            items = list(by_form[form].values())[:limit]
            free = items[0][0].choices is None
            if any((p.choices is None) != free for it in items for p in it):
                raise OrtBenchError(f"form {form}: mixes free-answer and choice templates (one lm-eval task each)")
            exported += [p.id for it in items for p in it]
            name = f"{PREFIX}_{tier}_{split}_{form}"
            docs = _docs(items, fmt)
            rel = f"{DATA}/{split}/{form}.jsonl"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
            cfg = _task_config(name, rel, free, docs[0].get("max_new_tokens"), fmt is None,
                               {**meta_base, "split": split, "form": form})
            _dump_yaml(out / f"{name}.yaml", cfg)
            tasks[name] = {"split": split, "form": form, "output_type": cfg["output_type"], "items": len(items),
                           "probes": sum(map(len, items)), "docs": len(docs)}
            groups.setdefault(f"{PREFIX}_{tier}_{split}", []).append(name)
    for group, members in groups.items():
        _dump_yaml(out / f"{group}.yaml", {
            "group": group, "task": members,
            "aggregate_metric_list": [{"metric": m, "weight_by_size": False} for m in METRICS],
            "metadata": {"version": TASK_VERSION}})
    (out / UTILS).write_text(UTILS_SOURCE, encoding="utf-8")
    command = lm_eval_command(out, list(groups), chat=fmt is None,
                              model=model_info["pretrained"] if model_info else "MODEL")
    # the tier's hashes (its selection in these splits, as evaluate reports them) and the probes exported, in
    # that order (the same hash when nothing was left out)
    kept = set(exported)
    hashes = {**hashes, "exported_probes_sha256": sha256_json([p.id for p in probes if p.id in kept])}
    _write_readme(out, tier, mode, model_info, meta_base, hashes, tasks, groups, command)
    return {"out": str(out), "kind": "lm-eval tasks", "benchmark_version": CURRENT.name, "tier": tier, "mode": mode,
            "model": model_info, "limit": limit, "groups": groups, "tasks": tasks, "lm_eval": command}


def lm_eval_command(out: Path, groups: list[str], chat: bool, model: str = "MODEL") -> str:
    """The lm_eval call that gives ort-bench's prompts (greedy, float32 as ort-bench's hf backend on CPU)."""
    return (f"lm_eval --model hf --model_args pretrained={model},dtype=float32 --include_path {out} "
            f"--tasks {','.join(groups)}" + (" --apply_chat_template" if chat else "") + " --log_samples "
            "--output_path OUT_DIR")


def _write_readme(out: Path, tier: str, mode: str, model_info: dict[str, Any] | None, meta: dict[str, Any],
                  hashes: dict[str, str], tasks: dict[str, Any], groups: dict[str, list[str]], command: str) -> None:
    rows = "\n".join(f"| `{n}` | {t['split']} | {t['form']} | {t['output_type']} | {t['items']} | {t['docs']} |"
                     for n, t in tasks.items())
    if mode == "chat":
        prompt_rule = (
            "Run with `--apply_chat_template`: documents hold the probe's user turn (`text`), system turn (the "
            "task's `description`: lm-eval's system message) and prefill (`gen_prefix`: the start of the reply), "
            "and lm-eval's chat formatting then gives the string ort-bench sends for chat templates that take a "
            "system turn and end the assistant header with whitespace (ChatML, Llama-3, Zephyr). A template that "
            "refuses a system turn (Gemma's) loses it in lm-eval (ort-bench folds it into the user turn); a model with "
            "no chat template, or another header, needs an export formatted for it (`ort-bench export lm-eval "
            "--model M`). The free-answer scorer voids the words of the system turn, prompt and prefill; ort-bench "
            "voids those of the whole formatted chat (template markup, a default system prompt): the same "
            "decision unless an alias is made only of such words.")
    else:
        prompt_rule = (
            f"Prompts are formatted for `{model_info['spec'] if model_info else '?'}` (its chat template, "
            "`ort_bench.models.prompting.format_prompt`), exactly as `ort-bench evaluate` sends them: run "
            "WITHOUT `--apply_chat_template` and only on models with that tokenizer and chat template "
            f"(sha256 `{(model_info or {}).get('chat_template_sha256')}`).")
    meta_card = {"ort_bench": {**meta, "hashes": hashes, "groups": groups}}
    body = (
        f"# ort-bench forms as lm-evaluation-harness tasks (benchmark {meta['benchmark_version']}, tier {tier})\n\n"
        "Written by `ort-bench export lm-eval`. A task per form, a group per split (forget: what unlearning must "
        "remove; neighbour and utility: what it must keep). Scoring imports ort-bench (`utils.py`): install it "
        "where lm_eval runs (`pip install ort-bench`, same version).\n\n"
        f"```bash\n{command}\n```\n\n"
        f"## Prompts\n\n{prompt_rule} Do not pass `--num_fewshot`, `--system_instruction` or `--gen_kwargs`: "
        "generation is greedy with the benchmark's length per form and stops at EOS.\n\n"
        "## Metrics\n\n"
        "- `item_score`: mean over items of the item's score (an item is right only if every probe of it is: both "
        "statements of a true/false pair, every rotation of an MCQ), as `ort_bench.scorers` decides it.\n"
        "- `target_score`: mean over targets (facts, for utility) of their items' mean: ORT's averaging.\n"
        "- `content_recall` (free answers): the graded recall of the answer's content words.\n\n"
        "Neither is above chance nor restricted to the items a reference model knows: the efficacy, worst form "
        "and ORT score need the reference, `ort-bench evaluate --reference`. lm_eval's own `--limit` counts "
        "documents (an MCQ item is five to seven: its rotations, a neutral prompt, whitespace documents); an item "
        "cut short is left out of the scores. Use "
        "`ort-bench export lm-eval --limit N` (items per form) instead. lm_eval warns, once per task, that "
        "custom kwargs can be passed to `--metadata`: that is the data-loading hook, and there is nothing to "
        "pass.\n\n"
        f"## Tasks\n\n| task | split | form | output type | items | documents |\n|---|---|---|---|---|---|\n{rows}\n")
    _write_card(out, meta_card, body)


# --------------------------------------------------------------------------------------------------
# hooks, called by lm_eval through the exported utils.py
# --------------------------------------------------------------------------------------------------

def load_data(folder: Path, data_files: dict[str, str] | None = None, ort_bench: dict[str, Any] | None = None,
              **_: Any) -> Any:
    """The task's `dataset_kwargs.data_files`, relative to the export folder, loaded with `datasets`'
    json builder (lm-eval resolves `data_files` against the working directory, not the task file)."""
    import datasets

    from ort_bench.benchmark import CURRENT

    exported = (ort_bench or {}).get("benchmark_version")
    if exported is not None and exported != CURRENT.name:
        raise OrtBenchError(f"{folder}: exported for benchmark {exported}, and this ort-bench scores {CURRENT.name}: "
                            "export the tasks again")
    if not data_files:
        raise OrtBenchError(f"{folder}: a task without dataset_kwargs.data_files")
    files = {split: str(Path(folder) / rel) for split, rel in data_files.items()}
    for path in files.values():
        if not Path(path).is_file():
            raise OrtBenchError(f"{path}: no such data file (was the export folder moved in part?)")
    return datasets.load_dataset("json", data_files=files)


def _payload(doc: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": doc["id"], "item": doc["item"], "part": doc["part"], "size": doc["size"],
            "cluster": doc["cluster"], "scorer": doc["scorer"], **extra}


def process_free(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """A free answer as `score_probes` scores it: the stripped greedy answer, `answer_match` against
    everything the model was shown (the item's decision waits for the aggregation, as for choices)."""
    from ort_bench.answers import match_scores

    output = results[0].strip()
    scores = match_scores(output, doc["answers"], doc["lang"], doc["context"], doc["answer_end"])
    payload = _payload(doc, decision=scores["answer_match"], output=output)
    return {"item_score": payload, "target_score": payload, "content_recall": scores["content_recall"]}


def process_choice(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, Any]:
    """One prompt's option log-likelihoods (a whitespace document's: its context's trailing whitespace,
    which lm-eval scores in front of every option and the aggregation subtracts)."""
    lls = [float(ll) for ll, _greedy in results]
    extra = {"ll": lls[0]} if doc["part"] == "ws" else {"lls": lls, "options": doc["options"], "gold": doc["gold"],
                                                         "ws": doc["ws"]}
    payload = _payload(doc, **extra)
    return {"item_score": payload, "target_score": payload}


def _decide(probe: dict[str, Any], neutral: dict[str, Any] | None, ws: dict[str, float]) -> float | None:
    """A probe's decision (None: a document it needs is missing)."""
    from ort_bench.scorers import choice_scores, decide_choice, get_scorer

    if "decision" in probe:
        return float(probe["decision"])
    lls = _less_ws(probe, ws)
    scorer = get_scorer(probe["scorer"])
    neutral_lls = None
    if scorer.decide == "calibrated_per_byte":
        neutral_all = _less_ws(neutral, ws) if neutral is not None else None
        if neutral_all is None:
            return None
        by_option = dict(zip(neutral["options"], neutral_all, strict=True))
        neutral_lls = [by_option[o] for o in probe["options"]]
    if lls is None:
        return None
    return decide_choice(choice_scores(scorer, lls, probe["options"], neutral_lls), probe["gold"])


def _less_ws(doc: dict[str, Any], ws: dict[str, float]) -> list[float] | None:
    """A choice document's option log-likelihoods as ort-bench computes them: less its context's trailing
    whitespace (None: its whitespace document is missing)."""
    if not doc["ws"]:
        return list(doc["lls"])
    if doc["ws"] not in ws:
        return None
    return [ll - ws[doc["ws"]] for ll in doc["lls"]]


def choice_logprobs(payloads: Iterable[dict[str, Any]]) -> dict[str, list[float]]:
    """Per choice document (probe id, or `item:neutral`): the options' log-likelihoods as ort-bench's
    records keep them (`choice_logprobs`, `choice_logprobs_neutral`)."""
    payloads = list(payloads)
    ws = {p["id"]: p["ll"] for p in payloads if p["part"] == "ws"}
    out = {}
    for p in payloads:
        if p["part"] != "ws" and "lls" in p and (lls := _less_ws(p, ws)) is not None:
            out[p["id"]] = lls
    return out


def item_results(payloads: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per item: its cluster, each probe's decision and the item's score (the minimum: right only if
    every probe is), as `metrics_v2.items_of` makes them. An item with a document missing (lm_eval's
    --limit cut it) is left out, with a warning."""
    parts: dict[str, list[dict[str, Any]]] = {}
    for p in payloads:
        parts.setdefault(p["item"], []).append(p)
    out, cut = {}, 0
    for item, group in parts.items():
        probes = [p for p in group if p["part"] == "probe"]
        neutral = next((p for p in group if p["part"] == "neutral"), None)
        ws = {p["id"]: p["ll"] for p in group if p["part"] == "ws"}
        decisions = {p["id"]: _decide(p, neutral, ws) for p in probes}
        if not probes or len(probes) != probes[0]["size"] or None in decisions.values():
            cut += 1
            continue
        out[item] = {"cluster": probes[0]["cluster"], "probes": decisions, "score": min(decisions.values())}
    if cut:
        log.warning("ort-bench: %d item(s) with documents missing are left out (lm_eval --limit?)", cut)
    return out


def agg_item_score(payloads: list[dict[str, Any]]) -> float:
    """Mean over items of the item scores (ort-bench's item-pooled score)."""
    scores = [r["score"] for r in item_results(payloads).values()]
    return sum(scores) / len(scores) if scores else math.nan


def agg_target_score(payloads: list[dict[str, Any]]) -> float:
    """Mean over clusters (targets; facts for utility) of their items' mean score: ORT's averaging."""
    by_cluster: dict[str, list[float]] = {}
    for r in item_results(payloads).values():
        by_cluster.setdefault(r["cluster"], []).append(r["score"])
    means = [sum(v) / len(v) for v in by_cluster.values()]
    return sum(means) / len(means) if means else math.nan
