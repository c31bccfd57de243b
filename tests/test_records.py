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


# --------------------------------------------------------------------------------------------------
# Record: the fields of a record, declared once
# --------------------------------------------------------------------------------------------------

GOOD = {"key": "k1", "role": "model", "model_fingerprint": "fp", "backend": "hf", "params_hash": "ph",
        "probe_id": "p1", "probe_sha256": "ps", "split": "forget", "target": "france", "form": "qa", "lang": "en",
        "template_id": "t", "fact_ids": ["f1"], "scorer": "rouge_l_recall", "answers": ["Paris"],
        "prompt_text": "Q: capital of France?", "output": "Paris", "rouge_l_recall": 1.0, "choice_acc": None,
        "prob": 0.5, "primary": 1}


@pytest.mark.parametrize(("edit", "message"), [
    ({"primary": "high"}, "primary: Input should be a number"),
    ({"primary": True}, "primary: Input should be a number"),
    ({"role": "judge"}, "role: Input should be 'model' or 'reference'"),
    ({"fact_ids": "f1"}, "fact_ids: Input should be a valid list"),
    ({"choice_logprobs": [-1.0, "x"]}, "choice_logprobs.1: Input should be a number"),
    ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ({"output": None}, "output: Input should be a valid string"),
])
def test_a_malformed_record_is_refused_in_one_line_naming_the_field(edit, message):
    from ort_bench.jsonl import validate_line
    from ort_bench.scoring.records import Record

    with pytest.raises(OrtBenchError) as info:
        validate_line(Record, {**GOOD, **edit}, "records.jsonl:3")
    assert str(info.value) == f"records.jsonl:3: {message}"


def test_a_record_without_a_field_names_it():
    from ort_bench.jsonl import validate_line
    from ort_bench.scoring.records import Record

    with pytest.raises(OrtBenchError, match=r"^records\.jsonl:3: probe_sha256: Field required$"):
        validate_line(Record, {k: v for k, v in GOOD.items() if k != "probe_sha256"}, "records.jsonl:3")


def test_a_record_keeps_its_values_and_leaves_out_what_it_was_not_given():
    """An int score stays an int and absent item fields stay absent: the seal hashes the JSON as written."""
    from ort_bench.scoring.records import Record

    rec = Record.model_validate(GOOD)
    assert rec.to_dict() == GOOD and type(rec.to_dict()["primary"]) is int
    assert "item_id" not in rec.to_dict() and seal(rec) == seal(GOOD)


def test_every_stored_leaderboard_record_is_a_record_and_seals_the_same():
    """v1 and v2 records (different fields) validate, and read back through Record they hash to their seal."""
    from ort_bench.paths import leaderboards_dir
    from ort_bench.scoring.records import Record

    files = sorted(leaderboards_dir().glob("v*/submissions/*/records.jsonl"))
    assert {f.parts[-4] for f in files} >= {"v1", "v2"}
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            raw = json.loads(line)
            rec = Record.model_validate(raw)
            assert rec.to_dict() == raw and check_seal(rec), path
