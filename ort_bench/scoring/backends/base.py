"""The backend interface, the token layer every backend shares, and the registry (after
lm-evaluation-harness's `register_model` and its `TemplateLM`).

A backend takes fully formatted prompt strings (chat template and prefill already applied by
`ort_bench.models.prompting`). Three batched calls: `generate`, `loglikelihood` and `score` (a prompt's
generation and its continuations' likelihoods in one request, so that an engine can read the prompt
once for both). Callers hand over everything and the backend chooses its batches.

`TokenBackend` is the shared token layer: it tokenizes without special tokens, gives an empty
context the start token, drops the oldest tokens of what does not fit the window, and turns new token
ids into the answer string (special tokens skipped, leading whitespace dropped, cut at the first stop
string, stripped). A new engine writes only `_generate_tokens` and `_loglikelihood_tokens` (and
`_score_tokens` where it can fuse the two).
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.models.load_options import LoadOptions, check_supported, flag


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


@dataclass(frozen=True)
class ScoreRequest:
    """One prompt: its greedy answer when `params` is given, and log p(c | context) for each continuation."""

    context: str
    continuations: tuple[str, ...] = ()
    params: GenerationParams | None = None


@dataclass(frozen=True)
class ScoreResult:
    """What a `ScoreRequest` gets back: the answer (None when none was asked), how many tokens it took
    (None when none was asked), and one `LogLikelihood` per continuation, in order."""

    text: str | None = None
    new_tokens: int | None = None
    loglikelihoods: tuple[LogLikelihood, ...] = field(default_factory=tuple)


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    for s in stop:
        if s:
            i = text.find(s)
            if i >= 0:
                text = text[:i]
    return text


class Backend(ABC):
    """One inference engine. `name` is its registry key; `settings()` goes into every result.
    `load_options`: the `LoadOptions` fields it honours; `checked_backend` refuses any other one given.
    `tokenizer`: the model's tokenizer (prompts are formatted with its chat template). `no_likelihoods`:
    None, or why the engine returns no log-probabilities."""

    name: str = ""
    load_options: tuple[str, ...] = ()
    tokenizer: Any = None
    # None: the engine gives log-probabilities. Else why it cannot (an endpoint that echoes none): its
    # free answers are scored without ORT's Prob, and the choice forms are not scored at all (results say so)
    no_likelihoods: str | None = None

    @abstractmethod
    def generate(self, prompts: list[str], params: GenerationParams) -> list[str]:
        """Greedy continuations of each prompt, in input order."""

    @abstractmethod
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LogLikelihood]:
        """log p(continuation | context) for each (context, continuation), in input order."""

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Each request's answer and likelihoods, in input order. This default makes one `generate`
        call per distinct `GenerationParams` and one `loglikelihood` call for every continuation; an
        engine that can read a prompt once for both overrides it."""
        texts: dict[int, str] = {}
        for params in dict.fromkeys(r.params for r in requests if r.params is not None):
            idx = [i for i, r in enumerate(requests) if r.params == params]
            texts.update(zip(idx, self.generate([requests[i].context for i in idx], params), strict=True))
        pairs = [(r.context, c) for r in requests for c in r.continuations]
        lls = iter(self.loglikelihood(pairs))
        return [ScoreResult(texts.get(i), None, tuple(next(lls) for _ in r.continuations))
                for i, r in enumerate(requests)]

    @classmethod
    def resolve(cls, spec: str, options: LoadOptions, **settings: Any) -> Any:
        """The `ResolvedModel` (with its fingerprint) that `spec` names for this engine: a local model by
        default; a served one for an engine that talks to an endpoint (`openai`). Before any engine starts."""
        from ort_bench.models import resolve_model

        return resolve_model(spec, options)

    def settings(self) -> dict[str, Any]:
        return {"backend": self.name}

    def close(self) -> None:  # noqa: B027 (most engines hold nothing to free)
        """Free what the engine holds (processes, GPU memory) now rather than at exit. Idempotent."""


class TokenBackend(Backend):
    """The token layer shared by engines that run on token ids (see the module docstring).
    Subclasses set `tokenizer` and `max_length` (the model's window, None if unbounded)."""

    max_length: int | None = None

    # -- what an engine implements
    @abstractmethod
    def _generate_tokens(self, prompts: list[list[int]], params: GenerationParams) -> list[list[int]]:
        """The new token ids of each prompt, without the EOS that ended it, in input order."""

    @abstractmethod
    def _loglikelihood_tokens(self, requests: list[tuple[list[int], list[int]]]) -> list[LogLikelihood]:
        """For each (context ids, continuation ids), both non-empty and fitting the window, the summed
        log-probability of the continuation, in input order."""

    def _score_tokens(self, requests: list[tuple[list[int], list[list[int]], GenerationParams | None]],
                      ) -> list[tuple[list[int] | None, list[LogLikelihood]]]:
        """Fused generation and likelihoods over token ids; by default the two calls above."""
        gen: dict[int, list[int]] = {}
        for params in dict.fromkeys(p for _, _, p in requests if p is not None):
            idx = [i for i, (_, _, p) in enumerate(requests) if p == params]
            gen.update(zip(idx, self._generate_tokens([requests[i][0] for i in idx], params), strict=True))
        flat = [(ctx, cont) for ctx, conts, _ in requests for cont in conts]
        lls = iter(self._loglikelihood_tokens(flat))
        return [(gen.get(i), [next(lls) for _ in conts]) for i, (_, conts, _) in enumerate(requests)]

    # -- the shared part
    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def start_token(self) -> int | None:
        """What an empty prompt or context starts from: BOS, else EOS."""
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def eos_ids(self) -> list[int]:
        """The ids that end an answer: the model's generation config's EOS ids and the tokenizer's."""
        ids: list[int] = []
        gen_eos = getattr(getattr(getattr(self, "model", None), "generation_config", None), "eos_token_id", None)
        for v in (gen_eos, self.tokenizer.eos_token_id):
            for i in v if isinstance(v, list | tuple) else [v]:
                if i is not None and i not in ids:
                    ids.append(int(i))
        return ids

    def _prompt_ids(self, prompt: str, max_new_tokens: int) -> list[int]:
        """A prompt's ids (the start token if empty), its oldest tokens dropped to leave room for the answer."""
        ids = self.encode(prompt)
        if not ids:
            start = self.start_token()
            if start is None:
                raise OrtBenchError("an empty prompt and the tokenizer has no BOS or EOS token to start from")
            ids = [start]
        if self.max_length:
            room = self.max_length - max_new_tokens
            if room > 0 and len(ids) > room:
                ids = ids[-room:]
        return ids

    def _pair_ids(self, ctx_ids: list[int], cont: str) -> tuple[list[int], list[int]] | None:
        """(context ids, continuation ids) as scored: tokenized apart and concatenated, so the
        continuation's tokens are exactly the answer's whatever the context ends with; an empty
        context becomes the start token; None for an empty continuation (log p = 0 over 0 tokens).
        What does not fit the window loses its oldest context tokens (and, if the continuation
        alone is too long, its first tokens)."""
        cont_ids = self.encode(cont)
        if not cont_ids:
            return None
        if not ctx_ids:  # the first continuation token needs something to be predicted from
            start = self.start_token()
            if start is None:
                raise OrtBenchError("empty context and the tokenizer has no BOS or EOS token to start from")
            ctx_ids = [start]
        if self.max_length and len(ctx_ids) + len(cont_ids) > self.max_length:
            full = (ctx_ids + cont_ids)[-self.max_length:]
            n = min(len(cont_ids), len(full) - 1)
            return full[:-n], full[-n:]
        return ctx_ids, cont_ids

    def finish(self, new_ids: list[int], stop: tuple[str, ...]) -> str:
        """The answer string of new token ids: special tokens skipped, leading whitespace dropped, cut
        at the first stop string, stripped (the same string for the same tokens on every engine)."""
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        return cut_at_stop(text.lstrip(), stop).strip()

    # -- the interface, in terms of the engine's calls
    def generate(self, prompts: list[str], params: GenerationParams) -> list[str]:
        if not prompts:
            return []
        new = self._generate_tokens([self._prompt_ids(p, params.max_new_tokens) for p in prompts], params)
        return [self.finish(ids, params.stop) for ids in new]

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LogLikelihood]:
        return [r.loglikelihoods[0] for r in self.score([ScoreRequest(ctx, (cont,)) for ctx, cont in requests])]

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        if not requests:
            return []
        # engine rows: one per generating request, whose continuations ride on its prefill when they
        # share its context ids (a prompt truncated to leave room for its answer does not), and one
        # per other distinct context, holding every continuation scored after it
        rows: dict[Any, _EngineRow] = {}
        ctx_cache: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            if r.context not in ctx_cache:
                ctx_cache[r.context] = self.encode(r.context)
            prompt = None
            if r.params is not None:
                prompt = self._prompt_ids(r.context, r.params.max_new_tokens)
                rows[("answer", i)] = _EngineRow(prompt, r.params, i)
            for k, cont in enumerate(r.continuations):
                pair = self._pair_ids(ctx_cache[r.context], cont)
                if pair is not None:
                    key = ("answer", i) if pair[0] == prompt else ("context", tuple(pair[0]))
                    row = rows.setdefault(key, _EngineRow(pair[0], None, None))
                    row.owners.append((i, k))
                    row.conts.append(pair[1])
        scored = self._score_tokens([(row.prompt, row.conts, row.params) for row in rows.values()])
        answers: dict[int, list[int]] = {}
        lls: dict[tuple[int, int], LogLikelihood] = {}
        for row, (new_ids, got) in zip(rows.values(), scored, strict=True):
            if row.answer_of is not None:
                answers[row.answer_of] = new_ids or []
            lls.update(zip(row.owners, got, strict=True))
        return [ScoreResult(self.finish(answers[i], r.params.stop) if r.params is not None else None,
                            len(answers[i]) if r.params is not None else None,
                            tuple(lls.get((i, k), LogLikelihood(0.0, 0)) for k in range(len(r.continuations))))
                for i, r in enumerate(requests)]


@dataclass
class _EngineRow:
    """What `TokenBackend.score` hands the engine for one prompt: its ids, its generation params (None:
    likelihoods only), the request whose answer it is, and the (request, continuation) of each
    continuation with its ids."""

    prompt: list[int]
    params: GenerationParams | None
    answer_of: int | None
    owners: list[tuple[int, int]] = field(default_factory=list)
    conts: list[list[int]] = field(default_factory=list)


BACKENDS: dict[str, type[Backend]] = {}
# Modules that define the shipped backends, imported on first use (vLLM is an optional extra).
_BACKEND_MODULES = {"hf": "ort_bench.scoring.backends.hf", "vllm": "ort_bench.scoring.backends.vllm",
                    "openai": "ort_bench.scoring.backends.openai"}


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
