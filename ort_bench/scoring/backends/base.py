"""The backend interface and registry (after lm-evaluation-harness's `register_model`).

A backend takes fully formatted prompt strings (chat template and prefill already applied by
`ort_bench.scoring.prompting`) and tokenizes them without adding special tokens. Both calls are batched:
callers hand over everything and the backend chooses its batches.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.scoring.load_options import LoadOptions, check_supported, flag


@dataclass(frozen=True)
class GenerationParams:
    """Greedy by default: results must be reproducible."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LogLikelihood:
    """Log-probability of a continuation given its context, summed over the continuation's tokens."""

    logprob: float
    n_tokens: int

    @property
    def mean_nll(self) -> float:
        return -self.logprob / max(self.n_tokens, 1)


class Backend(ABC):
    """One inference engine. `name` is its registry key; `settings()` goes into every result.
    `load_options`: the `LoadOptions` fields it honours; `checked_backend` refuses any other one given."""

    name: str = ""
    load_options: tuple[str, ...] = ()

    @abstractmethod
    def generate(self, prompts: list[str], params: GenerationParams) -> list[str]:
        """Greedy continuations of each prompt, in input order."""

    @abstractmethod
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LogLikelihood]:
        """log p(continuation | context) for each (context, continuation), in input order."""

    def settings(self) -> dict[str, Any]:
        return {"backend": self.name}


BACKENDS: dict[str, type[Backend]] = {}
# Modules that define the shipped backends, imported on first use (vLLM is an optional extra).
_BACKEND_MODULES = {"hf": "ort_bench.scoring.backends.hf", "vllm": "ort_bench.scoring.backends.vllm"}


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    def deco(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        BACKENDS[name] = cls
        return cls

    return deco


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under `name`, importing its module on demand."""
    if name not in BACKENDS and name in _BACKEND_MODULES:
        try:
            importlib.import_module(_BACKEND_MODULES[name])
        except ImportError as exc:
            raise OrtBenchError(
                f"backend {name!r} needs a package that is not installed ({exc.name}); "
                f"install the extra: pip install 'ort-bench[{name}]'"
            ) from None
    if name not in BACKENDS:
        known = sorted(set(BACKENDS) | set(_BACKEND_MODULES))
        raise OrtBenchError(f"unknown backend {name!r} (choose from {', '.join(known)})")
    return BACKENDS[name]


def checked_backend(name: str, options: LoadOptions, **settings: Any) -> type[Backend]:
    """The class of backend `name`, once it is known to honour every load option given (not at its
    default) and to take every engine setting (`batch_size`, `tensor_parallel_size`, ...): one it
    lacks is refused in one line, before any model loads, instead of being dropped."""
    cls = get_backend(name)
    check_supported(options, cls.load_options, f"backend {name}")
    accepted = inspect.signature(cls.__init__).parameters
    for key, value in settings.items():
        if key not in accepted or key in ("self", "model", "options"):
            raise OrtBenchError(f"backend {name} does not support {flag(key)} (got {value!r})")
    return cls


def make_backend(name: str, model: Any, options: LoadOptions, **settings: Any) -> Backend:
    """Start backend `name` on a resolved model (`checked_backend` first)."""
    return checked_backend(name, options, **settings)(model, options, **settings)
