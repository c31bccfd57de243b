"""Inference engines behind one narrow interface; one file per engine, found through a registry."""

from ort_bench.scoring.backends.base import (
    BACKENDS,
    Backend,
    GenerationParams,
    LogLikelihood,
    ScoreRequest,
    ScoreResult,
    TokenBackend,
    checked_backend,
    get_backend,
    make_backend,
    register_backend,
)

__all__ = ["BACKENDS", "Backend", "GenerationParams", "LogLikelihood", "ScoreRequest", "ScoreResult",
           "TokenBackend", "checked_backend", "get_backend", "make_backend",
           "register_backend"]
