"""Score a checkpoint (and optionally its reference) on probes: the job users come for.

Per probe the record keeps the prompt as the model saw it, the output and every score; records are
appended as each chunk finishes, so a killed run resumes where it stopped. Aggregates are always
recomputed from the records (`ort_bench.scoring.metrics`), never stored alone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import SPLITS, load_kb
from ort_bench.kb.probes import Probe, read_probes, spread_items
from ort_bench.kb.render import render_probes
from ort_bench.kb.templates import load_templates, templates_hash
from ort_bench.provenance import SCORING_PACKAGES, sha256_json, versions
from ort_bench.scoring import checkpoint
from ort_bench.scoring.load_options import LoadOptions
from ort_bench.scoring.records import (
    RecordWriter,
    RunLock,
    check_seal,
    load_records,
    put_in_order,
    record_key,
)


@dataclass(frozen=True)
class EvalConfig(LoadOptions):
    """Everything that shapes the numbers (and the run): how models load (`LoadOptions`), then the
    engine and decoding. Fields in `SCORING_FIELDS` key the records."""

    backend: str = "hf"
    max_new_tokens: int = 32
    seed: int = 0
    batch_size: int = 16
    tensor_parallel_size: int = 1
    chunk_size: int = 128  # probes per durable write

    ENGINE_DEFAULTS = {"batch_size": 16, "tensor_parallel_size": 1}  # passed to a backend only when changed

    SCORING_FIELDS = ("backend", "max_new_tokens", "seed", "dtype")

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size", "tensor_parallel_size", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise OrtBenchError(f"{name} must be a whole number of at least 1 (got {value!r})")

    def engine_settings(self) -> dict[str, Any]:
        """The engine settings that differ from their defaults (a backend refuses one it lacks)."""
        return {k: getattr(self, k) for k, d in self.ENGINE_DEFAULTS.items() if getattr(self, k) != d}

    def params_hash(self, benchmark: str | None = None) -> str:
        """Hash of what shapes a record's numbers: the scoring fields, the ROUGE variant and (from v2
        on) the benchmark version, `benchmark` or the current one."""
        from ort_bench.benchmark import CURRENT
        from ort_bench.scoring.metrics import ROUGE_VARIANT

        benchmark = benchmark or CURRENT.name
        extra = {"benchmark": benchmark} if benchmark != "v1" else {}  # v1 keys stay as they were
        return sha256_json({**{f: getattr(self, f) for f in self.SCORING_FIELDS}, "rouge": ROUGE_VARIANT,
                            **extra})[:16]


def probe_hash(p: Probe) -> str:
    return sha256_json(p.model_dump(mode="json"))[:16]


def select_probes(
    splits: tuple[str, ...] | list[str] = SPLITS,
    forms: list[str] | None = None,
    langs: list[str] | None = None,
    targets: list[str] | None = None,
    limit: int | dict[str, int] | None = None,
    probes_file: str | Path | None = None,
) -> tuple[list[Probe], dict[str, str]]:
    """The probes to score (rendered from the shipped KB, or read from a file), and their hashes.
    `limit` counts items (a true/false pair, the rotations of an MCQ: never cut) per split (one number
    for all, or a number per split), spread over forms and targets. Neighbour and utility probes come
    from the retain-eval facts when the benchmark version holds a retain split (shipped KB only: a
    probes file is scored as given)."""
    from ort_bench.benchmark import CURRENT

    if probes_file is not None:
        all_probes = read_probes(probes_file)
        hashes = {"probes_file": str(probes_file)}
        by_split = {s: [p for p in all_probes if p.split == s
                        and (not forms or p.form in forms) and (not langs or p.lang in langs)
                        and (not targets or p.target in targets or p.split == "utility")] for s in splits}
    else:
        kb, templates = load_kb(), load_templates()
        hashes = {"data_sha256": kb.content_hash, "templates_sha256": templates_hash(templates)}
        by_split = {}
        for s in splits:
            probes, _ = render_probes(kb, templates, s, forms, langs, targets if s != "utility" else None,
                                      retain="eval" if CURRENT.retain_split else None)
            by_split[s] = probes
    for n in (limit.values() if isinstance(limit, dict) else [limit]):
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise OrtBenchError(f"limit must be at least 1 item per split (got {n!r}); leave it out for every probe")
    selected: list[Probe] = []
    for s in splits:
        items = spread_items(by_split[s])
        n = limit.get(s) if isinstance(limit, dict) else limit
        selected.extend(p for item in (items[:n] if n else items) for p in item)
    hashes["probes_sha256"] = sha256_json([p.id for p in selected])
    return selected, hashes


def _score_chunk(backend: Any, tokenizer: Any, probes: list[Probe], config: EvalConfig) -> list[dict[str, Any]]:
    """Generate where the scorer needs free text; score likelihoods for every probe (identical
    (context, continuation) requests, such as the rotations of a ranked MCQ, are computed once)."""
    from ort_bench.scorers import NEUTRAL_PROMPT, choice_scores, decide_choice, get_scorer
    from ort_bench.scoring import metrics
    from ort_bench.scoring.backends import GenerationParams
    from ort_bench.scoring.prompting import format_prompt, join_continuation

    contexts = [format_prompt(tokenizer, p.prompt, p.system, p.prefill) for p in probes]
    scorers = [get_scorer(p.scorer) for p in probes]
    gen_idx = [i for i, sc in enumerate(scorers) if sc.needs_generation]
    params = GenerationParams(max_new_tokens=config.max_new_tokens, seed=config.seed)
    generated = backend.generate([contexts[i] for i in gen_idx], params) if gen_idx else []
    outputs: dict[int, str] = dict(zip(gen_idx, generated, strict=True))

    unique: dict[tuple[str, str], int] = {}
    spans: list[list[int]] = []
    neutral_spans: dict[int, list[int]] = {}
    for i, (p, ctx, scorer) in enumerate(zip(probes, contexts, scorers, strict=True)):
        conts = p.choices if p.choices is not None else p.answers
        spans.append([unique.setdefault((ctx, join_continuation(ctx, c)), len(unique)) for c in conts])
        if scorer.decide == "calibrated_per_byte":
            neutral = format_prompt(tokenizer, NEUTRAL_PROMPT, p.system, p.prefill)
            neutral_spans[i] = [unique.setdefault((neutral, join_continuation(neutral, c)), len(unique))
                                for c in conts]
    lls = backend.loglikelihood(list(unique))

    records = []
    for i, (p, ctx, scorer) in enumerate(zip(probes, contexts, scorers, strict=True)):
        items = [(lls[k].logprob, lls[k].n_tokens) for k in spans[i]]
        rec: dict[str, Any] = {"prompt_text": ctx, "output": outputs.get(i, ""), "rouge_l_recall": None,
                               "choice_acc": None}
        if p.choices is not None:
            gold = p.gold_index
            neutral = [lls[k].logprob for k in neutral_spans[i]] if i in neutral_spans else None
            scores = choice_scores(scorer, [lp for lp, _ in items], p.choices, neutral)
            rec["choice_acc"] = decide_choice(scores, gold)
            rec["prob"] = metrics.prob_from_logprobs([items[gold]])
            rec["choice_logprobs"] = [lp for lp, _ in items]
            if neutral is not None:
                rec["choice_logprobs_neutral"] = neutral
                rec["choice_scores"] = scores
            if i not in outputs:
                rec["output"] = p.choices[max(range(len(items)), key=lambda k: scores[k])]
        else:
            rec["prob"] = metrics.prob_from_logprobs(items)
        if i in outputs:
            rec["rouge_l_recall"] = metrics.rouge_l_recall(outputs[i], p.answers)
        # the probe's decision; the item's score (all its probes right) is made in metrics_v2.items_of
        rec["primary"] = rec["choice_acc"] if p.choices is not None else rec[p.scorer]
        records.append(rec)
    return records


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
    from ort_bench.scoring.models import resolve_model

    settings = {"seed": config.seed, **config.engine_settings()}
    backend_cls = checked_backend(config.backend, config, **settings)  # fails before any model loads
    model = resolve_model(spec, trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle)
    params_hash = config.params_hash()
    keys = [record_key(model.fingerprint, config.backend, params_hash, probe_hash(p)) for p in probes]
    done = load_records(records_path)
    _copy_reused(reuse or [], keys, done, records_path, role)
    todo = [i for i, k in enumerate(keys) if k not in done]
    info: dict[str, Any] = {"spec": spec, "kind": model.kind, "fingerprint": model.fingerprint,
                            "role": role, "reused_records": len(probes) - len(todo), "new_records": len(todo)}
    info.update(checkpoint.origin(model.path))
    if todo:
        t0 = time.perf_counter()
        backend = backend_cls(model, config, **settings)
        from ort_bench.scoring.models import load_tokenizer

        tokenizer = getattr(backend, "tokenizer", None) or load_tokenizer(model)
        info["load_seconds"] = round(time.perf_counter() - t0, 2)
        info["backend"] = backend.settings()
        bar = tqdm(total=len(probes), initial=len(probes) - len(todo), desc=f"{role}: {spec}", unit="probe",
                   disable=not progress)
        t1 = time.perf_counter()
        with RecordWriter(records_path) as writer:
            for start in range(0, len(todo), config.chunk_size):
                idx = todo[start:start + config.chunk_size]
                chunk = [probes[i] for i in idx]
                scored = _score_chunk(backend, tokenizer, chunk, config)
                new = []
                for i, p, rec in zip(idx, chunk, scored, strict=True):
                    new.append({
                        "key": keys[i], "role": role, "model_fingerprint": model.fingerprint,
                        "backend": config.backend, "params_hash": params_hash, "probe_id": p.id,
                        "probe_sha256": probe_hash(p), "split": p.split, "target": p.target, "form": p.form,
                        "lang": p.lang, "template_id": p.template_id, "fact_ids": list(p.fact_ids),
                        "scorer": p.scorer, "answers": list(p.answers),
                        **({"item_id": p.item_id, "variant": p.variant, "item_size": p.item_size}
                           if p.item_id else {}),
                        **rec,
                    })
                writer.write(new)
                done.update((r["key"], r) for r in new)
                bar.update(len(chunk))
        bar.close()
        info["score_seconds"] = round(time.perf_counter() - t1, 2)
        if hasattr(backend, "close"):  # vLLM holds GPU memory the reference's engine will need
            backend.close()
        del backend
    return [done[k] for k in keys], info


def evaluate(
    model: str,
    out: str | Path,
    reference: str | None = None,
    forms: list[str] | None = None,
    langs: list[str] | None = None,
    targets: list[str] | None = None,
    splits: tuple[str, ...] | list[str] = SPLITS,
    limit: int | dict[str, int] | None = None,
    probes_file: str | Path | None = None,
    train_form: str | None = None,
    config: EvalConfig | None = None,
    progress: bool = True,
    reuse: list[str | Path] | None = None,
) -> dict[str, Any]:
    """Score `model` (and `reference`) and write `out/records.jsonl` and `out/results.json`.
    `reuse`: earlier run folders whose records of the same models may be copied instead of rescored
    (for example the reference's, shared by every unlearned model of an experiment)."""
    from ort_bench.benchmark import CURRENT
    from ort_bench.scoring.results import results_from_records, write_results

    config = config or EvalConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OrtBenchError(f"{out}: exists and is not a directory")
    probes, hashes = select_probes(splits, forms, langs, targets, limit, probes_file)
    if not probes:
        raise OrtBenchError("no probes selected (check --forms, --langs, --targets)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OrtBenchError(f"{out}: cannot create the run folder ({exc.strerror})") from None
    with RunLock(out):  # one writer per run folder
        records_path = out / "records.jsonl"
        model_records, model_info = score_model(model, probes, records_path, config, "model", progress,
                                                  reuse=[Path(r) for r in reuse or []])
        ref_records, ref_info = (None, None)
        if reference is not None:
            ref_records, ref_info = score_model(reference, probes, records_path, config, "reference", progress,
                                                  reuse=[Path(r) for r in reuse or []])
        put_in_order(records_path, [r["key"] for r in model_records + (ref_records or [])])
        results = results_from_records(
            CURRENT, model_records, ref_records,
            model=model_info, reference=ref_info, config=asdict(config), params_hash=config.params_hash(),
            hashes=hashes, versions=versions(SCORING_PACKAGES), n_probes=len(probes),
            selection={"splits": list(splits), "forms": forms, "langs": langs, "targets": targets, "limit": limit,
                       "train_form": train_form},
        )
        write_results(out / "results.json", results)
    return results
