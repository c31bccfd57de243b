"""Load a resolved model's tokenizer and weights with ``transformers`` (a LoRA applied with ``peft``),
and a merged plain directory for engines that need one (vLLM, training).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ort_bench.errors import OrtBenchError, one_line
from ort_bench.models.fingerprint import cache_root
from ort_bench.models.load_options import LoadOptions, resolve_device
from ort_bench.models.lora import apply_adapter
from ort_bench.models.resolve import ResolvedModel


def torch_dtype(dtype: str):
    import torch

    if dtype == "auto":
        return "auto"
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise OrtBenchError(f"unknown dtype {dtype!r} (choose from float32, bfloat16, float16, auto)")
    return value


def load_tokenizer(model: ResolvedModel):
    """The model's tokenizer, padding on the left, with a pad token. For a LoRA the adapter's own
    tokenizer files win when it ships them."""
    from transformers import AutoTokenizer

    src = model.path
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json")
    if model.adapter is not None and any((model.adapter / f).is_file() for f in tokenizer_files):
        src = model.adapter
    try:
        tok = AutoTokenizer.from_pretrained(str(src), trust_remote_code=model.trust_remote_code)
    except Exception as exc:
        raise OrtBenchError(f"{src}: cannot load tokenizer ({one_line(exc)})") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        for candidate in (tok.eos_token, tok.unk_token, tok.bos_token):
            if candidate is not None:
                tok.pad_token = candidate
                break
        else:
            tok.pad_token = tok.convert_ids_to_tokens(0)
    return tok


def _from_pretrained(d: Path, dtype: str, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype), "trust_remote_code": trust_remote_code}
    if list(d.glob("*.safetensors")):
        kwargs["use_safetensors"] = True
    try:
        return AutoModelForCausalLM.from_pretrained(str(d), **kwargs)
    except OrtBenchError:
        raise
    except Exception as exc:
        raise OrtBenchError(f"{d}: cannot load model ({one_line(exc)})") from None


def load_causal_lm(model: ResolvedModel, load: LoadOptions | None = None):
    """The model in eval mode, in `load.dtype` on `load.device` (default float32 on CPU); a LoRA
    adapter applied with peft (not merged). Remote code and pickle were settled by `resolve_model`."""
    load = load or LoadOptions(device="cpu")
    lm = _from_pretrained(model.path, load.dtype, model.trust_remote_code)
    if model.adapter is not None:
        lm = apply_adapter(lm, model.adapter, model.path)
    lm.to(resolve_device(load.device))
    lm.eval()
    return lm


def merged_dir(model: ResolvedModel, cache_dir: Path | str | None = None) -> Path:
    """A plain HF directory for engines that need one (vLLM, training): `model.path`, or for a LoRA
    the base with the adapter merged, saved once in the cache (keyed by the fingerprint)."""
    if model.adapter is None:
        return model.path
    out = cache_root(cache_dir) / "models" / f"merged-{model.fingerprint[:20]}"
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        lm = load_causal_lm(model)
        merged = lm.merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(model).save_pretrained(tmp)
        source = {"base": str(model.path), "adapter": str(model.adapter), "fingerprint": model.fingerprint}
        (tmp / "ort_bench_source.json").write_text(json.dumps(source, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
