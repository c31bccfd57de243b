"""`ort-bench export hf-dataset`: the core tier's probes and a small run's records load with
`datasets.load_dataset(DIR)` (offline: conftest sets HF_HUB_OFFLINE) and give back exactly what ort-bench
selected and recorded, lists included; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml

from ort_bench.cli import main
from ort_bench.kb.probes import Probe
from ort_bench.scoring.evaluate import EvalConfig, evaluate
from ort_bench.scoring.records import Record, load_records, seal
from ort_bench.scoring.selection import probe_hash, select_probes

FIX = Path(__file__).parent / "fixtures"
SPLITS = ("forget", "neighbour", "utility")


def card(folder: Path) -> dict[str, Any]:
    """The YAML metadata of a dataset card."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def load(folder: Path, tmp: Path, *config: str) -> datasets.DatasetDict:
    """`load_dataset` with nothing but the folder (and a config); its cache kept out of the user's."""
    return datasets.load_dataset(str(folder), *config, cache_dir=str(tmp / "hf-cache"))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# --------------------------------------------------------------------------------------------------
# probes: the core tier
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def core(tmp_path_factory) -> tuple[Path, list[Probe], dict[str, str]]:
    out = tmp_path_factory.mktemp("export") / "probes"
    assert main(["export", "hf-dataset", "--out", str(out), "--tier", "core"]) == 0
    probes, hashes = select_probes(tier="core")
    return out, probes, hashes


def test_core_tier_round_trips_through_load_dataset(core, tmp_path):
    out, probes, _ = core
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        f"data/core/{s}-00000-of-00001.parquet" for s in SPLITS]
    default, named = load(out, tmp_path), load(out, tmp_path, "core")
    assert set(default) == set(named) == set(SPLITS)
    for split in SPLITS:
        want = [p for p in probes if p.split == split]
        rows = named[split].to_list()
        assert rows == default[split].to_list()
        assert [r["id"] for r in rows] == [p.id for p in want]  # same probes, in the order a run scores them
        # every field, lists (answers, choices, fact_ids) and nulls included: a row is the probe again
        assert [Probe.model_validate({k: r[k] for k in Probe.model_fields}) for r in rows] == want
        assert [r["probe_sha256"] for r in rows] == [probe_hash(p) for p in want]
        assert [r["gold_index"] for r in rows] == [p.gold_index for p in want]
    forget = named["forget"]
    assert str(forget.features["answers"]) == str(forget.features["choices"]) == "List(Value('string'))"
    mcq = next(r for r in forget.to_list() if r["form"] == "mcq")
    assert len(mcq["choices"]) == 4 and mcq["choices"][mcq["gold_index"]] == mcq["answers"][0]
    assert any(r["choices"] is None for r in forget.to_list())


def test_core_tier_card_names_the_version_forms_licence_and_hashes(core):
    out, probes, hashes = core
    meta = card(out)
    assert meta["license"] == "apache-2.0"
    assert meta["configs"] == [{"config_name": "core", "default": True, "data_files": [
        {"split": s, "path": f"data/core/{s}-00000-of-00001.parquet"} for s in SPLITS]}]
    ob = meta["ort_bench"]
    assert ob["kind"] == "probes" and ob["benchmark_version"] == "v3" and "Apache-2.0" in ob["license_note"]
    assert "mcq" in ob["forms"] and "multi_hop" in ob["forms"]
    tier = ob["tiers"]["core"]
    assert tier["hashes"] == hashes  # what `evaluate --tier core` records in results.json
    assert set(hashes) == {"data_sha256", "templates_sha256", "probes_sha256"}
    assert tier["num_probes"] == {s: sum(p.split == s for p in probes) for s in SPLITS}
    assert set(tier["forms"]) == {p.form for p in probes}
    assert "load_dataset" in (out / "README.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# a run's records
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama_dir, tiny_gpt2_dir, one_torch_thread) -> Path:
    """A small real run: two tiny models (model and reference) on the fixture knowledge base."""
    run_dir = tmp_path_factory.mktemp("export-run") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORT_BENCH_DATA", str(FIX / "kb"))
        mp.setenv("ORT_BENCH_TEMPLATES", str(FIX / "templates"))
        evaluate(str(tiny_llama_dir), run_dir, reference=str(tiny_gpt2_dir), limit=3,
                 config=EvalConfig(max_new_tokens=6, chunk_size=16), progress=False)
    return run_dir


def test_records_round_trip_through_load_dataset(run, tmp_path, capsys):
    out = tmp_path / "records"
    assert main(["export", "hf-dataset", "--records", str(run), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["num_records"]
    recs = list(load_records(run / "records.jsonl", repair=False).values())
    ds = load(out, tmp_path)
    assert set(ds) == {"model", "reference"} and set(load(out, tmp_path, "records")) == {"model", "reference"}
    for role in ("model", "reference"):
        want = [r for r in recs if r["role"] == role]
        rows = ds[role].to_list()
        assert [r["key"] for r in rows] == [r["key"] for r in want]
        for row, rec in zip(rows, want, strict=True):
            assert set(row) == set(Record.model_fields)
            # as stored (an int score reads back as the equal float; a field the record lacks is null)
            assert all(row[k] == rec.get(k) for k in Record.model_fields), (row, rec)
    rows = ds["model"].to_list()
    mcq = next(r for r in rows if r["form"] == "mcq")
    assert len(mcq["choice_logprobs"]) == 4 and str(ds["model"].features["choice_logprobs"]) == "List(Value('float64'))"
    assert any(r["choice_logprobs"] is None for r in rows) and all(r["answers"] for r in rows)


def test_records_card_carries_the_runs_fingerprints_and_hashes(run, tmp_path):
    out = tmp_path / "records"
    assert main(["export", "hf-dataset", "--records", str(run), "--out", str(out)]) == 0
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    meta = card(out)
    assert meta["configs"] == [{"config_name": "records", "default": True, "data_files": [
        {"split": r, "path": f"data/{r}-00000-of-00001.parquet"} for r in ("model", "reference")]}]
    ob = meta["ort_bench"]
    assert ob["kind"] == "records" and ob["benchmark_version"] == results["benchmark_version"] == "v3"
    assert ob["params_hash"] == results["params_hash"] and ob["hashes"] == results["hashes"]
    assert ob["model"]["fingerprint"] == results["model"]["fingerprint"]
    assert ob["reference"]["fingerprint"] == results["reference"]["fingerprint"]
    assert ob["num_records"]["model"] == ob["num_records"]["reference"] == results["n_probes"]


def test_records_of_other_models_in_the_folder_are_left_out(run, tmp_path, capsys):
    """A run folder keeps the records of whatever else was scored there; the export holds this run's."""
    other = tmp_path / "run"
    other.mkdir()
    (other / "results.json").write_bytes((run / "results.json").read_bytes())
    lines = (run / "records.jsonl").read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[0])
    stray = seal({**rec, "model_fingerprint": "another-model", "key": "0" * 32})
    (other / "records.jsonl").write_text("\n".join([*lines, json.dumps(stray)]) + "\n", encoding="utf-8")
    assert main(["export", "hf-dataset", "--records", str(other), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped_records"] == 1 and sum(summary["num_records"].values()) == len(lines)
    (other / "records.jsonl").write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")  # one probe lost
    assert main(["export", "hf-dataset", "--records", str(other), "--out", str(tmp_path / "out2")]) == 1
    assert "probes_sha256" in one_error_line(capsys)


# --------------------------------------------------------------------------------------------------
# bad input: one line
# --------------------------------------------------------------------------------------------------

def test_an_out_folder_that_is_not_empty_is_refused_unless_forced(run, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "data" / "full").mkdir(parents=True)
    (out / "data" / "full" / "stale.parquet").write_text("old export")
    (out / "notes.txt").write_text("mine")
    assert main(["export", "hf-dataset", "--records", str(run), "--out", str(out)]) == 1
    assert "exists and is not empty" in one_error_line(capsys) and (out / "data" / "full").is_dir()
    assert main(["export", "hf-dataset", "--tier", "core", "--out", str(out)]) == 1  # refused before rendering
    assert "--force" in one_error_line(capsys)
    assert main(["export", "hf-dataset", "--records", str(run), "--out", str(out), "--force"]) == 0
    assert not (out / "data" / "full").exists() and (out / "notes.txt").read_text() == "mine"
    assert set(load(out, tmp_path)) == {"model", "reference"}


def test_an_out_that_is_a_file_is_refused(run, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["export", "hf-dataset", "--records", str(run), "--out", str(tmp_path / "f"), "--force"]) == 1
    assert "is not a folder" in one_error_line(capsys)


@pytest.mark.parametrize("missing", ["records.jsonl", "results.json"])
def test_a_run_folder_without_records_or_results_is_refused(run, tmp_path, capsys, missing):
    broken = tmp_path / "run"
    broken.mkdir()
    for name in ("records.jsonl", "results.json"):
        if name != missing:
            (broken / name).write_bytes((run / name).read_bytes())
    assert main(["export", "hf-dataset", "--records", str(broken), "--out", str(tmp_path / "out")]) == 1
    assert f"no {missing}" in one_error_line(capsys) and not (tmp_path / "out").exists()


def test_no_run_folder_and_a_tier_with_records_are_refused(run, tmp_path, capsys):
    assert main(["export", "hf-dataset", "--records", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "no such run folder" in one_error_line(capsys)
    assert main(["export", "hf-dataset", "--records", str(run), "--tier", "core", "--out", str(tmp_path / "o")]) == 1
    assert "--tier" in one_error_line(capsys) and not (tmp_path / "o").exists()
