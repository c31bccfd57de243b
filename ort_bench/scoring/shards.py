"""Shards: one selection scored by several processes or machines, and the shard folders joined again.

`--shard I/N` (I from 1 to N) keeps the selection's items (a probe; a true/false pair; the rotations of
an MCQ: never cut) in selection order, and item k (0-based) goes to shard k mod N + 1, so every shard
gets a spread of splits, forms and targets and the slice depends on nothing but the selection. A
shard's results.json says which shard it is (`selection.shard`: index, count and the hash of the whole
selection's probe ids) and its `hashes.probes_sha256` names only its own probes, so a shard alone is
never taken for the run (`submit` refuses it).

`merge` joins the N shard folders of one selection into one run folder: the selection is selected
again (`select_probes`, as evaluate does), every record key the whole run needs is computed from it
(`run_keys`, the order evaluate writes) and must come from exactly one shard, and the results are
recomputed from the records by `results_from_records`, so the merged folder is what a single process
would have written.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.kb.probes import Probe
from ort_bench.provenance import sha256_json
from ort_bench.scoring.per_target import ONE_PER_TARGET, PER_TARGET_CARDS
from ort_bench.scoring.records import RecordWriter, load_records, record_key
from ort_bench.scoring.selection import probe_hash


def parse_shard(spec: str) -> tuple[int, int]:
    """`I/N` with 1 <= I <= N (`2/4`: the second of four shards)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m:
        raise OrtBenchError(f"shard {spec!r}: give I/N with whole numbers, e.g. 1/4")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise OrtBenchError(f"shard {spec!r}: I/N needs 1 <= I <= N (shards are numbered from 1)")
    return i, n


def items_in_order(probes: list[Probe]) -> list[list[Probe]]:
    """The selection's items in order: consecutive probes with one `item_key` (a selection keeps them
    together)."""
    items: list[list[Probe]] = []
    for p in probes:
        if items and items[-1][0].item_key == p.item_key:
            items[-1].append(p)
        else:
            items.append([p])
    return items


def shard_probes(probes: list[Probe], shard: tuple[int, int]) -> list[Probe]:
    """Shard `I/N` of a selection: item k goes to shard k mod N + 1."""
    i, n = shard
    return [p for k, item in enumerate(items_in_order(probes)) if k % n == i - 1 for p in item]


def shard_selection(probes: list[Probe], shard: tuple[int, int] | None,
                    hashes: dict[str, str]) -> tuple[list[Probe], dict[str, str], dict[str, Any] | None]:
    """(the shard's probes, hashes naming them, `selection.shard`) — the selection itself without a shard."""
    if shard is None:
        return probes, hashes, None
    mine = shard_probes(probes, shard)
    if not mine:
        raise OrtBenchError(f"shard {shard[0]}/{shard[1]}: no probes (the selection has only "
                            f"{len(items_in_order(probes))} items)")
    info = {"index": shard[0], "count": shard[1], "probes_sha256": hashes["probes_sha256"]}
    return mine, {**hashes, "probes_sha256": sha256_json([p.id for p in mine])}, info


def run_keys(probes: list[Probe], model: dict[str, Any], reference_fp: str | None, backend: str,
             params_hash: str) -> tuple[list[str], list[str]]:
    """The record keys of a run over `probes`, in the order evaluate leaves them (model, then reference).
    One checkpoint per target (`model["checkpoints"]`): each target's checkpoint in manifest order, on its
    target's forget probes and every neighbour and utility probe (`probes_for_target`)."""
    def keys(fp: str, ps: list[Probe]) -> list[str]:
        return [record_key(fp, backend, params_hash, probe_hash(p)) for p in ps]

    if model.get("protocol") == ONE_PER_TARGET:
        model_keys = [k for t, c in model["checkpoints"].items() for k in keys(c["fingerprint"],
                                                                              probes_for_target(probes, t))]
    else:
        model_keys = keys(model["fingerprint"], probes)
    return model_keys, keys(reference_fp, probes) if reference_fp else []


def probes_for_target(probes: list[Probe], target: str) -> list[Probe]:
    """What one target's checkpoint answers: that target's forget probes, and every neighbour and utility
    probe (each checkpoint's utility is its own)."""
    return [p for p in probes if p.split != "forget" or p.target == target]


def _read_shard(d: Path) -> tuple[Any, dict[str, Any]]:
    from ort_bench.scoring.results import read_results

    if not d.is_dir():
        raise OrtBenchError(f"{d}: no such run folder")
    res = read_results(d / "results.json")
    if not res.selection.get("shard"):
        raise OrtBenchError(f"{d}: not a shard (results.json has no selection.shard; run evaluate --shard I/N)")
    return res, json.loads((d / "results.json").read_text(encoding="utf-8"))


def _same(first: tuple[Path, Any], other: tuple[Path, Any], what: str) -> None:
    (d0, a), (d, b) = first, other
    if a != b:
        def show(v: Any) -> str:
            s = json.dumps(v, sort_keys=True, default=str)
            return s if len(s) <= 60 else s[:57] + "..."
        raise OrtBenchError(f"{d}: {what} differs from {d0}'s ({show(b)} vs {show(a)}): shards of one run only")


def _checkpoints(model: dict[str, Any]) -> Any:
    if model.get("protocol") != ONE_PER_TARGET:
        return model.get("fingerprint")
    return {t: c["fingerprint"] for t, c in model["checkpoints"].items()}


def merge_shards(dirs: list[str | Path], out: str | Path) -> dict[str, Any]:
    """Join the shard folders of one selection into the run folder `out` (records in the order evaluate
    writes them, results recomputed from them). Refuses, in one line naming the folder, a shard given
    twice or missing, overlapping records, and shards that differ in model or reference fingerprints,
    backend, scoring parameters, benchmark version, data, selection or library versions."""
    from ort_bench.benchmark import get_version
    from ort_bench.models.checkpoint import CARDS
    from ort_bench.scoring.results import results_from_records, write_results
    from ort_bench.scoring.selection import select_probes

    dirs = [Path(d) for d in dirs]
    out = Path(out)
    if not dirs:
        raise OrtBenchError("merge: give the shard folders")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OrtBenchError(f"{out}: exists and is not an empty folder; choose another --out")
    shards = [(d, *_read_shard(d)) for d in dirs]
    d0, res0, raw0 = shards[0]
    count = res0.selection["shard"]["count"]
    seen: dict[int, Path] = {}
    for d, res, raw in shards:
        sel = {k: v for k, v in res.selection.items() if k != "shard"}
        sel0 = {k: v for k, v in res0.selection.items() if k != "shard"}
        for what, get in (("benchmark version", lambda r, w: r.benchmark_version),
                          ("model fingerprint", lambda r, w: _checkpoints(w["model"])),
                          ("reference fingerprint", lambda r, w: (w.get("reference") or {}).get("fingerprint")),
                          ("backend", lambda r, w: r.config.get("backend")),
                          ("params_hash", lambda r, w: r.params_hash),
                          ("shard count", lambda r, w: r.selection["shard"]["count"]),
                          ("selection", lambda r, w: None),
                          ("data and templates hashes", lambda r, w: {k: v for k, v in r.hashes.items()
                                                                      if k != "probes_sha256"}),
                          ("library versions", lambda r, w: r.versions)):
            if what == "selection":
                _same((d0, sel0), (d, sel), what)
            else:
                _same((d0, get(res0, raw0)), (d, get(res, raw)), what)
        index = res.selection["shard"]["index"]
        if index in seen:
            raise OrtBenchError(f"{d}: shard {index}/{count} again (also {seen[index]}): each shard once")
        seen[index] = d
    missing = [i for i in range(1, count + 1) if i not in seen]
    if missing:
        raise OrtBenchError(f"{d0}: shard {missing[0]}/{count} is missing (given: "
                            f"{', '.join(f'{i}/{count}' for i in sorted(seen))})")

    sel = {k: v for k, v in res0.selection.items() if k != "shard"}
    probes_file = res0.hashes.get("probes_file")
    probes, hashes = select_probes(sel.get("splits") or ("forget", "neighbour", "utility"), sel.get("forms"),
                                   sel.get("langs"), sel.get("targets"), sel.get("limit"), probes_file,
                                   tier=sel.get("tier"))
    if hashes["probes_sha256"] != res0.selection["shard"]["probes_sha256"]:
        raise OrtBenchError(f"{d0}: the selection this ort-bench gives is not the one the shards were cut from "
                            "(probes_sha256 differs): merge with the ort-bench and data that scored them")
    ref_fp = raw0["reference"]["fingerprint"] if raw0.get("reference") else None
    model_keys, ref_keys = run_keys(probes, raw0["model"], ref_fp, res0.config["backend"], res0.params_hash)
    wanted = set(model_keys) | set(ref_keys)
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for d, _, _ in shards:
        for key, rec in load_records(d / "records.jsonl", repair=False).items():
            if key not in wanted:
                continue  # records of other selections scored in that folder
            if key in found and found[key][0] != d:
                raise OrtBenchError(f"{d}: holds probe {rec['probe_id']!r} that {found[key][0]} holds too "
                                    "(overlapping shards)")
            found[key] = (d, rec)
    lacking = [k for k in dict.fromkeys(model_keys + ref_keys) if k not in found]
    if lacking:
        raise OrtBenchError(f"{d0}: the shards lack {len(lacking)} records of the selection (unfinished shard? "
                            "run its evaluate again to finish it)")

    def role_records(keys: list[str], role: str) -> list[dict[str, Any]]:
        return [{**{k: v for k, v in found[k][1].items() if k != "record_sha256"}, "role": role} for k in keys]

    cards: dict[str, Path] = {}
    for name in (*CARDS, PER_TARGET_CARDS):
        holders = [d for d, _, _ in shards if (d / name).is_file()]
        if len({(d / name).read_bytes() for d in holders}) > 1:
            raise OrtBenchError(f"{holders[-1]}: its {name} differs from {holders[0]}'s: shards of one run only")
        if holders:
            cards[name] = holders[0] / name
    model_records = role_records(model_keys, "model")
    ref_records = role_records(ref_keys, "reference") if ref_fp else None
    same_model = ref_fp is not None and ref_fp == raw0["model"].get("fingerprint")
    out.mkdir(parents=True, exist_ok=True)
    with RecordWriter(out / "records.jsonl") as writer:
        writer.write(model_records + ([] if same_model or ref_records is None else ref_records))

    def merged_info(role: str) -> dict[str, Any] | None:
        infos = [raw.get(role) for _, _, raw in shards]
        if infos[0] is None:
            return None
        info = dict(infos[0])
        for k in ("reused_records", "new_records", "load_seconds", "score_seconds"):
            if all(isinstance(i.get(k), int | float) for i in infos):
                info[k] = round(sum(i[k] for i in infos), 2)
        info["shards"] = count
        return info

    results = results_from_records(
        get_version(res0.benchmark_version), model_records, ref_records, model=merged_info("model"),
        reference=merged_info("reference"), config=res0.config, params_hash=res0.params_hash,
        hashes={**{k: v for k, v in res0.hashes.items()}, "probes_sha256": hashes["probes_sha256"]},
        versions=res0.versions, n_probes=len(probes), selection=sel)
    write_results(out / "results.json", results)
    for name, src in cards.items():
        shutil.copyfile(src, out / name)
    return results

