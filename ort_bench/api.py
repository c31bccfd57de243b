"""The Python API the CLI is a thin shell over; tests and notebooks call these directly."""

from __future__ import annotations

from pathlib import Path

from ort_bench.kb.facts import SPLITS, KnowledgeBase, load_kb
from ort_bench.kb.probes import Probe, write_probes
from ort_bench.kb.render import RenderSummary, render_probes
from ort_bench.kb.templates import Template, load_templates
from ort_bench.scoring.evaluate import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate", "render", "validate_templates"]


def validate_templates(
    templates_root: str | Path | None = None, data_root: str | Path | None = None
) -> tuple[list[Template], dict[str, int]]:
    """Load every template (variables checked against the schema), then render it over the whole
    knowledge base, so a template that fails on some fact fails here. Returns probes per template."""
    templates = load_templates(templates_root)
    kb = load_kb(data_root)
    counts = {t.id: 0 for t in templates}
    for split in SPLITS:
        probes, _ = render_probes(kb, templates, split)
        for p in probes:
            counts[p.template_id] += 1
    return templates, counts


def render(
    split: str = "forget",
    forms: list[str] | None = None,
    langs: list[str] | None = None,
    targets: list[str] | None = None,
    out: str | Path | None = None,
    kb: KnowledgeBase | None = None,
    templates: list[Template] | None = None,
    retain: str | None = None,
) -> tuple[list[Probe], RenderSummary]:
    """Render probes of one split; write them as JSONL when `out` is given. `retain` ("train" or
    "eval") keeps one half of the neighbour and utility facts (`facts.retain_half`)."""
    kb = kb or load_kb()
    templates = templates if templates is not None else load_templates()
    probes, summary = render_probes(kb, templates, split, forms, langs, targets, retain=retain)
    if out is not None:
        write_probes(out, probes)
    return probes, summary
