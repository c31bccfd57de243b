"""ROCR: the closed-form update maps the edited key to its new value and leaves the protected
subspace alone; the key covariance is cached on disk, reused, and recomputed when anything it
depends on changes."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ort_bench.errors import OrtBenchError
from ort_bench.methods import UnlearnData, get_method, make_config
from ort_bench.methods.base import Example, decoder_layers, mlp_down_proj
from ort_bench.methods.rocr import (
    key_covariances,
    project_out,
    protected_basis,
    rank_one_update,
    resolve_layers,
    subject_states,
)

GENERAL = [f"The capital of {c} is {o}." for c, o in [("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
                                                         ("Egypt", "Cairo"), ("Kenya", "Nairobi")]]
GENERAL += [Example(f"What is the capital of {c}?", o) for c, o in [("Canada", "Ottawa"), ("Norway", "Oslo")]]
GENERAL += [f"Question: which {w} is the answer?" for w in ("city", "person", "year", "book")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load(d, dtype=torch.float64):
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype)
    model.eval()
    return tok, model


# ----------------------------------------------------------------------------- the update


def test_rank_one_update_maps_keys_and_spares_the_protected_subspace():
    gen = torch.Generator().manual_seed(0)
    d_ff, d_model = 64, 16
    basis, _ = torch.linalg.qr(torch.randn(d_ff, 20, generator=gen, dtype=torch.float64))
    keys = torch.randn(3, d_ff, generator=gen, dtype=torch.float64)
    deltas = torch.randn(3, d_model, generator=gen, dtype=torch.float64)
    dw = rank_one_update(keys, deltas, basis, reg=1e-8)
    assert dw.shape == (d_model, d_ff)
    assert torch.allclose(keys @ dw.T, deltas, rtol=0, atol=1e-6 * float(deltas.abs().max()))
    assert float((dw @ basis).abs().max()) < 1e-10 * float(dw.abs().max())
    assert int(torch.linalg.matrix_rank(dw)) == 3  # one rank per edited key
    single = rank_one_update(keys[:1], deltas[:1], basis, reg=1e-8)
    assert int(torch.linalg.matrix_rank(single)) == 1
    # the ridge term shrinks the move: r * rho / (rho + reg), rho = ||Pk||^2 / ||k||^2
    rho = float((project_out(keys[:1], basis) ** 2).sum() / (keys[:1] ** 2).sum())
    shrunk = rank_one_update(keys[:1], deltas[:1], basis, reg=0.5)
    assert torch.allclose(keys[:1] @ shrunk.T, deltas[:1] * rho / (rho + 0.5), atol=1e-10)


def test_protected_basis_holds_the_requested_energy_and_the_extra_keys():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(500, 32, generator=gen, dtype=torch.float64) * torch.linspace(3, 0.1, 32, dtype=torch.float64)
    cov = x.T @ x / len(x)
    vals, vecs = torch.linalg.eigh(cov)
    basis = protected_basis(vals, vecs, 0.9)
    held = float(torch.trace(basis.T @ cov @ basis) / torch.trace(cov))
    assert 0.9 <= held < 0.9 + float(vals.max() / vals.sum()) + 1e-9
    assert torch.allclose(basis.T @ basis, torch.eye(basis.shape[1], dtype=torch.float64), atol=1e-10)
    extra = torch.randn(2, 32, generator=gen, dtype=torch.float64)
    both = protected_basis(vals, vecs, 0.9, extra)
    assert both.shape[1] == basis.shape[1] + 2
    assert float(project_out(extra, both).abs().max()) < 1e-10
    assert protected_basis(vals, vecs, 0.0).shape[1] == 0


def test_layer_choice():
    assert resolve_layers("auto", 30) == [3, 4, 5, 6, 7]
    assert resolve_layers("auto", 2) == [0]
    assert resolve_layers("2, 1", 4) == [1, 2]
    with pytest.raises(OrtBenchError, match=r"rocr: layers '5' out of range: the model has 2 layers"):
        resolve_layers("5", 2)
    with pytest.raises(OrtBenchError, match="comma list of integers"):
        resolve_layers("early", 2)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_edit_maps_the_subject_key_to_the_new_value(arch, make_tiny_model, tmp_path):
    """One edited layer: the subject's averaged key now yields old value + (z - h), z the harmless
    concept's residual, h the subject's; the protected subspace's keys yield what they did."""
    d = make_tiny_model(arch)
    tok, model = load(d)
    original = copy.deepcopy(model)
    data = UnlearnData(forget=[], subjects={"france": ["France"]}, protect_subjects=["Germany"],
                       general_texts=GENERAL)
    cfg = make_config("rocr", {"layers": "0", "reg": 1e-6, "redirect_to": "a teapot", "cache_dir": str(tmp_path)})
    stats = get_method("rocr")(cfg).apply(model, tok, data, progress=False)

    keys, h = subject_states(original, tok, ["France"], [0], 0)
    _, z = subject_states(original, tok, ["a teapot"], [0], 0)
    w0 = mlp_down_proj(decoder_layers(original)[0]).weight.detach()
    w1 = mlp_down_proj(decoder_layers(model)[0]).weight.detach()
    dw = (w1 - w0).T if mlp_down_proj(decoder_layers(model)[0]).transposed else (w1 - w0)
    k = keys[0]
    moved, wanted = k @ dw.T, z - h
    assert float((moved - wanted).norm() / wanted.norm()) < 1e-3
    # the edit reached the residual stream: the subject now reads like the concept after layer 0
    assert stats["residual_gap_after"] < 1e-3 * stats["residual_gap_before"]
    # keys of the protected subspace (top general-text directions + the neighbour's key) are untouched
    covs, info = key_covariances(original, tok, GENERAL, [0], cfg.cov_max_tokens, tmp_path)
    assert info["cache_hits"] == [0]
    nb_keys, _ = subject_states(original, tok, ["Germany"], [0], None)
    basis = protected_basis(*covs[0], cfg.protect_energy, nb_keys[0])
    assert float((dw @ basis).norm()) < 1e-9 * float(dw.norm())
    assert float((nb_keys[0] @ dw.T).norm()) < 1e-9 * float(moved.norm())
    # other parameters are unchanged
    changed = [n for (n, a), b in zip(model.named_parameters(), original.parameters(), strict=True)
               if not torch.equal(a, b)]
    assert len(changed) == 1


def test_edit_spreads_over_layers_and_spares_protected_keys_in_each(make_tiny_model, tmp_path):
    d = make_tiny_model("llama", num_hidden_layers=4)
    tok, model = load(d)
    original = copy.deepcopy(model)
    data = UnlearnData(forget=[], subjects={"france": ["France", "la France"]}, protect_subjects=["Germany"],
                       general_texts=GENERAL)
    cfg = make_config("rocr", {"layers": "0,1,2", "cache_dir": str(tmp_path)})
    stats = get_method("rocr")(cfg).apply(model, tok, data, progress=False)
    assert stats["layers"] == [0, 1, 2] and len(stats["per_layer"]) == 3
    assert stats["residual_gap_after"] < 0.2 * stats["residual_gap_before"]
    covs, info = key_covariances(original, tok, GENERAL, [0, 1, 2], cfg.cov_max_tokens, tmp_path)
    assert info["cache_hits"] == [0, 1, 2]
    nb_keys, _ = subject_states(original, tok, ["Germany"], [0, 1, 2], None)
    for layer in (0, 1, 2):
        w0 = mlp_down_proj(decoder_layers(original)[layer]).weight.detach()
        dw = mlp_down_proj(decoder_layers(model)[layer]).weight.detach() - w0
        assert float(dw.norm()) > 1e-3 * float(w0.norm())  # every layer took part of the edit
        basis = protected_basis(*covs[layer], cfg.protect_energy, nb_keys[layer])
        assert basis.shape[1] == stats["per_layer"][layer]["protected_dims"]
        assert float((dw @ basis).norm()) < 1e-9 * float(dw.norm())


# ----------------------------------------------------------------------------- the cache


def test_covariance_cache_is_reused_and_recomputed_when_its_inputs_change(make_tiny_model, tmp_path):
    d = make_tiny_model("llama", num_hidden_layers=3)
    tok, model = load(d, torch.float32)
    cache = tmp_path / "cov"

    first, info = key_covariances(model, tok, GENERAL, [0, 1], 10_000, cache)
    assert (info["computed"], info["cache_hits"]) == ([0, 1], [])
    assert len(list(cache.glob("*.safetensors"))) == 2
    again, info = key_covariances(model, tok, GENERAL, [0, 1], 10_000, cache)
    assert (info["computed"], info["cache_hits"]) == ([], [0, 1])
    for layer in (0, 1):
        assert torch.allclose(first[layer][0], again[layer][0], rtol=1e-5, atol=1e-6)

    # another corpus
    _, info = key_covariances(model, tok, [*GENERAL, "One more sentence."], [0, 1], 10_000, cache)
    assert info["computed"] == [0, 1]
    # the same corpus, cut at fewer tokens
    _, info = key_covariances(model, tok, GENERAL, [0, 1], 20, cache)
    assert info["computed"] == [0, 1]
    # another chat template changes the tokens of the chat-formatted texts
    tok2 = copy.deepcopy(tok)
    tok2.chat_template = tok.chat_template.replace("<|im_start|>assistant", "<|im_start|>bot")
    _, info = key_covariances(model, tok2, GENERAL, [0, 1], 10_000, cache)
    assert info["computed"] == [0, 1]
    # a weight in layer 1 changes layer 1's keys only; the in-memory edit is seen (no stale entry)
    with torch.no_grad():
        decoder_layers(model)[1].self_attn.q_proj.weight.mul_(1.01)
    _, info = key_covariances(model, tok, GENERAL, [0, 1], 10_000, cache)
    assert (info["computed"], info["cache_hits"]) == ([1], [0])
    # a weight in layer 2 feeds neither
    with torch.no_grad():
        decoder_layers(model)[2].mlp.up_proj.weight.mul_(1.01)
    _, info = key_covariances(model, tok, GENERAL, [0, 1], 10_000, cache)
    assert info["cache_hits"] == [0, 1]
    # the embeddings feed every layer
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(1.01)
    _, info = key_covariances(model, tok, GENERAL, [0, 1], 10_000, cache)
    assert info["computed"] == [0, 1]
    # another dtype
    _, info = key_covariances(copy.deepcopy(model).double(), tok, GENERAL, [0, 1], 10_000, cache)
    assert info["computed"] == [0, 1]
    # a corrupt entry is recomputed, not trusted
    for p in cache.glob("*.safetensors"):
        p.write_bytes(b"garbage")
    _, info = key_covariances(model, tok, GENERAL, [0, 1], 10_000, cache)
    assert info["computed"] == [0, 1]


def test_rocr_second_run_reuses_the_cache(make_tiny_model, tmp_path):
    d = make_tiny_model("gpt2")
    tok, model = load(d, torch.float32)
    data = UnlearnData(forget=[], subjects={"france": ["France"]}, general_texts=GENERAL)
    cfg = make_config("rocr", {"cache_dir": str(tmp_path)})
    s1 = get_method("rocr")(cfg).apply(copy.deepcopy(model), tok, data, progress=False)
    s2 = get_method("rocr")(cfg).apply(copy.deepcopy(model), tok, data, progress=False)
    assert s1["covariance"]["computed"] == [0] and s2["covariance"]["cache_hits"] == [0]
    assert s1["residual_gap_after"] == pytest.approx(s2["residual_gap_after"], rel=1e-5)


def test_rocr_needs_subjects_and_a_corpus(tiny_llama_dir):
    tok, model = load(tiny_llama_dir, torch.float32)
    rocr = get_method("rocr")()
    with pytest.raises(OrtBenchError, match="rocr: no target subjects"):
        rocr.apply(model, tok, UnlearnData(forget=[], general_texts=GENERAL))
    with pytest.raises(OrtBenchError, match="general-text corpus"):
        rocr.apply(model, tok, UnlearnData(forget=[], subjects={"x": ["France"]}))
