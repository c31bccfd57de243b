"""The benchmark's probes, or one run's records, as a Hugging Face `datasets` dataset on disk.

People load evaluation data with `datasets`; ort-bench's own JSONL needs ort-bench to read. An export is
a folder that `datasets.load_dataset(DIR)` loads with no loading script and no extra arguments:

    DIR/README.md                                   dataset card: YAML `configs:` with `data_files`, provenance
    DIR/data/{tier}/{split}-00000-of-00001.parquet  probes: a config per tier, a split per forget/neighbour/utility
    DIR/data/{role}-00000-of-00001.parquet          records: one config, a split per role (model, reference)

Parquet columns are typed from the pydantic models (`Probe`, `Record`), so list fields (answers, choices,
fact_ids, choice_logprobs) stay lists and an all-null column keeps its type; a row read back validates as
the probe it came from. The card repeats the hashes a results file records, so a copy on the Hub can be
checked against the ort-bench that rendered it.
"""

from __future__ import annotations

import shutil
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from ort_bench.errors import OrtBenchError
from ort_bench.provenance import sha256_json, versions

if typing.TYPE_CHECKING:
    import pyarrow as pa
    from pydantic import BaseModel

DATA = "data"
SHARD = "00000-of-00001"  # one file per split: `datasets`' own naming for a single shard
LICENSE = "apache-2.0"
LICENSE_NOTE = ("The facts (`data/` of ort-bench) and the templates are the project's own and carry no licence "
                "note of their own, so they are under ort-bench's Apache-2.0 licence (pyproject.toml).")
PROBE_EXTRA = {"probe_sha256": "the hash of the probe's whole content (records' `probe_sha256`)",
               "gold_index": "index of the gold answer in `choices` (choice probes; null otherwise)"}


# --------------------------------------------------------------------------------------------------
# typed parquet
# --------------------------------------------------------------------------------------------------

def _arrow_type(annotation: Any) -> pa.DataType:
    """The arrow type of a pydantic field's annotation: declared types, not inferred ones, so that a
    column that is null in every row (no MCQ in a split) still loads as a list of strings."""
    import pyarrow as pa

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _arrow_type(args[0])
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return _arrow_type(inner)
    if origin is Literal:
        return pa.string()
    if origin in (list, tuple):
        return pa.list_(_arrow_type(args[0]))
    simple = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    if annotation in simple:
        return simple[annotation]
    raise TypeError(f"no parquet type for {annotation!r}")


def model_schema(model: type[BaseModel], extra: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """A parquet schema with a column per field of `model`, in declaration order (then `extra`)."""
    import pyarrow as pa

    fields = [pa.field(name, _arrow_type(f.annotation)) for name, f in model.model_fields.items()]
    return pa.schema(fields + [pa.field(k, t) for k, t in (extra or {}).items()])


def _write_parquet(rows: list[dict[str, Any]], schema: pa.Schema, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    pq.write_table(table, path)


# --------------------------------------------------------------------------------------------------
# the folder and its card
# --------------------------------------------------------------------------------------------------

def _prepare_out(out: Path, force: bool, owned: tuple[str, ...] = ("README.md", DATA)) -> None:
    """Refuse to mix an export into a folder that holds anything (a second export, someone's files);
    `force` replaces only what an export writes (`owned`: names or glob patterns inside `out`)."""
    if out.exists() and not out.is_dir():
        raise OrtBenchError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OrtBenchError(f"{out}: exists and is not empty (pass --force to replace its {', '.join(owned)})")
        for pattern in owned:
            for path in out.glob(pattern):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_card(out: Path, meta: dict[str, Any], body: str) -> None:
    """README.md: YAML metadata (what `datasets` and the Hub read) between `---` lines, then prose."""
    import yaml

    text = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n" + body
    (out / "README.md").write_text(text, encoding="utf-8")


def _data_files(parts: dict[str, Path], out: Path) -> list[dict[str, str]]:
    return [{"split": s, "path": p.relative_to(out).as_posix()} for s, p in parts.items()]


def _columns_table(schema: pa.Schema, notes: dict[str, str]) -> str:
    rows = "\n".join(f"| `{f.name}` | `{f.type}` | {notes.get(f.name, '')} |" for f in schema)
    return "| column | type | |\n|---|---|---|\n" + rows + "\n"


# --------------------------------------------------------------------------------------------------
# probes
# --------------------------------------------------------------------------------------------------

def export_probes(out: str | Path, tiers: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Write the probes of each tier (default: every tier of the current version) to `out`: a config
    per tier (the first is the default), a split per forget/neighbour/utility, rows in the order a run
    scores them. Returns per tier the probes per split and the hashes `select_probes` reports."""
    import pyarrow as pa

    from ort_bench.benchmark import CURRENT
    from ort_bench.kb.facts import LANGS, SPLITS
    from ort_bench.kb.probes import PROBE_SCHEMA_VERSION, Probe
    from ort_bench.kb.tiers import get_tier
    from ort_bench.scoring.selection import probe_hash, select_probes

    tiers = list(tiers) if tiers else list(CURRENT.tiers)
    specs = {t: get_tier(t) for t in tiers}  # an unknown tier is refused before anything is written
    out = Path(out)
    _prepare_out(out, force)
    schema = model_schema(Probe, {"probe_sha256": pa.string(), "gold_index": pa.int64()})
    configs, summary = [], {}
    for i, tier in enumerate(tiers):
        probes, hashes = select_probes(tier=tier)
        parts = {s: out / DATA / tier / f"{s}-{SHARD}.parquet" for s in SPLITS}
        for split, path in parts.items():
            rows = [{**p.model_dump(mode="json"), "probe_sha256": probe_hash(p), "gold_index": p.gold_index}
                    for p in probes if p.split == split]
            _write_parquet(rows, schema, path)
        counts = {s: sum(p.split == s for p in probes) for s in SPLITS}
        forms = sorted({p.form for p in probes}, key=CURRENT.forms.index)
        configs.append({"config_name": tier, **({"default": True} if i == 0 else {}),
                        "data_files": _data_files(parts, out)})
        summary[tier] = {"description": specs[tier].description,
                         "targets": list(specs[tier].targets) if specs[tier].targets else "all",
                         "num_probes": counts, "forms": forms, "hashes": hashes}
    meta = {
        "license": LICENSE, "pretty_name": f"ort-bench probes (benchmark {CURRENT.name})", "language": list(LANGS),
        "task_categories": ["question-answering", "multiple-choice"], "tags": ["unlearning", "llm-evaluation"],
        "configs": configs,
        "ort_bench": {"kind": "probes", "benchmark_version": CURRENT.name, "probe_schema_version": PROBE_SCHEMA_VERSION,
                      "forms": list(CURRENT.forms), "license_note": LICENSE_NOTE,
                      "ort_bench_version": versions(("ort-bench",)).get("ort-bench"), "tiers": summary},
    }
    notes = {"id": "a hash of the template id and fact ids", "answers": "gold answer first, then accepted aliases",
             "item_id": "the item this probe is part of (a true/false pair, an MCQ's rotations); null: itself",
             **PROBE_EXTRA}
    body = (f"# ort-bench probes (benchmark {CURRENT.name})\n\n"
            "Every forget fact of ort-bench rendered into many forms (question, paraphrase, cloze, multiple "
            "choice, true/false, other languages, translation, two-hop, reverse, letter by letter, adversarial), "
            "with neighbour and utility facts that unlearning must keep. Configs are the benchmark's tiers "
            f"({', '.join(tiers)}; `{tiers[0]}` is the default), splits the roles of the facts.\n\n"
            "```python\nimport datasets\n"
            f"probes = datasets.load_dataset(\"path/to/this/folder\", \"{tiers[0]}\")  # splits: "
            f"{', '.join(SPLITS)}\n```\n\n"
            "Rows are in the order `ort-bench evaluate --tier TIER` scores them; the hashes under "
            "`ort_bench.tiers` in this card's metadata are the `hashes` of that run's results.json. "
            "Score with ort-bench (`ort_bench.scorers`): a free answer counts when it contains the answer's "
            "content words, choice probes are decided by likelihood over `choices`.\n\n"
            f"## Columns\n\n{_columns_table(schema, notes)}\n## Licence\n\n{LICENSE_NOTE}\n")
    _write_card(out, meta, body)
    return {"out": str(out), "kind": "probes", "benchmark_version": CURRENT.name,
            "configs": {t: {"num_probes": s["num_probes"], "hashes": s["hashes"]} for t, s in summary.items()}}


# --------------------------------------------------------------------------------------------------
# a run's records
# --------------------------------------------------------------------------------------------------

def _fingerprints(info: dict[str, Any] | None) -> dict[str, Any] | None:
    """What identifies a model of the run: its fingerprint, and per target its checkpoint's (one
    checkpoint per target)."""
    if info is None:
        return None
    out = {"spec": info.get("spec"), "kind": info.get("kind"), "fingerprint": info.get("fingerprint")}
    if isinstance(info.get("checkpoints"), dict):
        out["checkpoints"] = {t: c.get("fingerprint") for t, c in info["checkpoints"].items()}
    return out


def _run_records(results: dict[str, Any], stored: list[dict[str, Any]], path: Path) -> dict[str, list[dict[str, Any]]]:
    """The records of the run results.json describes, by role, in file order. A run folder also keeps
    records of other models, parameters and selections scored there (evaluate puts the run's own first,
    in probe order), and the card's hashes name only this run's: the others are left out."""
    fps = {role: _fingerprints(results[role]) for role in ("model", "reference")}
    wanted = {(role, fp) for role, info in fps.items() if info
              for fp in [info["fingerprint"], *(info.get("checkpoints") or {}).values()]}
    mine = [r for r in stored if r["params_hash"] == results["params_hash"]
            and (r["role"], r["model_fingerprint"]) in wanted]
    # the records that list the whole selection once: the reference's when each target has its own checkpoint
    lead = "reference" if fps["model"] and fps["model"].get("checkpoints") else "model"
    ordered = [r for r in mine if r["role"] == lead][:results["n_probes"]]
    probes_sha = results["hashes"].get("probes_sha256")
    if len(ordered) != results["n_probes"] or (
            probes_sha is not None and sha256_json([r["probe_id"] for r in ordered]) != probes_sha):
        raise OrtBenchError(f"{path}: the {lead} records are not the {results['n_probes']} probes results.json lists "
                            "(hashes.probes_sha256): a run killed before it finished, or records edited?")
    selected = {r["probe_sha256"] for r in ordered}
    by_role: dict[str, list[dict[str, Any]]] = {}
    for r in mine:
        if r["probe_sha256"] in selected:
            by_role.setdefault(r["role"], []).append(r)
    return by_role


def export_records(run_dir: str | Path, out: str | Path, force: bool = False) -> dict[str, Any]:
    """Write a run's records to `out`: one config (`records`), a split per role that answered (model,
    reference), rows in the run's probe order; the card carries the run's fingerprints, benchmark
    version, parameters hash and data/template/probe hashes from its results.json."""
    from ort_bench.scoring.records import Record, load_records
    from ort_bench.scoring.results import read_results

    run, out = Path(run_dir), Path(out)
    if not run.is_dir():
        raise OrtBenchError(f"{run}: no such run folder")
    for name in ("records.jsonl", "results.json"):
        if not (run / name).is_file():
            raise OrtBenchError(f"{run}: no {name} (not an `ort-bench evaluate` run folder)")
    results = read_results(run / "results.json").model_dump(mode="json")
    stored = list(load_records(run / "records.jsonl", repair=False).values())
    for rec in stored:
        try:
            Record.model_validate(rec)
        except ValueError as exc:
            raise OrtBenchError(f"{run / 'records.jsonl'}: record {rec['key']}: not a valid record "
                                f"({str(exc).splitlines()[0]})") from None
    by_role = _run_records(results, stored, run / "records.jsonl")
    skipped = len(stored) - sum(map(len, by_role.values()))
    _prepare_out(out, force)
    schema = model_schema(Record)
    parts = {role: out / DATA / f"{role}-{SHARD}.parquet" for role in ("model", "reference") if role in by_role}
    for role, path in parts.items():
        _write_parquet(by_role[role], schema, path)
    counts = {role: len(by_role[role]) for role in parts}
    run_meta = {
        "kind": "records", "benchmark_version": results["benchmark_version"], "params_hash": results["params_hash"],
        "model": _fingerprints(results["model"]), "reference": _fingerprints(results["reference"]),
        "hashes": results["hashes"], "tier": results["selection"].get("tier"), "n_probes": results["n_probes"],
        "num_records": counts, "skipped_records": skipped, "created_at": results["created_at"],
        "versions": results["versions"], "license_note": LICENSE_NOTE,
    }
    meta = {"license": LICENSE, "pretty_name": f"ort-bench records of {run.name}",
            "tags": ["unlearning", "llm-evaluation"],
            "configs": [{"config_name": "records", "default": True, "data_files": _data_files(parts, out)}],
            "ort_bench": run_meta}
    notes = {"key": "hash of model fingerprint, backend, params_hash and probe_sha256",
             "prompt_text": "the prompt as the model saw it", "primary": "the probe's decision under its scorer",
             "record_sha256": "the record's seal: the hash of its other fields as stored in records.jsonl"}
    body = (f"# ort-bench records: {run.name}\n\n"
            f"Per-probe records of one `ort-bench evaluate` run (benchmark {results['benchmark_version']}, "
            f"parameters `{results['params_hash']}`): a split per model role ({', '.join(parts)}), one row per "
            "probe answered, with the answer and every score. Fingerprints and hashes are in this card's "
            "metadata (`ort_bench`).\n\n"
            "```python\nimport datasets\nrecords = datasets.load_dataset(\"path/to/this/folder\")  # splits: "
            f"{', '.join(parts)}\n```\n\n"
            "A field a record does not have (choice log-likelihoods of a free answer) is null. To re-check "
            "scores or submit, use the run folder's records.jsonl, which this export does not replace.\n\n"
            f"## Columns\n\n{_columns_table(schema, notes)}\n## Licence\n\n{LICENSE_NOTE}\n")
    _write_card(out, meta, body)
    return {"out": str(out), "kind": "records", "run": str(run), "benchmark_version": results["benchmark_version"],
            "params_hash": results["params_hash"], "num_records": counts, "skipped_records": skipped}


def export_hf_dataset(out: str | Path, tier: str | None = None, records: str | Path | None = None,
                      force: bool = False) -> dict[str, Any]:
    """`ort-bench export hf-dataset`: the probes of `tier` (default: every tier), or with `records` a
    run folder's records, as a dataset folder `datasets.load_dataset(out)` loads (module docstring)."""
    if records is not None:
        if tier is not None:
            raise OrtBenchError("--tier selects probes; a run's records are exported as it scored them "
                                "(its tier is in the card)")
        return export_records(records, out, force=force)
    return export_probes(out, [tier] if tier else None, force=force)
