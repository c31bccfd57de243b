"""ILU's invariance penalty: its gradient in the parameters agrees with finite differences (float64),
the IRM penalty equals its closed form, and the fine-tuning environments it uses are deterministic,
correct data."""

from __future__ import annotations

import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ort_bench.errors import OrtBenchError
from ort_bench.paths import REPO_ROOT
from ort_bench.unlearning.envs import ENVS, N_ITEMS, env_hash, env_path, generate_env, load_env
from ort_bench.unlearning.methods.base import Example
from ort_bench.unlearning.methods.ilu import gradnorm_penalty, irm_penalty
from ort_bench.unlearning.methods.training import collate, encode_examples, pad_id, token_nll

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def env_batch(tok, n=3):
    items = load_env("math")[:n]
    return collate(encode_examples(tok, [Example(it.prompt, it.answer) for it in items], 96), pad_id(tok))


def model64(d):
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64, attn_implementation="eager")
    model.eval()
    return model


def central_difference(fn, param, index, eps: float = 1e-6) -> float:
    """(f(theta + eps e_i) - f(theta - eps e_i)) / 2 eps (f may itself differentiate: grad stays on)."""
    old = param[index].item()
    values = []
    for x in (old + eps, old - eps):
        with torch.no_grad():
            param[index] = x
        values.append(float(fn()))
    with torch.no_grad():
        param[index] = old
    return (values[0] - values[1]) / (2 * eps)


# (arch, parameter, eps, relative tolerance). GPT-2 computes in float64 throughout, so a tight
# check holds everywhere. Llama's RMSNorm and eager softmax compute in float32 whatever the model's
# dtype, so inside the network the penalty carries float32 rounding (~1e-7) and a central difference
# needs a larger step; the output head sits after those casts and is checked tightly.
FD_CASES = [
    ("gpt2", "transformer.h.0.mlp.c_proj.weight", 1e-6, 1e-6),
    ("gpt2", "transformer.h.1.attn.c_attn.weight", 1e-6, 1e-6),
    ("gpt2", "transformer.wte.weight", 1e-6, 1e-6),
    ("llama", "lm_head.weight", 1e-6, 1e-6),
    ("llama", "model.layers.0.mlp.down_proj.weight", 1e-3, 1e-2),
    ("llama", "model.layers.1.self_attn.q_proj.weight", 1e-3, 1e-2),
]


@pytest.mark.parametrize(("arch", "name", "eps", "rel"), FD_CASES)
def test_irm_penalty_gradient_matches_finite_differences(arch, name, eps, rel, make_tiny_model):
    d = make_tiny_model(arch)
    tok = AutoTokenizer.from_pretrained(d)
    model = model64(d)
    batch = env_batch(tok)
    param = dict(model.named_parameters())[name]
    pen, _ = irm_penalty(model, batch)
    (grad,) = torch.autograd.grad(pen, [param])
    # the entries with the largest gradients (a zero gradient would prove nothing), plus one random
    top = torch.topk(grad.abs().flatten(), 3).indices.tolist()
    rand = torch.randint(grad.numel(), (1,), generator=torch.Generator().manual_seed(0)).tolist()
    for i in top + rand:
        idx = tuple(int(x) for x in torch.unravel_index(torch.tensor(i), param.shape))
        fd = central_difference(lambda: irm_penalty(model, batch)[0].detach(), param, idx, eps)
        assert float(grad[idx]) == pytest.approx(fd, rel=rel, abs=1e-8), f"{arch} {name}{list(idx)}"


def test_irm_penalty_equals_its_closed_form(tiny_llama_dir):
    """dL/dw at w=1 for L(w) = mean answer NLL of softmax(w z) is mean_t (E_p[z] - z_y)."""
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = model64(tiny_llama_dir)
    batch = env_batch(tok)
    pen, loss = irm_penalty(model, batch)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        z = logits[:, :-1]
        y = batch["labels"][:, 1:]
        mask = y != -100
        p = torch.softmax(z, -1)
        per_token = (p * z).sum(-1) - z.gather(-1, y.clamp(min=0)[..., None])[..., 0]
        dldw = per_token[mask].mean()
        nll, m = token_nll(logits, batch["labels"])
    assert float(pen.detach()) == pytest.approx(float(dldw) ** 2, rel=1e-10)
    assert float(loss.detach()) == pytest.approx(float(nll.sum() / m.sum()), rel=1e-12)


def test_gradnorm_penalty_gradient_matches_finite_differences(tiny_gpt2_dir):
    """The other reading: ||grad_theta L||^2, differentiated again (double backward), on GPT-2 (float64)."""
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    model = model64(tiny_gpt2_dir)
    batch = env_batch(tok, 2)
    params = [model.transformer.h[1].mlp.c_proj.weight, model.transformer.h[0].attn.c_attn.weight]
    pen, _ = gradnorm_penalty(model, batch, params)
    grads = torch.autograd.grad(pen, params)
    for p, g in zip(params, grads, strict=True):
        for i in torch.topk(g.abs().flatten(), 2).indices.tolist():
            idx = tuple(int(x) for x in torch.unravel_index(torch.tensor(i), p.shape))
            fd = central_difference(lambda: gradnorm_penalty(model, batch, params)[0].detach(), p, idx)
            assert float(g[idx]) == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_ilu_lowers_the_penalty_compared_with_its_base(make_tiny_model):
    """Same start, same steps: NPO with the IRM penalty ends with a smaller penalty than NPO alone."""
    import copy

    from ort_bench.unlearning.methods import UnlearnData, get_method, make_config

    d = make_tiny_model("llama")
    tok = AutoTokenizer.from_pretrained(d)
    base = AutoModelForCausalLM.from_pretrained(d)
    forget = [Example("What is the capital of France?", "Paris")]
    retain = [Example("What is the capital of Japan?", "Tokyo"), Example("What is the capital of Italy?", "Rome")]
    batch = env_batch(tok, 8)
    out = {}
    for name, cfg in {"npo": make_config("npo", {"lr": 1e-3}, max_steps=6),
                      "ilu": make_config("ilu", {"ilu_lambda": 1.0, "base": {"lr": 1e-3}}, max_steps=6)}.items():
        model = copy.deepcopy(base)
        get_method(name)(cfg).apply(model, tok, UnlearnData(forget, retain), progress=False)
        out[name] = float(irm_penalty(model, batch)[0].detach())
    assert out["ilu"] < 0.5 * out["npo"], out


# ----------------------------------------------------------------------------- environments


def test_shipped_envs_equal_the_generator():
    for name in ENVS:
        shipped = load_env(name, REPO_ROOT / "data")
        assert env_path(name, REPO_ROOT / "data").is_file()
        assert shipped == generate_env(name) and len(shipped) == N_ITEMS
        assert env_hash(shipped) == env_hash(generate_env(name))
        assert len({it.id for it in shipped}) == len({it.prompt for it in shipped}) == N_ITEMS


def test_math_answers_are_correct():
    ops = {"+": int.__add__, "-": int.__sub__, "x": int.__mul__, "/": int.__floordiv__}
    for it in generate_env("math"):
        steps = re.findall(r"(\d+) ([-+x/]) (\d+) = (\d+)\.", it.answer)
        assert steps, it
        for a, op, b, c in steps:
            assert ops[op](int(a), int(b)) == int(c), it
            if op == "/":
                assert int(a) % int(b) == 0
            assert a in it.prompt or any(c2 == a for *_, c2 in steps)
        final = int(re.search(r"The answer is (\d+)\.$", it.answer).group(1))
        assert final == int(steps[-1][3]) and final >= 0


def test_sentiment_is_balanced_and_labelled_by_its_words():
    items = generate_env("sentiment")
    labels = [it.answer for it in items]
    assert labels.count("positive") == labels.count("negative") == N_ITEMS // 2
    from ort_bench.unlearning.envs import _NEGATIVE, _POSITIVE

    for it in items:
        review = it.prompt.split("Review: ", 1)[1]
        words = set(re.findall(r"[a-z]+", review.lower()))
        assert bool(words & set(_POSITIVE)) == (it.answer == "positive"), it
        assert bool(words & set(_NEGATIVE)) == (it.answer == "negative"), it


def test_unknown_env_is_an_error():
    with pytest.raises(OrtBenchError, match=r"unknown fine-tuning environment 'poetry' \(choose from math, sentim"):
        load_env("poetry")
