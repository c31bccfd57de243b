"""Which probes a run scores, and the hashes that name them: rendered from the shipped KB (or read
from a probes file), cut to a per-split limit of whole items. Evaluate selects with it, and
`ort_bench.board.rederive` selects again from a results file's recorded selection to check a
submission."""

from __future__ import annotations

from pathlib import Path

from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import SPLITS, load_kb
from ort_bench.kb.probes import Probe, read_probes, spread_items
from ort_bench.kb.render import check_filters, render_probes
from ort_bench.kb.templates import load_templates, templates_hash
from ort_bench.provenance import sha256_json


def probe_hash(p: Probe) -> str:
    """The hash of a probe's whole content (a template edited under the same id gets a new one)."""
    return sha256_json(p.model_dump(mode="json"))[:16]


_RENDERED: dict[tuple, list[Probe]] = {}


def _rendered(kb, templates, split: str, forms, langs, targets, retain: str | None) -> list[Probe]:
    """`render_probes` of the shipped KB, kept per process: evaluate, submit and the seen-form check
    render the same probes again, and the key holds the data and templates hashes."""
    key = (kb.content_hash, templates_hash(templates), split,
           *(tuple(x) if x else None for x in (forms, langs, targets)), retain)
    if key not in _RENDERED:
        _RENDERED[key] = render_probes(kb, templates, split, forms, langs, targets, retain=retain)[0]
    return list(_RENDERED[key])


def select_probes(
    splits: tuple[str, ...] | list[str] = SPLITS,
    forms: list[str] | None = None,
    langs: list[str] | None = None,
    targets: list[str] | None = None,
    limit: int | dict[str, int] | None = None,
    probes_file: str | Path | None = None,
    tier: str | None = None,
) -> tuple[list[Probe], dict[str, str]]:
    """The probes to score (rendered from the shipped KB, or read from a file), and their hashes.
    `tier` (`ort_bench.kb.tiers`): the version's fixed sample over facts, drawn within `targets`.
    `limit` counts items (a true/false pair, the rotations of an MCQ: never cut) per split (one number
    for all, or a number per split), spread over forms, targets, facts and templates. Neighbour and
    utility probes come from the retain-eval facts when the benchmark version holds a retain split, and
    only evaluation-half templates are scored when it splits templates (shipped KB only: a probes file
    is scored as given)."""
    from ort_bench.benchmark import CURRENT
    from ort_bench.kb.tiers import get_tier, sample_split

    if tier is not None and probes_file is not None:
        raise OrtBenchError("a tier is a sample of the shipped knowledge base: give --tier or --probes, not both")
    tier_spec = get_tier(tier) if tier is not None else None
    if tier_spec is not None and not targets and tier_spec.targets:
        targets = list(tier_spec.targets)  # the tier's own targets (leaderboard runs)

    if probes_file is not None:
        all_probes = read_probes(probes_file)
        hashes = {"probes_file": str(probes_file)}
        by_split = {s: [p for p in all_probes if p.split == s
                        and (not forms or p.form in forms) and (not langs or p.lang in langs)
                        and (not targets or p.target in targets or p.split == "utility")] for s in splits}
    else:
        kb, templates = load_kb(), load_templates()
        hashes = {"data_sha256": kb.content_hash, "templates_sha256": templates_hash(templates)}
        if CURRENT.template_halves:
            templates = [t for t in templates if t.spec.half == "eval"]
        if tier_spec is not None:  # the tier filters after rendering; render_probes checks them when it filters
            check_filters(kb, templates, forms, langs, targets)
        by_split = {}
        for s in splits:
            # a tier is drawn before --forms/--langs filter it, so filtering never changes another form's facts
            probes = _rendered(kb, templates, s, None if tier_spec else forms, None if tier_spec else langs,
                               targets if s != "utility" else None, "eval" if CURRENT.retain_split else None)
            if tier_spec is not None:
                sampled = [p for item in sample_split(spread_items(probes), s, tier_spec) for p in item]
                probes = [p for p in sampled if (not forms or p.form in forms) and (not langs or p.lang in langs)]
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


def seen_forms(probes: list[Probe], trained_probe_ids: list[str] | None) -> dict[str, int]:
    """Per form, how many of `probes` still hold a prompt a method trained on, verbatim: every turn of
    the trained chat (system, user, prefill) stands inside the same turn of the probe. Such a form is
    not a held-out test of that probe, so it is left out of WFE and the form gap (benchmark v3).
    The trained probes are rendered again from the shipped KB (every template, forget split)."""
    if not trained_probe_ids:
        return {}
    kb, templates = load_kb(), load_templates()
    wanted = set(trained_probe_ids)
    trained = [p for p in _rendered(kb, templates, "forget", None, None, None, None) if p.id in wanted]
    turns = [(p.system or "", p.prompt, p.prefill or "") for p in trained]
    out: dict[str, int] = {}
    for p in probes:
        if p.split != "forget":
            continue
        mine = (p.system or "", p.prompt, p.prefill or "")
        if any(all(t in m for t, m in zip(turn, mine, strict=True)) for turn in turns):
            out[p.form] = out.get(p.form, 0) + 1
    return dict(sorted(out.items()))
