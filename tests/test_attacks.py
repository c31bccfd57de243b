"""Fine-tuning and relearning attacks on tiny models: they train, write an HF directory and a card
that says what was done, and refuse bad input with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ort_bench.attacks import finetune_attack, relearn_attack
from ort_bench.envs import env_hash, load_env
from ort_bench.errors import OrtBenchError

FIX = Path(__file__).parent / "fixtures"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def fixture_kb():
    from ort_bench.facts import load_kb
    from ort_bench.templates import load_templates

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
    from ort_bench.methods.base import Example
    from ort_bench.methods.training import collate, encode_examples, mean_nll, pad_id

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
    card = relearn_attack(str(tiny_llama_dir), ["france"], samples=2, out=tmp_path / "r", steps=2, lr=1e-3,
                          form="qa", progress=False, kb=kb, templates=templates)
    on_disk = json.loads((tmp_path / "r" / "attack_card.json").read_text())
    assert on_disk["attack"] == "relearn" and on_disk["targets"] == ["france"]
    # the fixture has one qa probe for France: asking for 2 uses what there is, and says so
    assert on_disk["samples"] == 1 and len(on_disk["data"]["probe_ids"]) == 1
    assert card["stats"]["steps"] == 2
    several = relearn_attack(str(tiny_llama_dir), ["france"], samples=3, out=tmp_path / "r2", steps=1,
                             form="reverse", progress=False, kb=kb, templates=templates)
    assert several["data"]["form"] == "reverse"
    again = relearn_attack(str(tiny_llama_dir), ["france"], samples=3, out=tmp_path / "r3", steps=1, form="reverse",
                           progress=False, kb=kb, templates=templates)
    assert again["data"]["probe_ids"] == several["data"]["probe_ids"]  # a fixed, seeded choice


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
