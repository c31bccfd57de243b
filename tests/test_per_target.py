"""One checkpoint per target (the ORT/RWKU protocol, issue 21): `unlearn --one-per-target` writes a
checkpoint per target and a manifest; `evaluate --manifest` scores each target's forget probes on its own
checkpoint and utility on every checkpoint (the mean of theirs); submit takes it and checks each card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ort_bench.board.submit import submit
from ort_bench.cli import main
from ort_bench.errors import OrtBenchError
from ort_bench.scoring.evaluate import EvalConfig, evaluate
from ort_bench.scoring.results import read_results
from ort_bench.scoring.shards import merge_shards

TARGETS = ["france", "japan"]
LIMIT = {"forget": 11, "neighbour": 2, "utility": 2}
CONFIG = EvalConfig(max_new_tokens=4, batch_size=8)

pytestmark = pytest.mark.usefixtures("one_torch_thread", "v3_unpinned")


@pytest.fixture(scope="module")
def scored(make_tiny_model, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("per-target")
    ckpts = {"france": make_tiny_model(seed=1), "japan": make_tiny_model(seed=2)}
    original = make_tiny_model(seed=0)
    manifest = root / "manifest.json"
    manifest.write_text(json.dumps({"checkpoints": {t: str(d) for t, d in ckpts.items()}}))
    res = evaluate(None, root / "run", reference=str(original), manifest=manifest, limit=LIMIT, config=CONFIG,
                   progress=False)
    return {"root": root, "ckpts": ckpts, "original": original, "manifest": manifest, "res": res}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "records.jsonl").read_text().splitlines()]


def test_each_target_is_scored_on_its_own_checkpoint(scored):
    res, run = scored["res"], scored["root"] / "run"
    fps = {t: c["fingerprint"] for t, c in res["model"]["checkpoints"].items()}
    assert res["model"]["protocol"] == res["comparison"]["protocol"] == "one_per_target" and len(set(fps.values())) == 2
    model = [r for r in lines(run) if r["role"] == "model"]
    forget = [r for r in model if r["split"] == "forget"]
    assert {r["target"] for r in forget} == set(TARGETS)
    assert all(r["model_fingerprint"] == fps[r["target"]] for r in forget)
    retain = [r for r in model if r["split"] != "forget"]
    for fp in fps.values():  # every checkpoint answered every neighbour and utility probe
        assert sorted(r["probe_id"] for r in retain if r["model_fingerprint"] == fp) == \
            sorted({r["probe_id"] for r in retain})
    assert res["n_probes"] == len([r for r in lines(run) if r["role"] == "reference"])


def test_utility_is_the_mean_of_each_checkpoints_utility(scored):
    """On the run's records with scores set so that the reference knows every item and the two checkpoints
    keep different shares of the retain items (random tiny models know nothing): each checkpoint's utility
    is what a run of that checkpoint alone gives, and the result's is their mean."""
    from ort_bench.benchmark import CURRENT
    from ort_bench.scoring.metrics import ort_score
    from ort_bench.scoring.results import results_from_records

    res = scored["res"]
    fps = {t: c["fingerprint"] for t, c in res["model"]["checkpoints"].items()}
    recs = lines(scored["root"] / "run")
    ref = [{**r, "primary": 1.0} for r in recs if r["role"] == "reference"]
    model = [{**r, "primary": 0.0 if r["model_fingerprint"] == fps["japan"] and r["split"] != "forget"
              and i % 2 else 1.0} for i, r in enumerate(recs) if r["role"] == "model"]
    same = {k: res[k] for k in ("reference", "config", "params_hash", "hashes", "versions")}
    out = results_from_records(CURRENT, model, ref, model=res["model"], n_probes=res["n_probes"],
                               selection=res["selection"], **same)
    per = out["comparison"]["per_target"]
    for target, fp in fps.items():
        mine = [r for r in model if r["model_fingerprint"] == fp]
        ids = {r["probe_id"] for r in mine}
        alone = results_from_records(CURRENT, mine, [r for r in ref if r["probe_id"] in ids], n_probes=len(mine),
                                     model={"spec": target, "kind": "hf_dir", "fingerprint": fp, "role": "model"},
                                     selection={**res["selection"], "targets": [target]}, **same)
        assert per[target]["utility"] == pytest.approx(alone["utility"])
    utilities = [per[t]["utility"] for t in TARGETS]
    assert None not in utilities and utilities[0] > utilities[1]
    assert out["utility"] == pytest.approx(sum(utilities) / 2)
    assert out["ort_score"] == ort_score(out["worst_form_efficacy"], out["utility"])
    assert out["comparison"]["utility_ci_low"] is None and out["comparison"]["n_targets"] == 2


def test_submit_takes_it_and_refuses_a_checkpoint_swapped(scored, tmp_path):
    run = scored["root"] / "run"
    summary = submit(run, "per-target", dry_run=True, root=tmp_path / "lb")
    assert summary["utility"] == pytest.approx(scored["res"]["utility"])
    swapped = tmp_path / "swapped"
    shutil.copytree(run, swapped)
    data = json.loads((swapped / "results.json").read_text())
    ck = data["model"]["checkpoints"]
    ck["france"], ck["japan"] = ck["japan"], ck["france"]
    (swapped / "results.json").write_text(json.dumps(data))
    with pytest.raises(OrtBenchError, match=r"the records of 'france''s checkpoint are not its target's forget"):
        submit(swapped, "swapped", dry_run=True, root=tmp_path / "lb")


def test_shards_of_a_per_target_run_merge_to_it(scored, tmp_path):
    for i in (1, 2):
        evaluate(None, tmp_path / f"s{i}", reference=str(scored["original"]), manifest=scored["manifest"],
                 limit=LIMIT, config=CONFIG, progress=False, shard=(i, 2), reuse=[scored["root"] / "run"])
    merge_shards([tmp_path / "s1", tmp_path / "s2"], tmp_path / "merged")
    assert (tmp_path / "merged" / "records.jsonl").read_bytes() == \
        (scored["root"] / "run" / "records.jsonl").read_bytes()
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert merged["ort_score"] == scored["res"]["ort_score"] and merged["forms"] == scored["res"]["forms"]


@pytest.mark.parametrize("checkpoints, match", [
    ({"atlantis": "."}, r"unknown target 'atlantis'"),
    ({"france": "nowhere"}, r"the checkpoint of 'france' is missing \(.*nowhere\)"),
    ([], r'expected \{"checkpoints"'),
])
def test_a_bad_manifest_is_one_line(checkpoints, match, tmp_path, capsys):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"checkpoints": checkpoints}))
    assert main(["evaluate", "--manifest", str(manifest), "--reference", "embedded", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: manifest ") and "\n" not in err
    with pytest.raises(OrtBenchError, match=match):
        evaluate(None, tmp_path / "r", reference="embedded", manifest=manifest, progress=False)


def test_one_checkpoint_for_two_targets_is_refused(tiny_llama_dir, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"checkpoints": {"france": str(tiny_llama_dir), "japan": str(tiny_llama_dir)}}))
    with pytest.raises(OrtBenchError, match=r"'france' and 'japan' name the same checkpoint"):
        evaluate(None, tmp_path / "r", reference=str(tiny_llama_dir), manifest=manifest, limit=LIMIT, config=CONFIG,
                 progress=False)


def test_a_manifest_needs_a_reference_and_its_own_targets(scored, tmp_path):
    with pytest.raises(OrtBenchError, match=r"needs --reference"):
        evaluate(None, tmp_path / "r", manifest=scored["manifest"], progress=False)
    with pytest.raises(OrtBenchError, match=r"--targets france are not the manifest's targets \(france,japan\)"):
        evaluate(None, tmp_path / "r", reference="embedded", manifest=scored["manifest"], targets=["france"],
                 progress=False)


def test_unlearn_one_per_target_writes_the_checkpoints_and_manifest_and_each_card_is_checked(
        make_tiny_model, tmp_path):
    from ort_bench.board import rederive
    from ort_bench.board.submit import verify_run

    base, out = make_tiny_model(seed=0), tmp_path / "npo"
    assert main(["unlearn", "--method", "ga", "--model", str(base), "--targets", "france,japan", "--one-per-target",
                 "--max-steps", "1", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {"protocol": "one_per_target", "checkpoints": {"france": "france", "japan": "japan"}}
    for t in TARGETS:
        assert json.loads((out / t / "unlearn_card.json").read_text())["targets"] == [t]
    run = tmp_path / "run"
    res = evaluate(None, run, reference=str(base), manifest=out / "manifest.json", limit=LIMIT, config=CONFIG,
                   progress=False)
    assert set(json.loads((run / "unlearn_cards.json").read_text())) == set(TARGETS)
    assert res["selection"]["train_form"] == "qa"
    verified = verify_run(run)
    probes = verified.probes
    # the pinned card check, on this selection (the whole tier takes twenty checkpoints): each card its own target
    full = verified.results.model_copy(update={"selection": {**verified.results.selection, "tier": "full"}})
    rederive.check_card(full, run, probes)
    cards = json.loads((run / "unlearn_cards.json").read_text())
    cards["japan"]["targets"] = TARGETS
    (run / "unlearn_cards.json").write_text(json.dumps(cards))
    refusal = r"unlearn_cards.json \(japan\): the method unlearned \['france', 'japan'\], not its own target \(japan\)"
    with pytest.raises(OrtBenchError, match=refusal):
        rederive.check_card(full, run, probes)
    # a second run keeps the finished checkpoints
    before = (out / "france" / "unlearn_card.json").read_bytes()
    assert main(["unlearn", "--method", "ga", "--model", str(base), "--targets", "france,japan", "--one-per-target",
                 "--max-steps", "1", "--out", str(out)]) == 0
    assert (out / "france" / "unlearn_card.json").read_bytes() == before
    assert read_results(run / "results.json").model.model_dump()["protocol"] == "one_per_target"


def test_audit_rescores_each_record_on_the_checkpoint_that_answered_it(scored, tmp_path):
    """A per-target entry's audit re-scores the sampled records on their own checkpoints; a manifest that
    swaps two targets' checkpoints is caught (the fingerprints no longer match)."""
    from ort_bench.board.audit import audit

    run = scored["root"] / "run"
    report = audit(run, sample=6, seed=1, write=False)
    fps = {c["fingerprint"] for c in scored["res"]["model"]["checkpoints"].values()}
    assert set(report["checkpoints"]) == fps and report["probes"] > 6  # retain items: every checkpoint's record
    swapped = tmp_path / "swapped.json"
    ckpts = scored["ckpts"]
    swapped.write_text(json.dumps({"checkpoints": {"france": str(ckpts["japan"]), "japan": str(ckpts["france"])}}))
    with pytest.raises(OrtBenchError, match="not the checkpoint that was scored"):
        audit(run, sample=6, seed=1, model=str(swapped), write=False)
