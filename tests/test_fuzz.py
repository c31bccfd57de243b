"""Fuzz the loaders (issue 14): random and mutated facts, templates, probe files, records and CLI
values either load or end in one `OrtBenchError` line — never another exception, never a hang."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ort_bench.cli import main
from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import load_kb
from ort_bench.kb.probes import read_probes
from ort_bench.kb.render import render_probes
from ort_bench.kb.templates import load_template
from ort_bench.scoring.records import load_records

FIX = Path(__file__).parent / "fixtures"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FACT = json.dumps({"id": "france.capital2", "subject": "France", "relation": "capital", "object": "Paris",
                   "target": "france"})
TEMPLATE = (FIX / "templates" / "qa.yaml").read_text(encoding="utf-8")
PROBE = json.dumps({"id": "p1", "split": "forget", "target": "france", "form": "qa", "lang": "en",
                    "template_id": "t", "prompt": "What is the capital of France?", "answers": ["Paris"],
                    "scorer": "rouge_l_recall"})
RECORD = json.dumps({"key": "k1", "probe_id": "p1", "primary": 1.0, "record_sha256": "x"})


@st.composite
def mutated(draw, text: str) -> bytes:
    """`text` with a few random edits: bytes replaced, inserted, deleted, or the line cut."""
    data = bytearray(text.encode("utf-8"))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "replace" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 6))]
        else:
            data = data[:pos]
    return bytes(data)


def loads_or_one_line(fn, *args) -> None:
    """`fn(*args)` succeeds, or fails with one non-empty OrtBenchError line (any other exception fails)."""
    try:
        fn(*args)
    except OrtBenchError as exc:
        assert "\n" not in str(exc) and str(exc)


@FUZZ
@given(line=st.one_of(mutated(FACT), st.binary(max_size=60)))
def test_facts(tmp_path_factory, line):
    kb = tmp_path_factory.mktemp("kb")
    shutil.copytree(FIX / "kb", kb, dirs_exist_ok=True)
    with (kb / "facts" / "forget.jsonl").open("ab") as fh:
        fh.write(line + b"\n")
    loads_or_one_line(load_kb, kb)


@FUZZ
@given(text=st.one_of(mutated(TEMPLATE), st.binary(max_size=200)))
def test_templates(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("tpl") / "t.yaml"
    path.write_bytes(text)
    loads_or_one_line(lambda: render_probes(load_kb(FIX / "kb"), [load_template(path)], "forget"))


@FUZZ
@given(line=st.one_of(mutated(PROBE), st.binary(max_size=60)))
def test_probe_files(tmp_path_factory, line):
    path = tmp_path_factory.mktemp("probes") / "p.jsonl"
    path.write_bytes(PROBE.encode() + b"\n" + line + b"\n")
    loads_or_one_line(read_probes, path)


@FUZZ
@given(line=st.one_of(mutated(RECORD), st.binary(max_size=60)), torn=st.booleans())
def test_records(tmp_path_factory, line, torn):
    path = tmp_path_factory.mktemp("records") / "records.jsonl"
    path.write_bytes(line + (b"" if torn else b"\n") + RECORD.encode() + b"\n")
    loads_or_one_line(load_records, path)


VALUES = st.one_of(st.text(max_size=12), st.integers(-5, 5).map(str), st.sampled_from(
    ["0", "-1", "forget=0", "forget=2,utility=x", "qa,cloze", "xx", "france", "1e3", "", " ", "=", "utility=1"]))


@FUZZ
@given(limit=VALUES, forms=VALUES, langs=VALUES, targets=VALUES)
def test_cli_values(tmp_path_factory, monkeypatch, capsys, limit, forms, langs, targets):
    """`render` and `evaluate` options, on the fixture KB, with a model that does not exist (so a valid
    combination ends, quickly, at the model)."""
    monkeypatch.setenv("ORT_BENCH_DATA", str(FIX / "kb"))
    monkeypatch.setenv("ORT_BENCH_TEMPLATES", str(FIX / "templates"))
    out = tmp_path_factory.mktemp("cli")
    for argv in (["render", "--split", "forget", "--forms", forms, "--langs", langs, "--targets", targets,
                  "--out", str(out / "p.jsonl")],
                 ["evaluate", "--model", str(out / "no-model"), "--limit", limit, "--forms", forms,
                  "--targets", targets, "--out", str(out / "run")]):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            rc = exc.code
        err = capsys.readouterr().err
        assert rc in (0, 1, 2), (argv, rc)
        assert "Traceback" not in err
        if rc == 1:
            assert len(err.strip().splitlines()) == 1, err
