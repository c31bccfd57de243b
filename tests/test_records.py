"""The record store: sealed records, keys that separate models, torn-line recovery."""

from __future__ import annotations

import json

import pytest

from ort_bench.errors import OrtBenchError
from ort_bench.scoring.records import RecordWriter, check_seal, load_records, record_key, seal


def test_key_separates_model_backend_params_and_probe_content():
    base = record_key("fp-a", "hf", "params", "probe")
    assert base == record_key("fp-a", "hf", "params", "probe")
    others = {record_key("fp-b", "hf", "params", "probe"), record_key("fp-a", "vllm", "params", "probe"),
              record_key("fp-a", "hf", "other", "probe"), record_key("fp-a", "hf", "params", "edited")}
    assert base not in others and len(others) == 4


def test_records_are_sealed_and_an_edit_breaks_the_seal(tmp_path):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as w:
        w.write([{"key": "k1", "output": "Paris", "primary": 1.0}, {"key": "k2", "output": "x", "primary": 0.0}])
    recs = load_records(path)
    assert set(recs) == {"k1", "k2"} and all(check_seal(r) for r in recs.values())
    edited = dict(recs["k2"], primary=1.0)
    assert not check_seal(edited)


def test_torn_last_line_is_dropped_and_the_file_repaired(tmp_path, capsys):
    path = tmp_path / "records.jsonl"
    with RecordWriter(path) as w:
        w.write([{"key": "k1", "primary": 1.0}])
    with path.open("a") as fh:
        fh.write('{"key": "k2", "prim')  # killed mid-write
    recs = load_records(path)
    assert set(recs) == {"k1"}
    assert "torn last line" in capsys.readouterr().err
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["k1"]


def test_a_bad_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(seal({"key": "k1"})) + '\nnot json\n{"key": "k3"}\n')
    with pytest.raises(OrtBenchError, match=r"records.jsonl:2: not a valid record line"):
        load_records(path)
