"""Which probes a run scores, and the hashes that name them: rendered from the shipped KB (or read
from a probes file), cut to a per-split limit of whole items. Evaluate selects with it, and
`ort_bench.board.rederive` selects again from a results file's recorded selection to check a
submission."""

from __future__ import annotations

from pathlib import Path

from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import SPLITS, load_kb
from ort_bench.kb.probes import Probe, read_probes, spread_items
from ort_bench.kb.render import render_probes
from ort_bench.kb.templates import load_templates, templates_hash
from ort_bench.provenance import sha256_json


def probe_hash(p: Probe) -> str:
    """The hash of a probe's whole content (a template edited under the same id gets a new one)."""
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
