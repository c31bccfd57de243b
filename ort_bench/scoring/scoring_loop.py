"""Scoring proper: probes through a backend into per-probe records, and a model's records kept
durable and resumable.

`score_probes` is the one place a probe becomes a record's scores (evaluate and `ort-bench audit`
both call it). `score_model` runs it chunk by chunk over what a records file does not hold yet,
appending each chunk as it finishes, and copies the answers other runs already hold (`--reuse`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ort_bench.errors import OrtBenchError
from ort_bench.kb.probes import Probe
from ort_bench.models import checkpoint
from ort_bench.models.served import ServedModel
from ort_bench.scoring.records import Record, RecordWriter, check_seal, load_records, record_key
from ort_bench.scoring.selection import probe_hash

if TYPE_CHECKING:
    from ort_bench.scoring.backends import Backend
    from ort_bench.scoring.eval_config import EvalConfig


def score_probes(backend: Backend, tokenizer: Any, probes: list[Probe], config: EvalConfig) -> list[dict[str, Any]]:
    """Generate where the scorer needs free text and score likelihoods for every probe, in one
    `backend.score` call: one request per distinct prompt (its answer, if a probe needs one, and every
    continuation scored after it: answers, options, the options after the neutral prompt), so that
    identical (context, continuation) requests, such as the rotations of a ranked MCQ, are computed once
    and a prompt's answer and likelihoods share its prefill."""
    from ort_bench.answers import match_scores
    from ort_bench.benchmark import CURRENT
    from ort_bench.models.prompting import format_prompt, join_continuation
    from ort_bench.scorers import NEUTRAL_PROMPT, choice_scores, decide_choice, get_scorer
    from ort_bench.scoring import metrics
    from ort_bench.scoring.backends import GenerationParams, ScoreRequest

    contexts = [format_prompt(tokenizer, p.prompt, p.system, p.prefill) for p in probes]
    scorers = [get_scorer(p.scorer) for p in probes]
    lengths = [config.new_tokens(p.form) for p in probes]
    # per request: its context, its generation params, its continuations (each once)
    requests: dict[tuple[str, int | None], dict[str, int]] = {}

    def ask(ctx: str, n_new: int | None, conts: list[str]) -> tuple[tuple[str, int | None], list[int]]:
        key = (ctx, n_new)
        own = requests.setdefault(key, {})
        return key, [own.setdefault(join_continuation(ctx, c), len(own)) for c in conts]

    asked: list[tuple[tuple[str, int | None], list[int]]] = []
    neutral_asked: dict[int, tuple[tuple[str, int | None], list[int]]] = {}
    likelihoods = backend.no_likelihoods is None
    if not likelihoods and any(p.choices is not None for p in probes):
        raise OrtBenchError(f"{backend.no_likelihoods}: a choice probe cannot be scored without log-probabilities")
    for i, (p, ctx, scorer) in enumerate(zip(probes, contexts, scorers, strict=True)):
        conts = p.choices if p.choices is not None else p.answers if likelihoods else []
        asked.append(ask(ctx, lengths[i] if scorer.needs_generation else None, conts))
        if scorer.decide == "calibrated_per_byte":
            neutral_asked[i] = ask(format_prompt(tokenizer, NEUTRAL_PROMPT, p.system, p.prefill), None, conts)
    keys = list(requests)
    results = dict(zip(keys, backend.score([
        ScoreRequest(ctx, tuple(requests[(ctx, n)]), GenerationParams(max_new_tokens=n, seed=config.seed)
                     if n is not None else None) for ctx, n in keys]), strict=True))

    def lls_of(where: tuple[tuple[str, int | None], list[int]]) -> list[Any]:
        key, spans = where
        return [results[key].loglikelihoods[k] for k in spans]

    records = []
    for i, (p, ctx, scorer) in enumerate(zip(probes, contexts, scorers, strict=True)):
        items = [(ll.logprob, ll.n_tokens) for ll in lls_of(asked[i])]
        answer = results[asked[i][0]]
        rec: dict[str, Any] = {"prompt_text": ctx, "output": answer.text or "", "rouge_l_recall": None,
                               "choice_acc": None}
        if p.choices is not None:
            gold = p.gold_index
            neutral = [ll.logprob for ll in lls_of(neutral_asked[i])] if i in neutral_asked else None
            scores = choice_scores(scorer, [lp for lp, _ in items], p.choices, neutral)
            rec["choice_acc"] = decide_choice(scores, gold)
            rec["prob"] = metrics.prob_from_logprobs([items[gold]])
            rec["choice_logprobs"] = [lp for lp, _ in items]
            if neutral is not None:
                rec["choice_logprobs_neutral"] = neutral
                rec["choice_scores"] = scores
            if answer.text is None:
                rec["output"] = p.choices[max(range(len(items)), key=lambda k: scores[k])]
        else:  # ORT's Prob: none without log-probabilities
            rec["prob"] = metrics.prob_from_logprobs(items) if likelihoods else None
        if answer.text is not None:
            rec["rouge_l_recall"] = metrics.rouge_l_recall(answer.text, p.answers)
            if scorer.decide == "match":
                rec.update(match_scores(answer.text, p.answers, p.lang, ctx, CURRENT.end_of_answer(p.form)))
                rec["max_new_tokens"] = lengths[i]
            if answer.new_tokens is not None:
                rec["new_tokens"] = answer.new_tokens
        # the probe's decision; the item's score (all its probes right) is made in metrics_v2.items_of
        rec["primary"] = rec["choice_acc"] if p.choices is not None else rec[p.scorer]
        records.append(rec)
    return records


def make_record(p: Probe, answer: dict[str, Any], *, key: str, role: str, model_fingerprint: str, backend: str,
                params_hash: str) -> Record:
    """The record of probe `p` answered (`answer`, from `score_probes`): who answered, the probe's
    fields repeated, the answer. Item fields only for probes that belong to an item."""
    return Record(
        key=key, role=role, model_fingerprint=model_fingerprint, backend=backend, params_hash=params_hash,
        probe_id=p.id, probe_sha256=probe_hash(p), split=p.split, target=p.target, form=p.form, lang=p.lang,
        template_id=p.template_id, fact_ids=list(p.fact_ids), scorer=p.scorer, answers=list(p.answers),
        **({"item_id": p.item_id, "variant": p.variant, "item_size": p.item_size} if p.item_id else {}),
        **answer,
    )


def _copy_reused(reuse: list[Path], keys: list[str], done: dict[str, dict[str, Any]], records_path: Path,
                 role: str) -> None:
    """Copy the records other runs hold for these keys into this run (so that it stands alone)."""
    wanted = set(keys) - set(done)
    found: list[dict[str, Any]] = []
    for path in reuse:
        path = Path(path)
        path = path / "records.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise OrtBenchError(f"{path}: no records to reuse there")
        for key, rec in load_records(path, repair=False, check=False).items():
            if key in wanted and check_seal(rec):
                rec = {k: v for k, v in rec.items() if k != "record_sha256"}
                found.append({**rec, "role": role})
                wanted.discard(key)
    if found:
        with RecordWriter(records_path) as writer:
            writer.write(found)
        done.update((r["key"], r) for r in found)


def score_model(
    spec: str,
    probes: list[Probe],
    records_path: Path,
    config: EvalConfig,
    role: str = "model",
    progress: bool = True,
    reuse: list[Path] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score `probes` with one model, resuming from `records_path`; return its records (in probe
    order) and a description of the model and backend. Records files in `reuse` (other runs) lend
    their answers too: a key holds the model fingerprint, so only this very model's answers match."""
    from ort_bench.scoring.backends import checked_backend

    settings = config.backend_settings()
    backend_cls = checked_backend(config.backend, config, **settings)  # fails before any model loads
    model = backend_cls.resolve(spec, config, **settings)  # a local model, or one an endpoint serves
    params_hash = config.params_hash()
    keys = [record_key(model.fingerprint, config.backend, params_hash, probe_hash(p)) for p in probes]
    done = load_records(records_path)
    _copy_reused(reuse or [], keys, done, records_path, role)
    todo = [i for i, k in enumerate(keys) if k not in done]
    info: dict[str, Any] = {"spec": spec, "kind": model.kind, "fingerprint": model.fingerprint,
                            "role": role, "reused_records": len(probes) - len(todo), "new_records": len(todo)}
    info.update(checkpoint.origin(model.path))
    if isinstance(model, ServedModel):  # behind an endpoint: what the server reported; the fingerprint is weaker
        info["served"] = model.served
    if todo:
        t0 = time.perf_counter()
        backend = backend_cls(model, config, **settings)
        try:
            from ort_bench.models import load_tokenizer

            tokenizer = backend.tokenizer or load_tokenizer(model)
            info["load_seconds"] = round(time.perf_counter() - t0, 2)
            info["backend"] = backend.settings()
            if backend.no_likelihoods is not None:  # free answers only: the choice probes stay unscored, and say so
                unscored = [i for i in todo if probes[i].choices is not None]
                todo = [i for i in todo if probes[i].choices is None]
                info["new_records"] = len(todo)
                info["unscored"] = {"forms": sorted({probes[i].form for i in unscored}), "probes": len(unscored),
                                    "why": backend.no_likelihoods}
            skipped = info.get("unscored", {}).get("probes", 0)
            bar = tqdm(total=len(probes) - skipped, initial=len(probes) - skipped - len(todo), desc=f"{role}: {spec}",
                       unit="probe", disable=not progress)
            t1 = time.perf_counter()
            with RecordWriter(records_path) as writer:
                for start in range(0, len(todo), config.chunk_size):
                    idx = todo[start:start + config.chunk_size]
                    chunk = [probes[i] for i in idx]
                    scored = score_probes(backend, tokenizer, chunk, config)
                    new = [make_record(p, answer, key=keys[i], role=role, model_fingerprint=model.fingerprint,
                                       backend=config.backend, params_hash=params_hash).to_dict()
                           for i, p, answer in zip(idx, chunk, scored, strict=True)]
                    writer.write(new)
                    done.update((r["key"], r) for r in new)
                    bar.update(len(chunk))
            bar.close()
            info["score_seconds"] = round(time.perf_counter() - t1, 2)
        finally:  # also on an error or Ctrl-C: vLLM holds GPU memory, an endpoint's pool holds threads
            backend.close()
    return [done[k] for k in keys if k in done], info
