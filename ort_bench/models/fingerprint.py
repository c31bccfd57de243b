"""A model's fingerprint: a sha256 over the files that decide its answers (weights, config, tokenizer
files and chat template), and the cache those file hashes and converted models live in.

File hashes are cached per (path, size, mtime, ctime, inode), so resolving a model a second time
does not re-read its weights. A safetensors file is checked (header readable) before its hash is
cached, so a truncated file fails with one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ort_bench import provenance
from ort_bench.errors import OrtBenchError

SAFETENSORS_EXT = (".safetensors",)
PICKLE_EXT = (".bin", ".pt", ".pth", ".ckpt")
# Non-weight files that decide a model's answers (besides every top-level *.json and *.jinja).
TOKENIZER_FILES = ("tokenizer.model", "merges.txt", "vocab.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.tiktoken", "chat_template.jinja")


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


def tree_hash(entries: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, digest in sorted(entries):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


def weight_files(d: Path, allow_pickle: bool, what: str = "model") -> list[Path]:
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


def meta_files(d: Path, trust_remote_code: bool) -> list[Path]:
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
    files = weight_files(d, allow_pickle, what) + meta_files(d, trust_remote_code)
    return tree_hash([(p.name, file_sha256(p, cache_dir)) for p in files])
