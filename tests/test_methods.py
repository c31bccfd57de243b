"""Unlearning methods on tiny random models of two architectures (Llama-style and GPT-2-style).

Each tiny model is first fitted to ten capital-city QA pairs (25 steps), so that every answer is
likely; then each method unlearns two of them. "Moves the right way" means, for answer NLL in
nats per token: the forget NLL rises by at least 0.4, and the retain NLL (the other eight pairs)
rises by at most 0.25 and by less than 40% of the forget NLL's rise. The learning rates are tiny-
model scale (1e-3, RMU 1e-2 with alpha 10 and c 30: RMU's published alpha 1200 and c 6.5 are for
7B activations), not the published defaults, which the CLI test checks.
"""

from __future__ import annotations

import argparse
import copy
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ort_bench.errors import OrtBenchError
from ort_bench.unlearning.methods import (
    METHODS,
    Example,
    UnlearnData,
    add_method_arguments,
    config_from_args,
    get_method,
    make_config,
)
from ort_bench.unlearning.methods.npo import npo_loss
from ort_bench.unlearning.methods.simnpo import simnpo_loss
from ort_bench.unlearning.methods.training import (
    Batches,
    TrainConfig,
    collate,
    encode_example,
    encode_examples,
    mean_nll,
    pad_id,
    sequence_nll,
    train_loop,
)

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
            ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Brazil", "Brasilia"), ("Kenya", "Nairobi"), ("Norway", "Oslo")]
FORGET = [Example(f"What is the capital of {s}?", o) for s, o in CAPITALS[:2]]
RETAIN = [Example(f"What is the capital of {s}?", o) for s, o in CAPITALS[2:]]

FORGET_RISE_MIN = 0.4
RETAIN_RISE_MAX = 0.25
RETAIN_SHARE_MAX = 0.4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def answer_nll(model, tokenizer, examples) -> float:
    batch = collate(encode_examples(tokenizer, examples, 64), pad_id(tokenizer))
    with torch.no_grad():
        return float(mean_nll(model, batch))


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def fitted(request, make_tiny_model):
    """(arch, model fitted to all ten pairs, tokenizer)."""
    d = make_tiny_model(request.param)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    batches = Batches(encode_examples(tok, FORGET + RETAIN, 64), 10, pad_id(tok), 0)
    train_loop(model, list(model.parameters()), lambda _i: (mean_nll(model, next(batches)), {}),
               TrainConfig(lr=1e-2, max_steps=25, warmup_ratio=0.0), progress=False)
    assert answer_nll(model, tok, FORGET + RETAIN) < 0.3
    return request.param, model, tok


CASES = {
    "ga": ("ga", {"lr": 1e-3}),
    "graddiff": ("graddiff", {"lr": 1e-3}),
    "graddiff-kl": ("graddiff", {"lr": 1e-3, "retain_loss": "kl"}),
    "npo": ("npo", {"lr": 1e-3}),
    "npo-kl": ("npo", {"lr": 1e-3, "retain_loss": "kl"}),
    "simnpo": ("simnpo", {"lr": 2e-3}),
    "rmu": ("rmu", {"lr": 1e-2, "layer": 1, "alpha": 10.0, "steering_coeff": 30.0, "max_steps": 30}),
    "ilu-npo": ("ilu", {"ilu_lambda": 0.01, "base": {"lr": 1e-3}}),
    "ilu-rmu": ("ilu", {"base_method": "rmu", "ilu_lambda": 0.01,
                        "base": {"lr": 1e-2, "layer": 1, "alpha": 10.0, "steering_coeff": 30.0, "max_steps": 30}}),
    "ilu-gradnorm": ("ilu", {"ilu_penalty": "gradnorm", "ilu_lambda": 0.001, "base": {"lr": 1e-3}}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_loss_moves_the_right_way(fitted, case):
    arch, base_model, tok = fitted
    method, cfg = CASES[case]
    steps = {"max_steps": 8} if "max_steps" not in json.dumps(cfg) else {}
    config = make_config(method, cfg, **steps)
    model = copy.deepcopy(base_model)
    f0, r0 = answer_nll(model, tok, FORGET), answer_nll(model, tok, RETAIN)
    stats = get_method(method)(config).apply(model, tok, UnlearnData(FORGET, RETAIN), progress=False)
    f1, r1 = answer_nll(model, tok, FORGET), answer_nll(model, tok, RETAIN)
    assert stats["steps"] == stats["history"][-1]["step"] > 0
    assert all(math.isfinite(h["loss"]) for h in stats["history"])
    rise_f, rise_r = f1 - f0, r1 - r0
    assert rise_f >= FORGET_RISE_MIN, f"{arch} {case}: forget NLL {f0:.3f} -> {f1:.3f}"
    assert rise_r <= RETAIN_RISE_MAX, f"{arch} {case}: retain NLL {r0:.3f} -> {r1:.3f}"
    assert rise_r < RETAIN_SHARE_MAX * rise_f, f"{arch} {case}: forget +{rise_f:.3f}, retain +{rise_r:.3f}"


def test_rmu_updates_only_mlp_weights_of_layers_l_minus_2_to_l(make_tiny_model):
    d = make_tiny_model("llama", num_hidden_layers=4)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = make_config("rmu", {"layer": 3, "lr": 1e-2, "alpha": 10.0, "steering_coeff": 30.0}, max_steps=2)
    get_method("rmu")(cfg).apply(model, tok, UnlearnData(FORGET, RETAIN), progress=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"model.layers.{i}.mlp.down_proj.weight" for i in (1, 2, 3)}
    assert all(p.requires_grad for p in model.parameters())  # flags restored
    with pytest.raises(OrtBenchError, match=r"rmu: layer 7 is out of range: the model has 4 layers"):
        get_method("rmu")(make_config("rmu", max_steps=1)).apply(model, tok, UnlearnData(FORGET, RETAIN), False)


# ----------------------------------------------------------------------------- NPO by hand


def test_npo_loss_matches_hand_computed_values():
    nll = torch.tensor([2.0, 3.0], dtype=torch.float64)
    ref = torch.tensor([1.0, 1.0], dtype=torch.float64)
    # -(2/beta) * mean(log sigmoid(beta * (nll - ref))), beta = 0.1:
    # log sigmoid(0.1) = -0.6443966600735709, log sigmoid(0.2) = -0.5981388693815918
    expected = -(2 / 0.1) * (-0.6443966600735709 - 0.5981388693815918) / 2
    assert float(npo_loss(nll, ref, 0.1)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(12.425355294551627, rel=1e-12)
    # at theta = ref the loss is (2/beta) log 2 whatever the NLL
    assert float(npo_loss(ref, ref, 0.5)) == pytest.approx(4 * math.log(2), rel=1e-12)
    # SimNPO with gamma = 0: length-normalised, NLL 6 over 3 tokens, beta 2.5
    got = simnpo_loss(torch.tensor([6.0], dtype=torch.float64), torch.tensor([3]), 2.5, 0.0)
    assert float(got) == pytest.approx(-(2 / 2.5) * math.log(1 / (1 + math.exp(-2.5 * 2.0))), rel=1e-12)


def test_simnpo_margin_is_subtracted_after_beta_as_in_the_paper():
    """L = -(2/beta) mean log sigmoid(beta * NLL/|y| - gamma) (arXiv:2410.07163), not
    beta * (NLL/|y| - gamma) (open-unlearning's delta placement, where delta = gamma/beta)."""
    nll = torch.tensor([6.0, 2.0], dtype=torch.float64)
    n = torch.tensor([3, 4])
    beta, gamma = 2.5, 1.5
    # by hand: per-token NLLs 2.0 and 0.5; beta*x - gamma = 3.5 and -0.25
    by_hand = -(2 / beta) * (math.log(1 / (1 + math.exp(-3.5))) + math.log(1 / (1 + math.exp(0.25)))) / 2
    assert float(simnpo_loss(nll, n, beta, gamma)) == pytest.approx(by_hand, rel=1e-12)
    # the other placement, beta*(x - gamma) = 1.25 and -2.5, is a different number ...
    inside = -(2 / beta) * (math.log(1 / (1 + math.exp(-1.25))) + math.log(1 / (1 + math.exp(2.5)))) / 2
    assert abs(by_hand - inside) > 0.5
    assert float(simnpo_loss(nll, n, beta, gamma)) != pytest.approx(inside, rel=1e-3)
    # ... and the same number once its margin is delta = gamma/beta (open-unlearning's placement)
    delta = gamma / beta
    assert float(simnpo_loss(nll, n, beta, gamma)) == pytest.approx(
        -(2 / beta) * torch.nn.functional.logsigmoid(beta * (nll / n - delta)).mean().item(), rel=1e-12)
    # a larger margin is a larger loss (the NLL must exceed gamma/beta before the loss saturates)
    assert float(simnpo_loss(nll, n, beta, 3.0)) > float(simnpo_loss(nll, n, beta, gamma))


def test_npo_forget_term_matches_formula_on_a_model(make_tiny_model):
    """NPO's loss on a batch equals the formula evaluated on NLLs computed independently from the
    logits (log-softmax and gather over the answer tokens), against the NLLs before the first step."""
    d = make_tiny_model("llama")
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64)
    npo = get_method("npo")(make_config("npo", {"beta": 0.5, "alpha": 0.0}))
    npo.forget_items = encode_examples(tok, FORGET, 64)
    npo.setup(model, tok, UnlearnData(FORGET, RETAIN))
    ref = [it["ref_nll"] for it in npo.forget_items]
    with torch.no_grad():  # move theta away from the reference
        for p in model.parameters():
            p.mul_(1.05)
    batch = collate(npo.forget_items, pad_id(tok))
    retain = collate(encode_examples(tok, RETAIN[:2], 64), pad_id(tok))
    loss, _ = npo.loss(model, batch, retain)
    manual = []
    for ex in FORGET:
        enc = encode_example(tok, ex, 64)
        ids = torch.tensor([enc["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
        manual.append(-sum(float(logp[t - 1, enc["input_ids"][t]]) for t, lab in enumerate(enc["labels"])
                           if lab != -100))
    log_sig = [math.log(1 / (1 + math.exp(-0.5 * (m - r)))) for m, r in zip(manual, ref, strict=True)]
    expected = -(2 / 0.5) * sum(log_sig) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-9)
    seq, n = sequence_nll(model, batch)
    assert seq.tolist() == pytest.approx(manual, rel=1e-9)
    assert n.tolist() == [sum(1 for x in encode_example(tok, ex, 64)["labels"] if x != -100) for ex in FORGET]


def test_answer_only_labels_and_left_truncation(tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    enc = encode_example(tok, Example("What is the capital of France?", "Paris"), 64)
    answer = [t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != -100]
    assert tok.decode(answer) == "Paris"
    assert enc["labels"][: enc["prompt_start"]] == [-100] * enc["prompt_start"]
    assert tok.decode(enc["input_ids"][enc["prompt_start"]:]).startswith("What is")
    short = encode_example(tok, Example("What is the capital of France?", "Paris"), 6)
    assert len(short["input_ids"]) == 6 and short["input_ids"][-len(answer):] == answer


# ----------------------------------------------------------------------------- configs and CLI


def test_every_method_registered_with_published_defaults():
    assert list(METHODS) == ["ga", "graddiff", "ilu", "npo", "rmu", "rocr", "simnpo"]
    assert make_config("npo").beta == 0.1 and make_config("npo").lr == 1e-5
    assert make_config("simnpo").beta == 2.5 and make_config("simnpo").gamma == 0.0
    rmu = make_config("rmu")
    assert (rmu.layer, rmu.steering_coeff, rmu.alpha, rmu.lr) == (7, 6.5, 1200.0, 5e-5)
    assert make_config("ga").lr == make_config("graddiff").lr == 1e-5
    ilu = make_config("ilu")
    assert (ilu.base_method, ilu.ilu_penalty, ilu.ilu_envs, ilu.ilu_lambda) == ("npo", "irm", ("math",), 100.0)
    assert make_config("ilu", {"ilu_penalty": "gradnorm"}).ilu_lambda == 0.01  # another scale, another default
    assert isinstance(make_config("ilu", {"base_method": "rmu"}).base, type(rmu))


def test_cli_options_round_trip():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)  # the lead's parser may own some options already
    add_method_arguments(p)
    args = p.parse_args(["--method", "npo", "--npo-beta", "0.2", "--lr", "3e-5", "--seed", "4"])
    cfg = config_from_args(args)
    assert (cfg.beta, cfg.lr, cfg.seed, cfg.max_steps) == (0.2, 3e-5, 4, 20)
    args = p.parse_args(["--method", "rmu"])
    assert config_from_args(args).lr == 5e-5  # --lr unset: the method's own default
    args = p.parse_args(["--method", "ilu", "--base-method", "rmu", "--rmu-layer", "3", "--ilu-lambda", "5",
                         "--ilu-envs", "math,sentiment", "--max-steps", "7"])
    cfg = config_from_args(args)
    assert (cfg.base_method, cfg.ilu_lambda, cfg.ilu_envs) == ("rmu", 5.0, ("math", "sentiment"))
    assert (cfg.base.layer, cfg.base.max_steps, cfg.base.lr) == (3, 7, 5e-5)
    args = p.parse_args(["--method", "simnpo", "--simnpo-gamma", "1.5", "--simnpo-beta", "3"])
    assert (config_from_args(args).gamma, config_from_args(args).beta) == (1.5, 3.0)
    with pytest.raises(SystemExit):  # the old name of the margin is gone, not silently ignored
        p.parse_args(["--method", "simnpo", "--simnpo-delta", "0.5"])
    args = p.parse_args(["--method", "rocr", "--rocr-layers", "1,2", "--rocr-unrelated-subject", "Kenya"])
    cfg = config_from_args(args)
    assert (cfg.layers, cfg.unrelated_subject, cfg.l2) == ("1,2", "Kenya", 1.0)
    help_text = p.format_help()
    for flag in ("--npo-beta", "--simnpo-gamma", "--rmu-steering-coeff", "--graddiff-alpha", "--ilu-penalty",
                 "--base-method", "--rocr-nullspace-threshold", "--max-steps"):
        assert flag in help_text
    with pytest.raises(SystemExit):
        p.parse_args(["--method", "nope"])


def test_bad_configs_are_one_line_errors():
    with pytest.raises(OrtBenchError, match="unknown method 'nope'"):
        get_method("nope")
    with pytest.raises(OrtBenchError, match="unknown hyperparameter 'gamma' for method npo"):
        make_config("npo", {"gamma": 1})
    with pytest.raises(OrtBenchError, match="unknown hyperparameter 'delta' for method simnpo"):
        make_config("simnpo", {"delta": 0.1})  # renamed gamma (the paper's margin; delta = gamma/beta)
    with pytest.raises(OrtBenchError, match="retain_loss must be one of nll, kl"):
        make_config("npo", {"retain_loss": "mse"})
    with pytest.raises(OrtBenchError, match="unknown fine-tuning environment 'poetry'"):
        make_config("ilu", {"ilu_envs": ["poetry"]})
    with pytest.raises(OrtBenchError, match="bad value 'x'"):
        make_config("npo", {"beta": "x"})


# ----------------------------------------------------------------------------- the unlearn API


@pytest.fixture()
def fixture_kb():
    from pathlib import Path

    from ort_bench.kb.facts import load_kb
    from ort_bench.kb.templates import load_templates

    fix = Path(__file__).parent / "fixtures"
    return load_kb(fix / "kb"), load_templates(fix / "templates")


@pytest.mark.parametrize("method", ["ga", "graddiff", "npo", "simnpo", "rmu", "ilu", "rocr"])
def test_unlearn_writes_a_checkpoint_and_card(method, tiny_llama_dir, fixture_kb, tmp_path):
    from ort_bench.unlearning.unlearn import unlearn

    kb, templates = fixture_kb
    cfg = {"rmu": {"layer": 1}, "ilu": {"base_method": "rmu", "base": {"layer": 1}},
           "rocr": {"nullspace_threshold": 1e9}}.get(method)  # a random tiny model's keys: no small eigenvalue
    out = tmp_path / "out"
    card = unlearn(method, str(tiny_llama_dir), ["france"], out, config=cfg, max_steps=2, progress=False,
                   kb=kb, templates=templates)
    on_disk = json.loads((out / "unlearn_card.json").read_text())
    assert on_disk["method"] == card["method"] == method
    assert on_disk["hyperparameters"] == card["hyperparameters"]
    assert on_disk["base_model"]["fingerprint"] and on_disk["base_model"]["kind"] == "hf_dir"
    from ort_bench.kb.render import render_probes

    retain_train = [p for split, tg in (("neighbour", ["france"]), ("utility", None))
                    for p in render_probes(kb, templates, split, ["qa"], targets=tg, retain="train")[0]]
    assert on_disk["data"]["forget"]["n"] == 1 and on_disk["data"]["retain"]["n"] == len(retain_train) > 0
    assert len(retain_train) < 6  # the retain-eval half is held out
    assert on_disk["data"]["forget"]["sha256"] and on_disk["data"]["kb_sha256"] == kb.content_hash
    assert on_disk["wall_seconds"] > 0 and "torch" in on_disk["versions"]
    if method == "ilu":
        assert set(on_disk["data"]["ilu_envs"]) == {"math"} and on_disk["data"]["ilu_envs"]["math"]["n"] == 400
    if method != "rocr":
        base = card["hyperparameters"].get("base", card["hyperparameters"])
        assert base["max_steps"] == 2 and card["stats"]["steps"] == 2
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template  # the chat template travels with the checkpoint
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    after, before = reloaded.state_dict(), original.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in before)


def test_unlearn_errors(tiny_llama_dir, fixture_kb, tmp_path):
    from ort_bench.unlearning.unlearn import unlearn

    kb, templates = fixture_kb
    with pytest.raises(OrtBenchError, match=r"^unknown method 'forgetall' \(choose from ga, "):
        unlearn("forgetall", str(tiny_llama_dir), ["france"], tmp_path / "a", kb=kb, templates=templates)
    with pytest.raises(OrtBenchError, match=r"^unknown target 'atlantis' \(see data/targets.yaml\)$"):
        unlearn("ga", str(tiny_llama_dir), ["atlantis"], tmp_path / "a", kb=kb, templates=templates)
    with pytest.raises(OrtBenchError, match="unknown form 'poem'"):
        unlearn("ga", str(tiny_llama_dir), ["france"], tmp_path / "a", train_form="poem", kb=kb, templates=templates)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(OrtBenchError, match="is not empty and is not an ort-bench checkpoint"):
        unlearn("ga", str(tiny_llama_dir), ["france"], busy, kb=kb, templates=templates)
    assert (busy / "notes.txt").read_text() == "mine"


def test_unlearn_is_deterministic_and_replaces_its_own_output(tiny_gpt2_dir, fixture_kb, tmp_path):
    from safetensors.torch import load_file

    from ort_bench.unlearning.unlearn import unlearn

    kb, templates = fixture_kb
    unlearn("npo", str(tiny_gpt2_dir), ["france"], tmp_path / "a", max_steps=3, seed=1, progress=False, kb=kb,
            templates=templates)
    unlearn("npo", str(tiny_gpt2_dir), ["france"], tmp_path / "b", max_steps=3, seed=1, progress=False, kb=kb,
            templates=templates)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    unlearn("ga", str(tiny_gpt2_dir), ["france"], tmp_path / "a", max_steps=1, progress=False, kb=kb,
            templates=templates)  # an earlier ort-bench output is replaced
    assert json.loads((tmp_path / "a" / "unlearn_card.json").read_text())["method"] == "ga"
