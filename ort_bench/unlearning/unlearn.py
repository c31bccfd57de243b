"""`unlearn`: run one reference unlearning method on a model and write the unlearned checkpoint.

    card = unlearn("npo", "embedded", ["france"], "runs/npo-france", train_form="qa", max_steps=20)

- Forget data: the `train_form` probes (forget split) of the targets rendered with the form's
  training-half templates (`half: train`; evaluate scores the other half), each as (prompt, first
  gold answer); QA by default, as the papers do. The card lists their ids (`trained_probe_ids`).
- Retain data: the targets' neighbour probes and the utility set, in the qa form, from the
  **retain-train** half of those facts only (`facts.retain_half`): the retain-eval half is what
  utility is scored on, so no method sees it.
- Anything else a method needs it builds itself (`Method.own_data`: ROCR the targets' names and
  a general-text corpus, ILU its fine-tuning environments); it is described in the card too.
- The card lists every fact id the method saw (`data.seen_fact_ids`).
- Output: an HF directory (safetensors, tokenizer with its chat template) plus `unlearn_card.json`
  (method, every hyperparameter, data hashes, base model fingerprint, step statistics, wall time,
  library versions). The directory is written beside `out` and renamed into place, so a failed run
  leaves no half-written checkpoint; an existing `out` is replaced only if it is empty or an
  earlier ort-bench output.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ort_bench.errors import OrtBenchError
from ort_bench.models.checkpoint import (
    CARD_SCHEMA_VERSION,
    UNLEARN_CARD,
    check_out_dir,
    load_for_training,
    write_checkpoint,
)
from ort_bench.models.load_options import LoadOptions
from ort_bench.provenance import TRAINING_PACKAGES, versions

if TYPE_CHECKING:
    from ort_bench.unlearning.methods.base import Method


def build_data(kb, templates, targets: list[str], train_form: str, method: Method | str | None = None):
    """The data every method shares, plus what `method`'s own `own_data` builds (a name: the
    method at its defaults), and a description of it (counts, hashes) for the card."""
    from ort_bench.benchmark import CURRENT
    from ort_bench.kb.render import render
    from ort_bench.provenance import sha256_json
    from ort_bench.unlearning.methods.base import DataSource, UnlearnData, probe_examples
    from ort_bench.unlearning.methods.training import examples_hash

    # the training half of the form's variants: evaluate scores the other half (benchmark v3)
    train_templates = [t for t in templates if t.spec.half == "train"] if CURRENT.template_halves else templates
    forget_probes, _ = render(split="forget", forms=[train_form], targets=targets, kb=kb, templates=train_templates,
                              retain="train")
    if not forget_probes:
        raise OrtBenchError(f"no {train_form} probes for targets {', '.join(targets)}: nothing to unlearn "
                            "(is the form rendered for their facts, and has it templates marked `half: train`?)")
    known_forms = {t.spec.form for t in templates}
    retain_probes = []
    if "qa" in known_forms:
        retain_probes += render(split="neighbour", forms=["qa"], targets=targets, kb=kb, templates=templates,
                                retain="train")[0]
        retain_probes += render(split="utility", forms=["qa"], kb=kb, templates=templates, retain="train")[0]
    forget, retain = probe_examples(forget_probes), probe_examples(retain_probes)
    seen_probes = list(forget_probes) + list(retain_probes)
    data = UnlearnData(forget=forget, retain=retain)
    desc: dict[str, Any] = {
        "kb_sha256": kb.content_hash,
        "forget": {"split": "forget", "form": train_form, "n": len(forget), "sha256": examples_hash(forget),
                   "probe_ids_sha256": sha256_json([p.id for p in forget_probes])},
        "retain": {"splits": ["neighbour", "utility"], "form": "qa", "n": len(retain),
                   "sha256": examples_hash(retain), "probe_ids_sha256": sha256_json([p.id for p in retain_probes])},
    }
    if isinstance(method, str):
        from ort_bench.unlearning.methods import get_method

        method = get_method(method)()
    if method is not None:
        own = method.own_data(DataSource(kb, templates, targets, render))
        data.method_data = own.data
        seen_probes += own.probes
        desc.update(own.card)
    desc["seen_fact_ids"] = sorted({f for p in seen_probes for f in p.fact_ids})
    desc["trained_probe_ids"] = sorted(p.id for p in forget_probes)
    desc["retain_half"] = "train"
    return data, desc


def checked_targets(targets: list[str] | None, verb: str, kb=None, templates=None) -> tuple[list[str], Any, Any]:
    """The targets (deduplicated, each known to the KB), the KB and the templates (the shipped ones
    unless given)."""
    targets = list(dict.fromkeys(targets or []))
    if not targets:
        raise OrtBenchError(f"give at least one target to {verb} (see data/targets.yaml)")
    if kb is None:
        from ort_bench.kb.facts import load_kb

        kb = load_kb()
    unknown = [t for t in targets if t not in kb.targets]
    if unknown:
        raise OrtBenchError(f"unknown target {unknown[0]!r} (see data/targets.yaml)")
    if templates is None:
        from ort_bench.kb.templates import load_templates

        templates = load_templates()
    return targets, kb, templates


def unlearn(
    method: str,
    model: str,
    targets: list[str],
    out: str | Path,
    train_form: str = "qa",
    config: dict[str, Any] | Any | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    *,
    load: LoadOptions | None = None,
    kb=None,
    templates=None,
) -> dict[str, Any]:
    """Unlearn `targets` from `model` with `method`; write the checkpoint and card to `out`.

    `load`: how the model is loaded (dtype, device, remote code, pickle). `config`: the method's
    hyperparameters (a dict, its config object, or None for the published defaults); `max_steps` and
    `seed`, when given, override the config's (its `apply_overrides` decides where they go: for
    ILU its base method's; training-free ROCR ignores them).
    `kb`/`templates` default to the shipped knowledge base and templates.
    Returns the card (also written as `out/unlearn_card.json`)."""
    from ort_bench.unlearning.methods import get_method, make_config

    t0 = time.perf_counter()
    method_cls = get_method(method)  # unknown method: one-line error before any work
    cfg = make_config(method, config, max_steps=max_steps, seed=seed)
    targets, kb, templates = checked_targets(targets, "unlearn", kb, templates)
    from ort_bench.kb.templates import templates_hash

    out = Path(out)
    check_out_dir(out)
    runner = method_cls(cfg)
    data, data_desc = build_data(kb, templates, targets, train_form, runner)
    data_desc["templates_sha256"] = templates_hash(templates)

    load = (load or LoadOptions()).on_device()
    t_load = time.perf_counter()
    resolved, tokenizer, lm = load_for_training(model, load)
    load_seconds = time.perf_counter() - t_load
    data.model_fingerprint = resolved.fingerprint

    t_run = time.perf_counter()
    stats = runner.apply(lm, tokenizer, data, progress=progress)
    run_seconds = time.perf_counter() - t_run

    card = {
        "schema_version": CARD_SCHEMA_VERSION,
        "kind": "unlearn",
        "method": method,
        "summary": method_cls.summary,
        "hyperparameters": cfg.to_dict(),
        "targets": targets,
        "train_form": train_form,
        "base_model": {"spec": str(model), "kind": resolved.kind, "fingerprint": resolved.fingerprint},
        "data": data_desc,
        "trained_probe_ids": data_desc["trained_probe_ids"],  # evaluate leaves out a form that still holds one
        "stats": stats,
        "dtype": load.dtype,
        "device": load.device,
        "load_seconds": round(load_seconds, 2),
        "method_seconds": round(run_seconds, 2),
        "versions": versions(TRAINING_PACKAGES, python=True),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    card["wall_seconds"] = round(time.perf_counter() - t0, 2)
    write_checkpoint(lm, tokenizer, out, UNLEARN_CARD, card)
    return card


def unlearn_one_per_target(method: str, model: str, targets: list[str], out: str | Path, train_form: str = "qa",
                           config: dict[str, Any] | Any | None = None, *, load: LoadOptions | None = None,
                           progress: bool = True, **kw: Any) -> dict[str, Any]:
    """The ORT/RWKU protocol: unlearn each target alone from `model` into `out/<target>/` and write
    `out/manifest.json` (target -> checkpoint) for `evaluate --manifest`. A target whose checkpoint is
    already there (its card: this method, this target alone) is kept, so a killed run resumes.
    Returns the manifest's checkpoints."""
    import json

    from ort_bench.models.checkpoint import read_card
    from ort_bench.scoring.per_target import MANIFEST, write_manifest
    from ort_bench.unlearning.methods import make_config

    targets, _, _ = checked_targets(targets, "unlearn", kw.get("kb"), kw.get("templates"))
    hyper = json.loads(json.dumps(make_config(method, config, max_steps=kw.get("max_steps"), seed=kw.get("seed"))
                                  .to_dict(), default=str))  # as a card stores them
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OrtBenchError(f"{out}: exists and is not a directory")
    checkpoints: dict[str, str] = {}
    for target in targets:
        card = read_card(out / target, UNLEARN_CARD)
        if not (card and card.get("method") == method and card.get("targets") == [target]
                and card.get("hyperparameters") == hyper and card.get("train_form") == train_form):
            unlearn(method, model, [target], out / target, train_form=train_form, config=config, load=load,
                    progress=progress, **kw)
        checkpoints[target] = target
    write_manifest(out / MANIFEST, checkpoints)
    return checkpoints
