"""Fine-tuning and relearning attacks on tiny models: they train, write an HF directory and a card
that says what was done, and refuse bad input with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ort_bench.errors import OrtBenchError
from ort_bench.unlearning.attacks import finetune_attack, relearn_attack
from ort_bench.unlearning.envs import env_hash, load_env

FIX = Path(__file__).parent / "fixtures"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def fixture_kb():
    from ort_bench.kb.facts import load_kb
    from ort_bench.kb.templates import load_templates

    return load_kb(FIX / "kb"), load_templates(FIX / "templates")


def _weights(d):
    return AutoModelForCausalLM.from_pretrained(d).state_dict()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("env", ["math", "sentiment"])
def test_finetune_attack_trains_and_writes_card(arch, env, make_tiny_model, tmp_path):
    d = make_tiny_model(arch)
    out = tmp_path / "attacked"
    card = finetune_attack(str(d), env, steps=3, out=out, batch_size=4, lr=1e-3, progress=False)
    on_disk = json.loads((out / "attack_card.json").read_text())
    assert on_disk["attack"] == "finetune" and on_disk["env"] == env
    assert on_disk["data"]["env_sha256"] == env_hash(load_env(env)) and on_disk["data"]["n"] == 400
    assert on_disk["hyperparameters"]["steps"] == 3 and card["stats"]["steps"] == 3
    assert on_disk["attacked_model"]["fingerprint"]
    history = card["stats"]["history"]
    assert history[-1]["loss"] < history[0]["loss"] * 1.5 and all(h["loss"] > 0 for h in history)
    before, after = _weights(d), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(d).chat_template


def test_finetune_lowers_the_environment_loss(tiny_llama_dir, tmp_path):
    from ort_bench.unlearning.methods.base import Example
    from ort_bench.unlearning.methods.training import collate, encode_examples, mean_nll, pad_id

    finetune_attack(str(tiny_llama_dir), "sentiment", steps=15, out=tmp_path / "a", batch_size=8, lr=3e-3,
                    progress=False)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    items = load_env("sentiment")[:16]
    batch = collate(encode_examples(tok, [Example(i.prompt, i.answer) for i in items], 128), pad_id(tok))
    with torch.no_grad():
        before = float(mean_nll(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), batch))
        after = float(mean_nll(AutoModelForCausalLM.from_pretrained(tmp_path / "a"), batch))
    assert after < before - 1.0


def test_relearn_attack_uses_k_forget_samples(tiny_llama_dir, fixture_kb, tmp_path):
    kb, templates = fixture_kb
    card = relearn_attack(str(tiny_llama_dir), ["france"], samples=3, out=tmp_path / "r", steps=2, lr=1e-3,
                          form="qa", progress=False, kb=kb, templates=templates)
    on_disk = json.loads((tmp_path / "r" / "attack_card.json").read_text())
    assert on_disk["attack"] == "relearn" and on_disk["targets"] == ["france"]
    # the fixture has two qa probes for France (t-qa, t-qa-train): asking for 3 uses what there is, and says so
    assert on_disk["samples"] == 2 and len(on_disk["data"]["probe_ids"]) == 2
    assert card["stats"]["steps"] == 2
    several = relearn_attack(str(tiny_llama_dir), ["france"], samples=3, out=tmp_path / "r2", steps=1,
                             form="reverse", progress=False, kb=kb, templates=templates)
    assert several["data"]["form"] == "reverse"
    again = relearn_attack(str(tiny_llama_dir), ["france"], samples=3, out=tmp_path / "r3", steps=1, form="reverse",
                           progress=False, kb=kb, templates=templates)
    assert again["data"]["probe_ids"] == several["data"]["probe_ids"]  # a fixed, seeded choice
    # probes that will be scored are never drawn (the fixture's two true/false probes of France)
    both = relearn_attack(str(tiny_llama_dir), ["france"], samples=2, out=tmp_path / "r4", steps=1,
                          form="true_false", progress=False, kb=kb, templates=templates)["data"]["probe_ids"]
    left = relearn_attack(str(tiny_llama_dir), ["france"], samples=2, out=tmp_path / "r6", steps=1,
                          form="true_false", progress=False, kb=kb, templates=templates,
                          exclude_probe_ids={both[0]})["data"]["probe_ids"]
    assert len(both) == 2 and left == [both[1]]
    with pytest.raises(OrtBenchError, match="no qa probes for targets france outside the excluded ones"):
        relearn_attack(str(tiny_llama_dir), ["france"], samples=1, out=tmp_path / "r5", steps=1, form="qa",
                       progress=False, kb=kb, templates=templates, exclude_probe_ids=set(on_disk["data"]["probe_ids"]))


def test_attack_errors(tiny_llama_dir, fixture_kb, tmp_path):
    kb, templates = fixture_kb
    with pytest.raises(OrtBenchError, match=r"unknown fine-tuning environment 'poetry' \(choose from math, sentim"):
        finetune_attack(str(tiny_llama_dir), "poetry", steps=1, out=tmp_path / "a")
    with pytest.raises(OrtBenchError, match="steps must be at least 1"):
        finetune_attack(str(tiny_llama_dir), "math", steps=0, out=tmp_path / "a")
    with pytest.raises(OrtBenchError, match="samples must be at least 1"):
        relearn_attack(str(tiny_llama_dir), ["france"], samples=0, out=tmp_path / "a", kb=kb, templates=templates)
    with pytest.raises(OrtBenchError, match=r"unknown target 'atlantis'"):
        relearn_attack(str(tiny_llama_dir), ["atlantis"], samples=1, out=tmp_path / "a", kb=kb, templates=templates)
    with pytest.raises(OrtBenchError, match="no such model directory or file"):
        finetune_attack(str(tmp_path / "missing"), "math", steps=1, out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_save_at_keeps_the_run_s_intermediate_models(tiny_llama_dir, tmp_path):
    out = tmp_path / "attacked"
    card = finetune_attack(str(tiny_llama_dir), "math", steps=2, out=out, batch_size=4, lr=1e-3, progress=False,
                           save_at=(1,))
    step = out / "step-1"
    assert (step / "attack_card.json").is_file() and (step / "model.safetensors").is_file()
    step_card = json.loads((step / "attack_card.json").read_text())
    assert step_card["steps"] == 1 and step_card["of_run_steps"] == 2
    assert step_card["hyperparameters"]["checkpoint_step"] == 1 and step_card["hyperparameters"]["steps"] == 2
    assert step_card["data"] == card["data"] and step_card["env"] == "math"
    assert step_card["stats"]["history"] == card["stats"]["history"][:1]
    assert card["steps"] == 2 and card["intermediate_checkpoints"] == {"step-1": 1}
    assert json.loads((out / "attack_card.json").read_text())["intermediate_checkpoints"] == {"step-1": 1}
    before, mid, after = _weights(tiny_llama_dir), _weights(step), _weights(out)
    assert any(not torch.equal(before[k], mid[k]) for k in before)
    assert any(not torch.equal(mid[k], after[k]) for k in mid)
    # saving along the way changes nothing in the run: the final model is that of a run without save_at
    finetune_attack(str(tiny_llama_dir), "math", steps=2, out=tmp_path / "plain", batch_size=4, lr=1e-3,
                    progress=False)
    plain = _weights(tmp_path / "plain")
    assert all(torch.equal(plain[k], after[k]) for k in plain)
    assert not list(tmp_path.glob(".*tmp-*"))  # no staging folder left behind


def test_cli_save_at_is_a_state_of_the_full_run(tiny_llama_dir, tmp_path, capsys):
    from ort_bench.cli import main

    args = ["attack", "finetune", "--model", str(tiny_llama_dir), "--env", "sentiment", "--batch-size", "4",
            "--lr", "1e-3"]
    assert main([*args, "--steps", "3", "--save-at", "2,1,2", "--out", str(tmp_path / "a")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["intermediate_checkpoints"] == {"step-1": 1, "step-2": 2}
    assert main([*args, "--steps", "2", "--out", str(tmp_path / "two")]) == 0
    # step 2 of a 3-step run had a higher learning rate at its second step than a 2-step run had
    mid, two = _weights(tmp_path / "a" / "step-2"), _weights(tmp_path / "two")
    assert any(not torch.equal(mid[k], two[k]) for k in mid)


@pytest.mark.parametrize("save_at, message", [
    ((0,), r"save_at: step 0 is outside 1\.\.1 "),
    ((2,), r"save_at: step 2 is outside 1\.\.1 \(the attack runs 2 steps"),
    ((1.5,), r"save_at: 1\.5 is not a whole number of steps"),
])
def test_bad_save_at_is_one_line(save_at, message, tiny_llama_dir, fixture_kb, tmp_path):
    kb, templates = fixture_kb
    with pytest.raises(OrtBenchError, match=message) as err:
        finetune_attack(str(tiny_llama_dir), "math", steps=2, out=tmp_path / "a", save_at=save_at, progress=False)
    assert "\n" not in str(err.value)
    with pytest.raises(OrtBenchError, match=message):
        relearn_attack(str(tiny_llama_dir), ["france"], samples=1, out=tmp_path / "a", steps=2, save_at=save_at,
                       progress=False, kb=kb, templates=templates)
    assert not (tmp_path / "a").exists()


def test_cli_bad_save_at(tiny_llama_dir, tmp_path, capsys):
    from ort_bench.cli import main

    args = ["attack", "finetune", "--model", str(tiny_llama_dir), "--env", "math", "--out", str(tmp_path / "a")]
    assert main([*args, "--steps", "3", "--save-at", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: save_at: step 3 is outside 1..2 (the attack runs 3 steps; the final model is the " \
                  "output folder itself)"
    with pytest.raises(SystemExit):
        main([*args, "--steps", "3", "--save-at", "0"])
    assert "'0': must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_ilu_robustness_script_plumbing(tiny_llama_dir, tmp_path, capsys):
    """scripts/ilu_robustness.py end to end on a tiny model (which knows nothing: no form has an
    efficacy, and the table says so), then resumed (nothing redone) and asked for its table."""
    import importlib.util

    path = Path(__file__).parents[1] / "scripts" / "ilu_robustness.py"
    spec = importlib.util.spec_from_file_location("ilu_robustness", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.checkpoint_steps(20, 10) == list(range(2, 21, 2)) and script.checkpoint_steps(2, 1) == [2]
    out = tmp_path / "exp"
    argv = ["--model", str(tiny_llama_dir), "--out", str(out), "--configs", "npo", "--seeds", "0", "--steps", "1",
            "--attack-steps", "2", "--checkpoints", "2", "--targets", "japan", "--forms", "qa", "--limit",
            "forget=3"]
    assert script.main(argv) == 0
    root = out / "seed-0" / "npo"
    for attack in script.ATTACKS:
        card = json.loads((root / attack / "model" / "step-1" / "attack_card.json").read_text())
        assert card["steps"] == 1 and card["of_run_steps"] == 2
        assert not list((root / attack / "model").glob("*.safetensors"))  # scored, then pruned
        assert all((root / attack / f"eval-step-{n}" / "results.json").is_file() for n in (1, 2))
    data = json.loads((out / "ilu_robustness.json").read_text())
    assert data["checkpoint_steps"] == [0, 1, 2] and data["forms_measured"] == []
    assert "qa" in data["forms_not_measurable"]
    assert set(data["runs"]["npo"]) == set(script.ATTACKS)
    assert "No form has an efficacy" in (out / "ilu_robustness.md").read_text()
    capsys.readouterr()
    assert script.main(argv) == 0  # resumed: every step found done
    log = capsys.readouterr().out
    assert "already unlearned" in log and "attacking" not in log and "scoring /" not in log
    assert script.main([*argv, "--table"]) == 0
