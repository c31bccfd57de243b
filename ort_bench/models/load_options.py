"""How a model is loaded: declared once here, added to every command that loads one
(`add_load_options`), and passed as one object to every loader and backend.

Adding an option: a field below with its help text in the metadata; every command gets the flag,
`LoadOptions.from_args` reads it back, and each backend says which options it supports
(`Backend.load_options`): one given to a backend that does not support it is refused (one line).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ort_bench.errors import OrtBenchError


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class LoadOptions:
    """Fields are command-line options (`--trust-remote-code` for `trust_remote_code`)."""

    dtype: str = _opt("float32", "weights' dtype: float32 (CPU default), bfloat16, float16, auto")
    device: str = _opt("auto", "auto, cpu, cuda")
    trust_remote_code: bool = _opt(False, "run code shipped with the model (off by default)")
    allow_pickle: bool = _opt(False, "allow pickle weights (.bin/.pt); refused by default")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(LoadOptions))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LoadOptions:
        return LoadOptions(**{n: getattr(args, n) for n in cls.names()})

    def on_device(self) -> LoadOptions:
        """A copy with `device` resolved ("auto" becomes cuda or cpu): what a card records."""
        return dataclasses.replace(self, device=resolve_device(self.device))

    def given(self) -> dict[str, Any]:
        """The options that differ from their defaults: what a backend must support."""
        defaults = LoadOptions()
        return {n: getattr(self, n) for n in LoadOptions.names() if getattr(self, n) != getattr(defaults, n)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_load_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """One flag per `LoadOptions` field, with its default and help."""
    for f in dataclasses.fields(LoadOptions):
        if f.type in (bool, "bool"):
            parser.add_argument(flag(f.name), action="store_true", help=f.metadata["help"])
        else:
            parser.add_argument(flag(f.name), default=f.default, help=f.metadata["help"])
    return parser


def check_supported(options: LoadOptions, supported: tuple[str, ...], who: str) -> None:
    """Refuse, in one line, an option given (not at its default) that `who` does not support."""
    for name, value in options.given().items():
        if name not in supported:
            raise OrtBenchError(f"{who} does not support {flag(name)} (got {value!r}); it supports "
                                f"{', '.join(flag(n) for n in supported) or 'no load options'}")


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
