"""Model resolution: fingerprints, safety refusals, one-line errors, LoRA adapters, GGUF, prompts."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from ort_bench import provenance
from ort_bench.errors import OrtBenchError
from ort_bench.models import (
    ResolvedModel,
    embedded_gguf_path,
    load_causal_lm,
    load_tokenizer,
    merged_dir,
    resolve_model,
)
from ort_bench.models.load_options import LoadOptions
from ort_bench.models.prompting import format_prompt, join_continuation


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


@pytest.fixture
def llama_copy(tiny_llama_dir, tmp_path):
    return shutil.copytree(tiny_llama_dir, tmp_path / "llama")


def _perturb_weight(d, name_part: str = "q_proj", delta: float = 1e-3):
    from safetensors.torch import load_file, save_file

    f = d / "model.safetensors"
    tensors = load_file(f)
    key = next(k for k in tensors if name_part in k)
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] += delta
    save_file(tensors, f, metadata={"format": "pt"})


# --------------------------------------------------------------------------- fingerprints


def test_hf_dir_resolves_with_stable_fingerprint(tiny_llama_dir):
    a = resolve_model(str(tiny_llama_dir))
    b = resolve_model(str(tiny_llama_dir))
    assert isinstance(a, ResolvedModel)
    assert a.kind == "hf_dir" and a.path == tiny_llama_dir.resolve() and a.adapter is None
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64


def test_fingerprint_changes_when_a_weight_changes(llama_copy):
    before = resolve_model(str(llama_copy)).fingerprint
    _perturb_weight(llama_copy)
    assert resolve_model(str(llama_copy)).fingerprint != before


def test_fingerprint_changes_with_chat_template_but_not_readme(llama_copy):
    before = resolve_model(str(llama_copy)).fingerprint
    (llama_copy / "README.md").write_text("notes")
    assert resolve_model(str(llama_copy)).fingerprint == before
    cfg_file = llama_copy / "tokenizer_config.json"
    template_file = llama_copy / "chat_template.jinja"
    if template_file.exists():
        template_file.write_text(template_file.read_text() + " ")
    else:
        cfg = json.loads(cfg_file.read_text())
        cfg["chat_template"] += " "
        cfg_file.write_text(json.dumps(cfg))
    assert resolve_model(str(llama_copy)).fingerprint != before


def test_file_hashes_are_cached(llama_copy, monkeypatch):

    streamed = []
    real = provenance.file_sha256
    monkeypatch.setattr(provenance, "file_sha256", lambda p: streamed.append(p.name) or real(p))
    first = resolve_model(str(llama_copy)).fingerprint
    assert "model.safetensors" in streamed
    streamed.clear()
    assert resolve_model(str(llama_copy)).fingerprint == first
    assert streamed == []  # nothing re-read
    os.utime(llama_copy / "config.json", ns=(1, 1))  # a changed stamp is hashed again
    assert resolve_model(str(llama_copy)).fingerprint == first
    assert streamed == ["config.json"]


# --------------------------------------------------------------------------- refusals and errors


def test_pickle_weights_refused_unless_allowed(llama_copy):
    import torch
    from safetensors.torch import load_file

    st = llama_copy / "model.safetensors"
    torch.save(load_file(st), llama_copy / "pytorch_model.bin")
    st.unlink()
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(llama_copy))
    assert "pickle" in _one_line(exc) and "--allow-pickle" in str(exc.value)
    m = resolve_model(str(llama_copy), LoadOptions(allow_pickle=True))
    assert m.kind == "hf_dir"


def test_missing_path_is_one_line(tmp_path):
    missing = tmp_path / "no-model-here"
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(missing))
    assert _one_line(exc) == f"{missing}: no such model directory or file"


def test_corrupt_safetensors_names_the_file(llama_copy):
    st = llama_copy / "model.safetensors"
    st.write_bytes(st.read_bytes()[:200])  # truncated mid-header/data
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(llama_copy))
    assert "model.safetensors" in _one_line(exc) and "corrupt" in str(exc.value)


def test_garbage_safetensors_names_the_file(llama_copy):
    (llama_copy / "model.safetensors").write_bytes(os.urandom(4096))
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(llama_copy))
    assert str(llama_copy / "model.safetensors") in _one_line(exc)


def test_dir_without_config_or_weights(tmp_path, llama_copy):
    (tmp_path / "empty").mkdir()
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(tmp_path / "empty"))
    assert "config.json" in _one_line(exc)
    (llama_copy / "model.safetensors").unlink()
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(llama_copy))
    assert "no model weight files" in _one_line(exc)


def test_remote_code_refused_unless_trusted(llama_copy):
    cfg = json.loads((llama_copy / "config.json").read_text())
    cfg.update(model_type="my_custom_arch", auto_map={"AutoModelForCausalLM": "modeling_x.MyModel"})
    (llama_copy / "config.json").write_text(json.dumps(cfg))
    (llama_copy / "modeling_x.py").write_text("# custom code\n")
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(llama_copy))
    assert "--trust-remote-code" in _one_line(exc)
    trusted = resolve_model(str(llama_copy), LoadOptions(trust_remote_code=True))
    assert trusted.trust_remote_code
    (llama_copy / "modeling_x.py").write_text("# edited custom code\n")
    assert resolve_model(str(llama_copy), LoadOptions(trust_remote_code=True)).fingerprint != trusted.fingerprint


def test_hub_id_offline_is_one_line():
    with pytest.raises(OrtBenchError) as exc:
        resolve_model("some-org/some-model-that-is-not-here")
    assert _one_line(exc).startswith("cannot download some-org/some-model-that-is-not-here")


def test_bad_dtype_is_one_line(tiny_llama_dir):
    with pytest.raises(OrtBenchError) as exc:
        load_causal_lm(resolve_model(str(tiny_llama_dir)), LoadOptions(dtype="float33"))
    assert "float33" in _one_line(exc)


# --------------------------------------------------------------------------- LoRA


def _make_adapter(base_dir, out, targets=("q_proj", "v_proj"), seed=1):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), fan_in_fan_out="c_attn" in targets)
    peft_model = get_peft_model(model, config)
    torch.manual_seed(seed)
    with torch.no_grad():  # lora_B starts at zero; make the adapter actually change the model
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def tiny_adapter(tiny_llama_dir, tmp_path_factory):
    return _make_adapter(tiny_llama_dir, tmp_path_factory.mktemp("adapter") / "lora")


def test_lora_resolves_over_its_base_with_its_own_fingerprint(tiny_adapter, tiny_llama_dir):
    base = resolve_model(str(tiny_llama_dir))
    lora = resolve_model(str(tiny_adapter))
    assert lora.kind == "lora" and lora.adapter == tiny_adapter.resolve() and lora.path == base.path
    assert lora.fingerprint != base.fingerprint
    assert resolve_model(str(tiny_adapter)).fingerprint == lora.fingerprint


def test_lora_changes_outputs_and_merged_dir_matches(tiny_adapter, tiny_llama_dir):
    import torch

    lora = resolve_model(str(tiny_adapter))
    base = resolve_model(str(tiny_llama_dir))
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        lb = load_causal_lm(base)(ids).logits
        ll = load_causal_lm(lora)(ids).logits
        merged = resolve_model(str(merged_dir(lora)))
        lm = load_causal_lm(merged)(ids).logits
    assert not torch.allclose(lb, ll, atol=1e-3)
    assert torch.allclose(ll, lm, atol=1e-4)
    assert merged_dir(lora).resolve() == merged.path  # cached, same directory the second time
    assert merged_dir(base) == base.path
    assert load_tokenizer(lora).padding_side == "left"


def test_lora_on_gpt2_conv1d_resolves_and_loads(tiny_gpt2_dir, tmp_path):
    import torch

    adapter = _make_adapter(tiny_gpt2_dir, tmp_path / "gpt2-lora", targets=("c_attn",))
    lora = resolve_model(str(adapter))
    assert lora.kind == "lora"
    ids = torch.tensor([[5, 17, 42]])
    with torch.no_grad():
        diff = load_causal_lm(lora)(ids).logits - load_causal_lm(resolve_model(str(tiny_gpt2_dir)))(ids).logits
    assert diff.abs().max() > 1e-3


def test_lora_with_explicit_base(tiny_adapter, tiny_llama_dir):
    by_kwarg = resolve_model(str(tiny_adapter), base=str(tiny_llama_dir))
    by_spec = resolve_model(f"{tiny_adapter}@{tiny_llama_dir}")
    assert by_kwarg.fingerprint == by_spec.fingerprint == resolve_model(str(tiny_adapter)).fingerprint


def test_lora_over_wrong_base_hidden_size_is_refused(tiny_adapter, make_tiny_model):
    wrong = make_tiny_model("llama", hidden_size=48)
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(tiny_adapter), base=str(wrong))
    msg = _one_line(exc)
    assert "does not fit base" in msg and "q_proj" in msg


def test_lora_over_wrong_architecture_is_refused(tiny_adapter, tiny_gpt2_dir):
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(f"{tiny_adapter}@{tiny_gpt2_dir}")
    assert "has no module" in _one_line(exc)


def test_lora_over_fewer_layers_is_refused(tiny_adapter, make_tiny_model):
    shallow = make_tiny_model("llama", num_hidden_layers=1)
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(tiny_adapter), base=str(shallow))
    assert "layers.1" in _one_line(exc)


def test_lora_with_missing_base(tiny_adapter, tmp_path):
    adapter = shutil.copytree(tiny_adapter, tmp_path / "a")
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(adapter))
    assert _one_line(exc) == f"{tmp_path / 'gone'}: no such model directory or file"


# --------------------------------------------------------------------------- GGUF


def test_gguf_of_unsupported_architecture_is_one_line(tmp_path):
    path = _write_gguf(tmp_path / "odd.gguf", "notanarch")
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(path))
    msg = _one_line(exc)
    assert str(path) in msg and "notanarch" in msg and "not supported" in msg


def _write_gguf(path, arch):
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_killed_gguf_conversion_leaves_no_cache(tmp_path, monkeypatch):
    import ort_bench.models.gguf as models

    path = _write_gguf(tmp_path / "m.gguf", "llama")
    cache = tmp_path / "cache"
    calls = []

    def failing(src, out):
        calls.append(out)
        (out / "config.json").write_text("{}")  # half written
        raise RuntimeError("killed\nmid-way")

    monkeypatch.setattr(models, "_convert_gguf", failing)
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(path), cache_dir=cache)
    assert str(path) in _one_line(exc) and "killed" in str(exc.value)
    assert list((cache / "models").iterdir()) == []  # neither the half directory nor a final one

    def ok(src, out):
        calls.append(out)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", ok)
    first = resolve_model(str(path), cache_dir=cache)
    again = resolve_model(str(path), cache_dir=cache)
    assert len(calls) == 2 and first == again and first.kind == "gguf"
    assert first.path.parent == cache / "models" and (first.path / "config.json").is_file()


def test_non_gguf_file_named_gguf(tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"not a gguf at all")
    with pytest.raises(OrtBenchError) as exc:
        resolve_model(str(path))
    assert str(path) in _one_line(exc) and "not a GGUF" in str(exc.value)


# --------------------------------------------------------------------------- prompts


def test_format_prompt_with_chat_template(tiny_llama_dir):
    tok = load_tokenizer(resolve_model(str(tiny_llama_dir)))
    text = format_prompt(tok, "Capital of France?", system="Be brief.", prefill="Sure, it is")
    assert text == ("<|endoftext|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?"
                    "<|im_end|>\n<|im_start|>assistant\nSure, it is")
    assert format_prompt(tok, "Q?").endswith("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n")


def test_format_prompt_fallback_without_template(tiny_gpt2_dir):
    tok = load_tokenizer(resolve_model(str(tiny_gpt2_dir)))
    assert not tok.chat_template
    assert format_prompt(tok, "The capital of France is") == "<|endoftext|>The capital of France is"
    assert format_prompt(tok, "Q?", system="S.", prefill="A:") == "<|endoftext|>S.\n\nQ?\nA:"
    # the BOS is in the string, encoded as one special token even without add_special_tokens
    ids = tok(format_prompt(tok, "Hi"), add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.pad_token is not None and tok.padding_side == "left"


def test_format_prompt_template_without_system_role(tiny_llama_dir):
    tok = load_tokenizer(resolve_model(str(tiny_llama_dir)))
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
                         "supported') }}{% endif %}[{{ m['content'] }}]{% endfor %}")
    assert format_prompt(tok, "Q?", system="S.") == "[S.\n\nQ?]"


@pytest.mark.parametrize(("context", "answer", "expected"), [
    ("The capital is", "Paris", " Paris"),
    ("The capital is ", "Paris", "Paris"),
    ("<|im_start|>assistant\n", "Paris", "Paris"),
    ("The capital is", " Paris", " Paris"),
    ("", "Paris", "Paris"),
])
def test_join_continuation(context, answer, expected):
    assert join_continuation(context, answer) == expected


# --------------------------------------------------------------------------- embedded (integration)


@pytest.mark.integration
def test_embedded_resolves_from_cache_and_is_stable(embedded_model):
    t0 = time.perf_counter()
    again = resolve_model("embedded")
    elapsed = time.perf_counter() - t0
    assert again == embedded_model
    assert elapsed < 2.0, f"second resolve took {elapsed:.1f}s: the cache was not used"
    assert again.kind == "embedded" and (again.path / "model.safetensors").is_file()
    cfg = json.loads((again.path / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    # the same GGUF named by its path is the same model: same fingerprint, same cached directory
    as_file = resolve_model(str(embedded_gguf_path()))
    assert as_file.kind == "gguf" and as_file.fingerprint == again.fingerprint and as_file.path == again.path
    assert load_tokenizer(again).chat_template  # the chat template survived the conversion


@pytest.mark.integration
def test_embedded_knows_the_capital_of_france(embedded_model):
    from ort_bench.scoring.backends import GenerationParams, get_backend

    backend = get_backend("hf")(embedded_model, batch_size=4)
    tok = backend.tokenizer
    prompts = [format_prompt(tok, f"What is the capital of {c}?") for c in ("France", "Japan")]
    out = backend.generate(prompts, GenerationParams(max_new_tokens=16))
    assert "Paris" in out[0] and "Tokyo" in out[1]
    paris, london = backend.loglikelihood([(prompts[0], "The capital of France is Paris"),
                                           (prompts[0], "The capital of France is London")])
    assert paris.logprob > london.logprob
