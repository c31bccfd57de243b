"""`evaluate --shard I/N` and `merge`: two shards merged are the single-process run, and submit takes them;
a shard given twice or missing, overlapping records and mixed runs are refused in one line (issue 21)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ort_bench.board.submit import submit
from ort_bench.cli import main
from ort_bench.errors import OrtBenchError
from ort_bench.scoring.evaluate import EvalConfig, evaluate
from ort_bench.scoring.shards import items_in_order, merge_shards, parse_shard, shard_probes

TARGETS = ["france", "japan", "william_shakespeare"]
LIMIT = {"forget": 11, "neighbour": 2, "utility": 2}  # one item per form: every form covered, seconds on a tiny model
CONFIG = EvalConfig(max_new_tokens=4, batch_size=8)
# what differs between two runs of the same numbers: when they ran, and how long each model took
NOT_NUMBERS = ("created_at", "model", "reference")

pytestmark = pytest.mark.usefixtures("one_torch_thread", "v3_unpinned")


def run(model: Path, out: Path, reference: Path, **kw) -> dict:
    return evaluate(str(model), out, reference=str(reference), targets=TARGETS, limit=LIMIT,
                    config=kw.pop("config", CONFIG), progress=False, **kw)


@pytest.fixture(scope="module")
def runs(make_tiny_model, tmp_path_factory) -> dict[str, Path]:
    unlearned, original = make_tiny_model(seed=1), make_tiny_model(seed=0)
    root = tmp_path_factory.mktemp("shards")
    run(unlearned, root / "single", original)
    for i in (1, 2):
        run(unlearned, root / f"s{i}", original, shard=(i, 2))
    return {"single": root / "single", "s1": root / "s1", "s2": root / "s2", "root": root,
            "unlearned": unlearned, "original": original}


def numbers(path: Path) -> dict:
    data = json.loads((path / "results.json").read_text())
    return {k: v for k, v in data.items() if k not in NOT_NUMBERS}


def close(a, b) -> bool:
    """Equal, floats to 1e-4 relative: a shard batches other prompts together, and a padded float32 batch
    moves a log-likelihood in its sixth digit (every decision and output stays the same)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-4, abs=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def records(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "record_sha256"}
            for line in (path / "records.jsonl").read_text().splitlines()]


def test_two_shards_merged_are_the_single_run_and_submit_takes_them(runs, tmp_path):
    merged = tmp_path / "merged"
    merge_shards([runs["s2"], runs["s1"]], merged)  # in any order
    assert close(numbers(merged), numbers(runs["single"]))
    assert close(records(merged), records(runs["single"]))  # same records, in the same order
    single = json.loads((runs["single"] / "results.json").read_text())
    res = json.loads((merged / "results.json").read_text())
    assert res["model"]["fingerprint"] == single["model"]["fingerprint"] and res["model"]["shards"] == 2
    summary = submit(merged, "merged", dry_run=True, root=tmp_path / "lb")
    assert summary["worst_form"] == single["worst_form"]


def test_shards_of_the_same_answers_merge_to_the_same_bytes(runs, tmp_path):
    """With the single run's answers lent (`reuse`), the merged run is that run exactly."""
    for i in (1, 2):
        run(runs["unlearned"], tmp_path / f"s{i}", runs["original"], shard=(i, 2), reuse=[runs["single"]])
    merge_shards([tmp_path / "s1", tmp_path / "s2"], tmp_path / "merged")
    assert numbers(tmp_path / "merged") == numbers(runs["single"])
    assert (tmp_path / "merged" / "records.jsonl").read_bytes() == (runs["single"] / "records.jsonl").read_bytes()


def test_shards_split_items_and_say_which_shard_they_are(runs):
    s1, s2 = (json.loads((runs[s] / "results.json").read_text()) for s in ("s1", "s2"))
    single = json.loads((runs["single"] / "results.json").read_text())
    assert s1["selection"]["shard"]["index"] == 1 and s2["selection"]["shard"]["count"] == 2
    assert s1["selection"]["shard"]["probes_sha256"] == single["hashes"]["probes_sha256"]
    assert s1["n_probes"] + s2["n_probes"] == single["n_probes"]


def test_slices_keep_items_whole():
    from ort_bench.scoring.selection import select_probes

    probes, _ = select_probes(targets=TARGETS, limit=LIMIT)
    items = items_in_order(probes)
    parts = [shard_probes(probes, (i, 3)) for i in (1, 2, 3)]
    assert sorted(p.id for part in parts for p in part) == sorted(p.id for p in probes)
    for i, part in enumerate(parts):
        assert [p.id for p in part] == [p.id for k, item in enumerate(items) if k % 3 == i for p in item]


@pytest.mark.parametrize("spec", ["3/2", "a/b", "0/2", "1/0", "2"])
def test_a_bad_shard_spec_is_one_line(spec, capsys):
    with pytest.raises(OrtBenchError) as info:
        parse_shard(spec)
    assert "\n" not in str(info.value)
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", "embedded", "--shard", spec, "--out", "x"])
    assert "argument --shard: shard" in capsys.readouterr().err


def refused(dirs: list[Path], out: Path, match: str) -> None:
    with pytest.raises(OrtBenchError, match=match) as info:
        merge_shards(dirs, out)
    assert "\n" not in str(info.value)


def test_a_missing_shard_is_refused(runs, tmp_path):
    refused([runs["s1"]], tmp_path / "m", r"s1: shard 2/2 is missing \(given: 1/2\)")


def test_a_shard_given_twice_is_refused(runs, tmp_path):
    refused([runs["s1"], runs["s1"], runs["s2"]], tmp_path / "m", r"shard 1/2 again")


def test_overlapping_shards_are_refused(runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(runs["s1"], other)
    data = json.loads((other / "results.json").read_text())
    data["selection"]["shard"]["index"] = 2
    (other / "results.json").write_text(json.dumps(data))
    refused([runs["s1"], other], tmp_path / "m", r"other: holds probe .* that .*s1 holds too \(overlapping shards\)")


def test_a_shard_of_another_model_is_refused(runs, make_tiny_model, tmp_path):
    other = tmp_path / "other"
    run(make_tiny_model(seed=2), other, runs["original"], shard=(2, 2))
    refused([runs["s1"], other], tmp_path / "m", r"other: model fingerprint differs from .*s1's")


def test_a_shard_with_other_parameters_is_refused(runs, tmp_path):
    other = tmp_path / "other"
    run(runs["unlearned"], other, runs["original"], shard=(2, 2), config=EvalConfig(max_new_tokens=3, batch_size=8))
    refused([runs["s1"], other], tmp_path / "m", r"other: params_hash differs from .*s1's")


def test_a_single_shard_is_not_submitted(runs, tmp_path):
    with pytest.raises(OrtBenchError, match=r"shard 1/2 of a run: join the shards with `ort-bench merge`"):
        submit(runs["s1"], "s1", dry_run=True, root=tmp_path / "lb")


def test_merge_from_the_command_line(runs, tmp_path, capsys):
    assert main(["merge", str(runs["s1"]), str(runs["s2"]), "--out", str(tmp_path / "m")]) == 0
    assert "worst-form efficacy" in capsys.readouterr().out
    assert main(["merge", str(runs["s1"]), "--out", str(tmp_path / "m2")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "shard 2/2 is missing" in err and "\n" not in err
