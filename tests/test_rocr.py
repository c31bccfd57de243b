"""ROCR: ort-bench's edit equals the ORT reference code's update (written out again here, from
`rocr_main.py` / `compute_z.py` / `workflow.py` of github.com/Acruxos/ORT, without calling
ort-bench's edit), spares keys outside the null space, and the key covariance is cached on disk,
reused, and recomputed when anything it depends on changes."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ort_bench.errors import OrtBenchError
from ort_bench.unlearning.methods import UnlearnData, get_method, make_config
from ort_bench.unlearning.methods.base import Example, decoder_layers, mlp_down_proj
from ort_bench.unlearning.methods.rocr import ROCRData, resolve_layers
from ort_bench.unlearning.methods.rocr_stats import key_covariances

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


# ----------------------------------------------------------------------------- ORT, written out again

STARTERS = ["", "Please answer the question about", "Choose the best answer about", "Write the answer about",
            "Tell me about", "Write something about"]


def ort_contexts(tok):
    """get_context_templates: chat-formatted user turns "<starter> {}", then "Answer:"."""
    return [tok.apply_chat_template([{"role": "user", "content": s + " {}"}], tokenize=False,
                                    add_generation_prompt=True) + "Answer:" for s in STARTERS]


def ort_lookup(tok, template, subject):
    """The request prompt "{}." in the template, the subject in it; ids starting with BOS (as
    Llama-3's tokenizer adds it; a text that starts with it already keeps one) and the index of the
    subject's last token."""
    template = template.replace("{}", "{}.")
    prefix = template[: template.index("{}")]
    ids = tok(template.format(subject), add_special_tokens=False)["input_ids"]
    shift = int(ids[0] != tok.bos_token_id)
    ids = [tok.bos_token_id] * shift + ids
    return ids, len(tok(prefix + subject, add_special_tokens=False)["input_ids"]) - 1 + shift


def ort_read(model, ids, idx, layer, what):
    """Input of the down-projection (what="in") or output of the decoder layer (what="out") at idx."""
    box = {}
    block = model.model.layers[layer]
    if what == "in":
        h = block.mlp.down_proj.register_forward_pre_hook(lambda m, a: box.__setitem__("x", a[0]))
    else:
        h = block.register_forward_hook(lambda m, a, o: box.__setitem__("x", o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]))
    h.remove()
    return box["x"][0, idx].double()


def ort_compute_ks(model, tok, subject, layer):
    """compute_ks: the key averaged over the context templates -> (d_ff, 1)."""
    ks = [ort_read(model, *ort_lookup(tok, c, subject), layer, "in") for c in ort_contexts(tok)]
    return torch.stack(ks).mean(0)[:, None]


def ort_apply(model, tok, subject, unrelated, layers, P, cache_c, lam):
    """apply_rocr_to_model for one request {subject, prompt "{}."} in "unrelated" mode."""
    z_layer = layers[-1]
    zs = ort_read(model, *ort_lookup(tok, ort_contexts(tok)[0], unrelated), z_layer, "out")[:, None]
    for i, layer in enumerate(layers):
        layer_ks = ort_compute_ks(model, tok, subject, layer)
        cur_zs = ort_read(model, *ort_lookup(tok, "{}", subject), z_layer, "out")[:, None]
        resid = (zs - cur_zs) / (len(layers) - i)
        upd = torch.linalg.solve(P[i] @ (layer_ks @ layer_ks.T + cache_c[i]) + lam * torch.eye(layer_ks.shape[0],
                                 dtype=torch.float64), P[i] @ layer_ks @ resid.T)
        with torch.no_grad():
            model.model.layers[layer].mlp.down_proj.weight += upd.T.to(torch.float64)
    for i, layer in enumerate(layers):
        layer_ks = ort_compute_ks(model, tok, subject, layer)
        cache_c[i] += layer_ks @ layer_ks.T


def ort_projector(eigvals, eigvecs, threshold):
    """get_project: U[:, S < threshold] U[:, S < threshold]^T from the SVD of the covariance."""
    cov = eigvecs @ torch.diag(eigvals) @ eigvecs.T
    u, s, _ = torch.linalg.svd(cov, full_matrices=False)
    small = (s < threshold).nonzero(as_tuple=True)[0]
    return u[:, small] @ u[:, small].T


def test_edit_equals_the_ort_reference_update_and_spares_protected_keys(make_tiny_model, tmp_path):
    d = make_tiny_model("llama", num_hidden_layers=4)
    tok, model = load(d)
    original = copy.deepcopy(model)
    layers = [1, 2]
    covs, _ = key_covariances(original, tok, GENERAL, layers, 20000, tmp_path)
    vals = covs[1][0]  # ascending; a threshold between two eigenvalues: half the dimensions in the null space
    threshold = float(vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
    data = UnlearnData(forget=[], method_data=ROCRData({"france": ["France"], "japan": ["Japan"]}, GENERAL))
    cfg = make_config("rocr", {"layers": "1,2", "unrelated_subject": "Kenya", "nullspace_threshold": threshold,
                               "l2": 0.5, "cache_dir": str(tmp_path)})
    stats = get_method("rocr")(cfg).apply(model, tok, data, progress=False)
    assert stats["covariance"]["cache_hits"] == layers

    reference = copy.deepcopy(original)
    d_ff = original.config.intermediate_size
    P = torch.stack([ort_projector(*covs[layer], threshold) for layer in layers])
    cache_c = torch.zeros(len(layers), d_ff, d_ff, dtype=torch.float64)
    for subject in ("France", "Japan"):  # sequential edits, C_prev accumulating
        ort_apply(reference, tok, subject, "Kenya", layers, P, cache_c, 0.5)
    assert float(cache_c[0].abs().max()) > 0
    for i, layer in enumerate(layers):
        w0 = mlp_down_proj(decoder_layers(original)[layer]).weight.detach()
        ours = mlp_down_proj(decoder_layers(model)[layer]).weight.detach() - w0
        theirs = reference.model.layers[layer].mlp.down_proj.weight.detach() - w0
        assert float(theirs.norm()) > 1e-3 * float(w0.norm())  # the edit did something
        assert float((ours - theirs).abs().max()) < 1e-5 * float(theirs.abs().max())
        # keys outside the null space (eigenvalue >= threshold) map to what they did
        vals, vecs = covs[layer]
        protected = vecs[:, vals >= threshold].T  # rows: keys of the protected subspace
        before, after = protected @ w0.T, protected @ (w0 + ours).T
        assert float((after - before).norm(dim=-1).max() / before.norm(dim=-1).min()) < 1e-4
        assert P[i].trace() == pytest.approx((vals < threshold).sum().item())
    # other parameters are unchanged
    changed = {n for (n, a), b in zip(model.named_parameters(), original.parameters(), strict=True)
               if not torch.equal(a, b)}
    assert changed == {f"model.layers.{layer}.mlp.down_proj.weight" for layer in layers}
    assert set(stats["targets"]) == {"france", "japan"}
    assert all(t["residual_gap_after"] < t["residual_gap_before"] for t in stats["targets"].values())


def test_layer_choice_maps_orts_layers_by_relative_depth():
    assert resolve_layers("auto", 32) == [4, 5, 6]  # ORT's Llama-3-8B setting itself
    assert resolve_layers("auto", 30) == [4, 5, 6]  # SmolLM2-135M
    assert resolve_layers("auto", 2) == [0]
    assert resolve_layers("2, 1", 4) == [1, 2]
    with pytest.raises(OrtBenchError, match=r"rocr: layers '5' out of range: the model has 2 layers"):
        resolve_layers("5", 2)
    with pytest.raises(OrtBenchError, match="comma list of integers"):
        resolve_layers("early", 2)


def test_settings_are_checked():
    for bad, msg in (({"l2": 0}, "l2 must be positive"), ({"nullspace_threshold": -1}, "must be positive"),
                     ({"max_names": 0}, "at least 1"), ({"unrelated_subject": " "}, "must not be empty")):
        with pytest.raises(OrtBenchError, match=msg):
            make_config("rocr", bad)


def test_an_empty_null_space_is_an_error_not_a_silent_no_op(tiny_llama_dir, tmp_path):
    tok, model = load(tiny_llama_dir, torch.float32)
    data = UnlearnData(forget=[], method_data=ROCRData({"france": ["France"]}, GENERAL))
    cfg = make_config("rocr", {"nullspace_threshold": 1e-30, "cache_dir": str(tmp_path)})
    with pytest.raises(OrtBenchError, match=r"^rocr: no key-covariance eigenvalue of layer 0 is below the null-space "
                                            r"threshold 1e-30 \(smallest .*raise --rocr-nullspace-threshold$"):
        get_method("rocr")(cfg).apply(model, tok, data, progress=False)


def test_the_unrelated_subject_may_not_be_a_target(tiny_llama_dir, tmp_path):
    tok, model = load(tiny_llama_dir, torch.float32)
    data = UnlearnData(forget=[], method_data=ROCRData({"kenya": ["Kenya"]}, GENERAL))
    cfg = make_config("rocr", {"unrelated_subject": "kenya", "nullspace_threshold": 1e9, "cache_dir": str(tmp_path)})
    with pytest.raises(OrtBenchError, match="unrelated subject 'kenya' is target 'kenya'"):
        get_method("rocr")(cfg).apply(model, tok, data, progress=False)


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
    data = UnlearnData(forget=[], method_data=ROCRData({"france": ["France"]}, GENERAL))
    cfg = make_config("rocr", {"cache_dir": str(tmp_path), "nullspace_threshold": 1e9})
    s1 = get_method("rocr")(cfg).apply(copy.deepcopy(model), tok, data, progress=False)
    s2 = get_method("rocr")(cfg).apply(copy.deepcopy(model), tok, data, progress=False)
    assert s1["covariance"]["computed"] == [0] and s2["covariance"]["cache_hits"] == [0]
    assert s1["residual_gap_after"] == pytest.approx(s2["residual_gap_after"], rel=1e-5)


def test_rocr_needs_subjects_and_a_corpus(tiny_llama_dir):
    tok, model = load(tiny_llama_dir, torch.float32)
    rocr = get_method("rocr")()
    with pytest.raises(OrtBenchError, match="rocr: no target subjects"):
        rocr.apply(model, tok, UnlearnData(forget=[], method_data=ROCRData(general_texts=GENERAL)))
    with pytest.raises(OrtBenchError, match="general-text corpus"):
        rocr.apply(model, tok, UnlearnData(forget=[], method_data=ROCRData({"x": ["France"]})))
