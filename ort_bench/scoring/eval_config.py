"""What shapes a run's numbers besides the probes: how models load and the engine and decoding
settings. Its own module because the scoring loop, evaluate and the board's re-derivation all read it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.models.load_options import LoadOptions
from ort_bench.provenance import sha256_json


@dataclass(frozen=True)
class EvalConfig(LoadOptions):
    """Everything that shapes the numbers (and the run): how models load (`LoadOptions`), then the
    engine and decoding. Fields in `SCORING_FIELDS` key the records."""

    backend: str = "hf"
    max_new_tokens: int | None = None  # None: the benchmark version's length per form (32 where it sets none)
    tier: str | None = None  # benchmark v3: the fixed probe sample scored (`ort_bench.kb.tiers`)
    seed: int = 0
    batch_size: int = 16
    tensor_parallel_size: int = 1
    chunk_size: int = 128  # probes per durable write
    # --backend openai: the endpoint (the key's environment variable is named, never the key), the
    # tokenizer whose chat template formats its prompts, and how requests are bounded
    base_url: str | None = None
    api_key_env: str | None = None
    tokenizer: str | None = None
    max_concurrency: int = 8
    request_timeout: float = 300.0
    max_retries: int = 5

    # passed to a backend only when changed (one that does not take one refuses it)
    ENGINE_FIELDS = ("batch_size", "tensor_parallel_size", "base_url", "api_key_env", "tokenizer", "max_concurrency",
                     "request_timeout", "max_retries")

    SCORING_FIELDS = ("backend", "max_new_tokens", "seed", "dtype")
    DEFAULT_NEW_TOKENS = 32

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size", "tensor_parallel_size", "chunk_size", "max_concurrency"):
            value = getattr(self, name)
            if name == "max_new_tokens" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise OrtBenchError(f"{name} must be a whole number of at least 1 (got {value!r})")
        if self.tier is not None:
            from ort_bench.kb.tiers import get_tier

            get_tier(self.tier)

    def new_tokens(self, form: str) -> int:
        """Generation length for a free answer of `form`: --max-new-tokens when given (every form), else
        the current benchmark version's for that form."""
        from ort_bench.benchmark import CURRENT

        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return CURRENT.new_tokens(form, self.DEFAULT_NEW_TOKENS)

    def engine_settings(self) -> dict[str, Any]:
        """The engine settings that differ from their defaults (a backend refuses one it lacks)."""
        defaults = {f.name: f.default for f in fields(EvalConfig)}
        return {k: getattr(self, k) for k in self.ENGINE_FIELDS if getattr(self, k) != defaults[k]}

    def backend_settings(self) -> dict[str, Any]:
        """What a backend is started with besides the model and the load options: the seed and the
        engine settings that differ from their defaults."""
        return {"seed": self.seed, **self.engine_settings()}

    def params_hash(self, benchmark: str | None = None) -> str:
        """Hash of what shapes a record's numbers: the scoring fields, the ROUGE variant and (from v2
        on) the benchmark version, `benchmark` or the current one."""
        from ort_bench.benchmark import CURRENT, get_version
        from ort_bench.scoring.metrics import ROUGE_VARIANT

        benchmark = benchmark or CURRENT.name
        extra: dict[str, Any] = {"benchmark": benchmark} if benchmark != "v1" else {}  # v1 keys stay as they were
        if get_version(benchmark).tiers:  # v3 on: the tier is part of every record's key
            extra["tier"] = self.tier
        return sha256_json({**{f: getattr(self, f) for f in self.SCORING_FIELDS}, "rouge": ROUGE_VARIANT,
                            **extra})[:16]
