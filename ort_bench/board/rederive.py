"""What a submission's records must agree with, beyond their own hashes (used by `ort_bench.board.submit`).

A record's seal only proves that nobody edited it without re-sealing it; a forger can re-seal. So a
run of an open benchmark version is also checked against what this ort-bench can recompute itself:

- **the probes**: the selection recorded in `results.json` (splits, forms, langs, targets, limit) is
  rendered again from this repository's data and templates; every record must be about one of those
  probes (same content hash) and repeat its fields (split, form, target, template, facts, answers,
  scorer, item), and no probe may be missing or extra;
- **the scores the stored output determines**: ROUGE-L recall from the stored answer text, and each
  choice decision from the stored per-option log-likelihoods (with the probe's own options and gold);
- **the parameters**: `params_hash` must be the hash of the scoring parameters in `config`;
- **two models**: model and reference records that are the same answers under two fingerprints
  (the reference's answers presented as the unlearned model's) are refused, unless the entry is the
  reference scored against itself.

What it cannot prove is that the stored outputs came from the named checkpoint: that takes re-running
the model on a sample of the items.
"""

from __future__ import annotations

import math
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.models.checkpoint import ATTACK_CARD, UNLEARN_CARD
from ort_bench.scoring.per_target import ONE_PER_TARGET
from ort_bench.scoring.results import Results

# record field -> how to read the same thing off the probe
PROBE_FIELDS = ("split", "target", "form", "lang", "template_id", "fact_ids", "scorer", "answers", "item_id",
                "item_size", "variant")

# numbers recomputed from records must agree with the submitted ones within this (submit uses it too)
TOLERANCE = 1e-9


def _close(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=TOLERANCE)
    except (TypeError, ValueError):
        return False


def check_params(res: Any) -> None:
    """`params_hash` must be what the recorded scoring parameters give."""
    from ort_bench.scoring.eval_config import EvalConfig

    cfg = res.config
    try:
        known = {f: cfg[f] for f in EvalConfig.SCORING_FIELDS}
        expected = EvalConfig(**known, tier=cfg.get("tier")).params_hash(res.benchmark_version)
    except (KeyError, TypeError) as exc:
        raise OrtBenchError(f"results.json: config lacks the scoring parameter {exc}") from None
    if expected != res.params_hash:
        raise OrtBenchError(f"results.json: params_hash {res.params_hash!r} is not the hash of its config "
                            f"({', '.join(f'{k}={v!r}' for k, v in known.items())} give {expected!r})")


def rebuild_probes(res: Any) -> list[Any]:
    """The probes this ort-bench renders for the run's recorded selection, in run order."""
    from ort_bench.scoring.selection import select_probes

    sel = res.selection
    if "probes_file" in res.hashes:
        raise OrtBenchError("results.json: the run scored a probes file, not the benchmark's own probes: a "
                            "leaderboard entry is scored on the probes ort-bench renders")
    limit = sel.get("limit")
    probes, hashes = select_probes(sel.get("splits") or ("forget", "neighbour", "utility"), sel.get("forms"),
                                   sel.get("langs"), sel.get("targets"), limit, tier=sel.get("tier"))
    for key in ("data_sha256", "templates_sha256"):
        if res.hashes.get(key) != hashes[key]:
            raise OrtBenchError(f"results.json: hashes.{key} is not this ort-bench's ({str(res.hashes.get(key))[:12]} "
                                f"vs {hashes[key][:12]}): score the model with this version's data and templates")
    return probes


def check_against_probes(probes: list[Any], records: list[dict[str, Any]], role: str) -> None:
    """Every record is about one rebuilt probe, repeats its fields, and every probe has a record."""
    from ort_bench.scoring.selection import probe_hash

    by_id = {p.id: p for p in probes}
    seen: set[str] = set()
    for i, rec in enumerate(records, start=1):
        where = f"{role} record {i} (probe {rec.get('probe_id')!r})"
        p = by_id.get(rec.get("probe_id"))
        if p is None:
            raise OrtBenchError(f"{where}: not a probe of the recorded selection (extra or invented probe)")
        if rec.get("probe_sha256") != probe_hash(p):
            raise OrtBenchError(f"{where}: probe_sha256 does not match the probe ort-bench renders (altered probe)")
        for field in PROBE_FIELDS:
            want = getattr(p, field)
            want = list(want) if isinstance(want, tuple) else want
            got = rec.get(field)
            if field in ("item_id", "item_size", "variant") and p.item_id is None and got is None:
                continue
            if got != want:
                raise OrtBenchError(f"{where}: {field} is {got!r} but the probe's is {want!r}")
        err = rederive(rec, p)
        if err:
            raise OrtBenchError(f"{where}: {err}")
        seen.add(p.id)
    missing = [p.id for p in probes if p.id not in seen]
    if missing:
        raise OrtBenchError(f"{role} records: {len(missing)} probes of the recorded selection have no record "
                            f"(first: {missing[0]!r}): deleted records?")


def rederive(rec: dict[str, Any], probe: Any) -> str | None:
    """The scores the stored output and likelihoods determine, recomputed under the current (the only
    open) benchmark version; a message on a mismatch."""
    from ort_bench.benchmark import CURRENT
    from ort_bench.scorers import choice_scores, decide_choice, get_scorer
    from ort_bench.scoring import metrics

    scorer = get_scorer(probe.scorer)
    if scorer.needs_generation:
        output = rec.get("output")
        if not isinstance(output, str):
            return "no output text to re-score"
        rouge = metrics.rouge_l_recall(output, probe.answers)
        if not _close(rec.get("rouge_l_recall"), rouge):
            return f"rouge_l_recall is {rec.get('rouge_l_recall')!r} but its output scores {rouge!r}"
        if scorer.decide == "match":
            from ort_bench.answers import match_scores

            if not isinstance(rec.get("prompt_text"), str):
                return "no prompt text to re-score its answer against"
            end = CURRENT.end_of_answer(probe.form)
            for key, value in match_scores(output, probe.answers, probe.lang, rec["prompt_text"], end).items():
                if not _close(rec.get(key), value):
                    return f"{key} is {rec.get(key)!r} but its output scores {value!r}"
    if probe.choices is not None:
        lps = rec.get("choice_logprobs")
        if not isinstance(lps, list) or len(lps) != len(probe.choices):
            return f"needs {len(probe.choices)} choice_logprobs to re-derive its decision"
        neutral = rec.get("choice_logprobs_neutral") if scorer.decide == "calibrated_per_byte" else None
        try:
            scores = choice_scores(scorer, [float(x) for x in lps], probe.choices,
                                   None if neutral is None else [float(x) for x in neutral])
        except (TypeError, ValueError) as exc:
            return f"cannot re-derive its choice ({exc})"
        decision = decide_choice(scores, probe.gold_index)
        if not _close(rec.get("choice_acc"), decision):
            return f"choice_acc is {rec.get('choice_acc')!r} but its log-likelihoods decide {decision!r}"
    primary = rec.get("choice_acc") if probe.choices is not None else rec.get(probe.scorer)
    if not _close(rec.get("primary"), primary):
        return f"primary is {rec.get('primary')!r} but its {probe.scorer} score is {primary!r}"
    return None


def check_two_models(res: Any, model: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    """The reference's answers under the model's fingerprint: every output and likelihood identical."""
    if res.model.fingerprint == res.reference.fingerprint:
        return
    ref = {r["probe_id"]: r for r in reference}

    def same(a: dict[str, Any], b: dict[str, Any] | None) -> bool:
        return b is not None and all(a.get(k) == b.get(k) for k in ("output", "choice_logprobs", "prob"))

    if model and all(same(r, ref.get(r["probe_id"])) for r in model):
        raise OrtBenchError("records.jsonl: the model's records are the reference's answers under another "
                            "fingerprint (every output and likelihood identical); a model scored against itself "
                            "uses one fingerprint")


MODEL_CARD_FILES = (UNLEARN_CARD, ATTACK_CARD)  # evaluate copies the model's card into its run


def check_pinned_selection(res: Any) -> None:
    """Benchmark v3's first submission rule: a whole tier of the shipped data (the tier's own targets,
    no --forms/--langs/--limit) and every split."""
    from ort_bench.benchmark import get_version
    from ort_bench.kb.facts import SPLITS
    from ort_bench.kb.tiers import get_tier

    version = get_version(res.benchmark_version)
    sel = res.selection
    if sel.get("tier") not in version.tiers:
        raise OrtBenchError(f"results.json: selection.tier is {sel.get('tier')!r}: a {version.name} entry scores a "
                            f"whole tier ({' or '.join(f'--tier {t}' for t in version.tiers)})")
    tier = get_tier(sel["tier"])
    if sel.get("targets") and sorted(sel["targets"]) != sorted(tier.targets or ()):
        raise OrtBenchError(f"results.json: selection.targets is {sel['targets']!r}: a {version.name} entry scores "
                            f"the {tier.name} tier's own targets (run evaluate without --targets)")
    for key in ("forms", "langs", "limit"):
        if sel.get(key):
            raise OrtBenchError(f"results.json: selection.{key} is {sel[key]!r}: a {version.name} entry scores the "
                                f"whole {sel['tier']} tier (run evaluate without --{key})")
    if sorted(sel.get("splits") or ()) != sorted(SPLITS):
        raise OrtBenchError(f"results.json: selection.splits is {sel.get('splits')!r}: an entry scores every split")


def check_card(res: Any, run_dir: Any, probes: list[Any]) -> None:
    """Benchmark v3's second rule: the checkpoint's card is in the run folder, made from the reference
    (its base fingerprint), for the tier's targets, trained on the probes results.json names, having
    seen none of the scored retain-eval facts, and giving the seen forms results.json reports. One
    checkpoint per target: every target's card (`unlearn_cards.json`), each for its own target only."""
    from pathlib import Path

    from ort_bench.kb.tiers import get_tier
    from ort_bench.models.checkpoint import read_card
    from ort_bench.scoring.per_target import PER_TARGET_CARDS
    from ort_bench.scoring.shards import probes_for_target

    tier, sel = get_tier(res.selection["tier"]), res.selection
    per_target = checkpoints_of(res)
    if per_target is not None:
        cards = read_card(run_dir, PER_TARGET_CARDS)
        if not isinstance(cards, dict):
            raise OrtBenchError(f"{run_dir}: no readable {PER_TARGET_CARDS}: a {res.benchmark_version} entry of one "
                                "checkpoint per target includes every checkpoint's card (evaluate --manifest writes "
                                "it)")
        if tier.targets and sorted(per_target) != sorted(tier.targets):
            raise OrtBenchError(f"results.json: the checkpoints are for {sorted(per_target)!r}, not the {tier.name} "
                                f"tier's targets ({', '.join(tier.targets)})")
        described = res.model.model_dump()["checkpoints"]
        seen: dict[str, int] = {}
        for target in per_target:
            card = cards.get(target)
            if not isinstance(card, dict):
                raise OrtBenchError(f"{PER_TARGET_CARDS}: no card for target {target!r}")
            recorded = (described[target].get("unlearned_with") or {}).get("trained_probe_ids") or []
            for form, n in _check_one_card(f"{PER_TARGET_CARDS} ({target})", card, res, [target], recorded,
                                           probes_for_target(probes, target)).items():
                seen[form] = seen.get(form, 0) + n
    else:
        cards = [(name, read_card(run_dir, name)) for name in MODEL_CARD_FILES if (Path(run_dir) / name).is_file()]
        if not cards or cards[0][1] is None:
            raise OrtBenchError(f"{run_dir}: no readable model card ({' or '.join(MODEL_CARD_FILES)}): a "
                                f"{res.benchmark_version} entry includes the checkpoint's card (evaluate copies it "
                                "from the model folder)")
        name, card = cards[0]
        recorded = (res.model.model_dump().get("unlearned_with") or {}).get("trained_probe_ids") or []
        seen = _check_one_card(name, card, res, list(tier.targets) if tier.targets else None, recorded, probes,
                               tier_name=tier.name, attack=name != UNLEARN_CARD)
    if dict(sorted(seen.items())) != (sel.get("seen_forms") or {}):
        raise OrtBenchError(f"results.json: selection.seen_forms is {sel.get('seen_forms')!r} but the card's trained "
                            f"probes give {dict(sorted(seen.items()))!r}")


def _check_one_card(name: str, card: dict[str, Any], res: Any, targets: list[str] | None, recorded: list[str],
                    probes: list[Any], tier_name: str | None = None, attack: bool = False) -> dict[str, int]:
    """One checkpoint's card against the run: its base model, its targets, its trained probes and the
    retain-eval facts it saw; returns the seen forms its trained probes give on `probes`."""
    from ort_bench.scoring.selection import seen_forms

    base = (card.get("attacked_model") if attack else card.get("base_model")) or {}
    if base.get("fingerprint") != res.reference.fingerprint:
        raise OrtBenchError(f"{name}: the checkpoint was made from model {str(base.get('fingerprint'))[:12]}, not "
                            f"from the reference scored ({res.reference.fingerprint[:12]})")
    if not attack and targets and sorted(card.get("targets") or ()) != sorted(targets):
        where = f"the {tier_name} tier's targets" if tier_name else "its own target"
        raise OrtBenchError(f"{name}: the method unlearned {card.get('targets')!r}, not {where} "
                            f"({', '.join(targets)})")
    trained = card.get("trained_probe_ids") or []
    if sorted(trained) != sorted(recorded):
        raise OrtBenchError(f"{name}: trained_probe_ids differ from those results.json records for the model")
    seen_facts = set((card.get("data") or {}).get("seen_fact_ids") or [])
    leaked = sorted({f for p in probes if p.split != "forget" for f in p.fact_ids} & seen_facts)
    if leaked:
        raise OrtBenchError(f"{name}: the method saw {len(leaked)} of the scored retain-eval facts (first: "
                            f"{leaked[0]!r}): utility must be scored on facts no method saw")
    return seen_forms(probes, trained)


def checkpoints_of(res: Results) -> dict[str, str] | None:
    """One checkpoint per target: target -> its checkpoint's fingerprint; None for one model."""
    model = res.model.model_dump()
    if model.get("protocol") != ONE_PER_TARGET:
        return None
    try:
        return {t: c["fingerprint"] for t, c in model["checkpoints"].items()}
    except (AttributeError, KeyError, TypeError):
        raise OrtBenchError("results.json: model.checkpoints must map each target to its checkpoint's description "
                            "(with its fingerprint)") from None
