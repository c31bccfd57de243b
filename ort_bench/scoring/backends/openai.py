"""The openai backend: any OpenAI-compatible completions endpoint (``vllm serve``, SGLang, a provider).

``--model`` (and ``--reference``) name models the server at ``--base-url`` serves (their ids in its
``/models`` list); the key, if any, comes from the environment variable ``--api-key-env`` names.
Prompts are formatted here as for every backend (the model's chat template, from ``--tokenizer`` or
the root the server reports; ``ort_bench.models.served``) and sent as text to ``/completions``.

- Answers: greedy (temperature 0, top_p 1, explicit seed; on vLLM its own sampling knobs pinned too),
  then the shared answer rule (leading whitespace dropped, cut at a stop string, stripped).
- Likelihoods: the prompt log-probabilities the endpoint echoes (``echo`` with ``logprobs`` and one
  new token, as lm-evaluation-harness's ``local-completions`` asks), of context + continuation sent
  as one text. The continuation's tokens are those at or after the context's end by the echoed
  ``text_offset``; the first of them must start exactly there and their texts must add up to the
  continuation, else the pair is refused in one line (the endpoint's tokens do not split the two,
  so nothing the other backends compute can be read off). An endpoint that echoes no prompt
  log-probabilities is found before any probe is scored and said in one line; its free answers are
  then scored without ORT's Prob, and the choice forms not at all (results.json: ``model.unscored``).
- Requests run on at most ``--max-concurrency`` threads; each has ``--request-timeout`` and
  ``--max-retries`` retries with exponential backoff on 429, 5xx, timeouts and refused connections.
  Records are written chunk by chunk as for every backend, so a killed run resumes where it stopped.

Equality with the offline backends holds when the endpoint tokenizes context + continuation as
they do apart (true of every pair of the core tier with SmolLM2's tokenizer) and its tokenizer adds
no BOS (on vLLM ``add_special_tokens`` is turned off).
"""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.models.load_options import LoadOptions
from ort_bench.models.prompting import format_prompt, join_continuation
from ort_bench.models.resolve import ResolvedModel
from ort_bench.models.served import (
    EndpointError,
    ServedClient,
    ServedModel,
    answer_of,
    generation_body,
    is_vllm,
    load_served_tokenizer,
    resolve_served,
)
from ort_bench.scoring.backends.base import (
    Backend,
    GenerationParams,
    LogLikelihood,
    ScoreRequest,
    ScoreResult,
    cut_at_stop,
    register_backend,
)

if importlib.util.find_spec("requests") is None:
    raise ImportError("the openai backend needs the requests package", name="requests")

DEFAULT_CONCURRENCY = 8
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_RETRIES = 5


class NoPromptLogprobs(OrtBenchError):
    """The endpoint answered but echoed no prompt log-probabilities."""


def _client(base_url: str | None, api_key_env: str | None, request_timeout: float, max_retries: int) -> ServedClient:
    if not base_url:
        raise OrtBenchError("--backend openai needs --base-url (the endpoint, e.g. http://127.0.0.1:8000/v1)")
    return ServedClient(base_url, api_key_env=api_key_env, timeout=request_timeout, max_retries=max_retries)


@register_backend("openai")
class OpenAIBackend(Backend):
    load_options = ()  # nothing is loaded here: dtype, device and remote code are the server's

    @classmethod
    def resolve(cls, spec: str, options: LoadOptions, *, base_url: str | None = None, api_key_env: str | None = None,
                tokenizer: str | None = None, request_timeout: float = DEFAULT_TIMEOUT_S,
                max_retries: int = DEFAULT_RETRIES, **engine: Any) -> ResolvedModel:
        """The served model `spec` names and its (weaker) fingerprint; see `ort_bench.models.served`."""
        client = _client(base_url, api_key_env, request_timeout, max_retries)
        try:
            return resolve_served(spec, client, tokenizer)
        finally:
            client.close()

    def __init__(self, model: ResolvedModel, options: LoadOptions | None = None, seed: int = 0,
                 base_url: str | None = None, api_key_env: str | None = None, tokenizer: str | None = None,
                 max_concurrency: int = DEFAULT_CONCURRENCY, request_timeout: float = DEFAULT_TIMEOUT_S,
                 max_retries: int = DEFAULT_RETRIES):
        if max_concurrency < 1:
            raise OrtBenchError(f"--max-concurrency must be at least 1 (got {max_concurrency})")
        self.client = _client(base_url, api_key_env, request_timeout, max_retries)
        if not isinstance(model, ServedModel):
            model = resolve_served(model.spec, self.client, tokenizer)
        self.model_info = model
        self.served_name = model.spec
        self.vllm = is_vllm(model.card)
        self.seed = seed
        self.max_concurrency = max_concurrency
        self.tokenizer = load_served_tokenizer(model.tokenizer_source)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="ort-bench-openai")
        self._check_prompt_logprobs()

    def settings(self) -> dict[str, Any]:
        return {"backend": self.name, "base_url": self.client.base_url, "served_model": self.served_name,
                "max_concurrency": self.max_concurrency, "request_timeout": self.client.timeout,
                "max_retries": self.client.max_retries, "vllm_server": self.vllm}

    def close(self) -> None:
        """Cancel what has not started and stop the client (requests in flight end with their current
        attempt), so that a failed or interrupted run exits instead of waiting for retries."""
        pool = self.__dict__.pop("_pool", None)
        if pool is not None:
            self.client.close()
            pool.shutdown(wait=False, cancel_futures=True)

    # -- requests
    def _url(self) -> str:
        return self.client.base_url + "/completions"

    def _check_prompt_logprobs(self) -> None:
        """Ask once, before any probe, whether the endpoint echoes prompt log-probabilities. If not, say
        so in one line and score free answers only (`no_likelihoods`): their Prob and the choice forms
        need them, and the results list those forms as not scored."""
        context = format_prompt(self.tokenizer, "What is the capital of France?")
        try:
            self._loglikelihood_one(context, join_continuation(context, "Paris"))
            return
        except NoPromptLogprobs as exc:
            why = str(exc)
        except EndpointError as exc:
            if exc.status not in (400, 404, 422):  # a request of this form refused: no prompt log-probabilities
                raise
            why = f"{self._url()}: the endpoint refuses echo with logprobs ({exc.detail})"
        self.no_likelihoods = why
        print(f"warning: {why}; free answers of {self.served_name!r} are scored without ORT's Prob, and the choice "
              "forms are not scored (results.json: model.unscored)", file=sys.stderr)

    def _generate_one(self, prompt: str, params: GenerationParams) -> tuple[str, int | None]:
        body = generation_body(self.served_name, prompt, params.max_new_tokens, temperature=params.temperature,
                               seed=params.seed, stop=params.stop, vllm=self.vllm)
        text, new_tokens = answer_of(self.client.post("/completions", body), self._url())
        return cut_at_stop(text.lstrip(), params.stop).strip(), new_tokens

    def _loglikelihood_one(self, context: str, continuation: str) -> LogLikelihood:
        if not continuation:
            return LogLikelihood(0.0, 0)
        if not context:
            raise OrtBenchError(f"{self._url()}: an empty context: the endpoint gives the first token no "
                                "log-probability to score a continuation from")
        full = context + continuation
        body = {"model": self.served_name, "prompt": full, "max_tokens": 1, "temperature": 0.0, "echo": True,
                "logprobs": 1, "seed": self.seed, "stream": False}
        if self.vllm:
            body["add_special_tokens"] = False
        resp = self.client.post("/completions", body)
        return continuation_logprob(resp, context, continuation, self._url())

    def _map(self, fn: Any, jobs: list[tuple[Any, ...]]) -> list[Any]:
        """`fn(*job)` for every job on the pool, results in order; the first failure cancels what has
        not started and is raised."""
        futures = [self._pool.submit(fn, *job) for job in jobs]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    # -- the interface
    def generate(self, prompts: list[str], params: GenerationParams) -> list[str]:
        return [text for text, _ in self._map(self._generate_one, [(p, params) for p in prompts])]

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LogLikelihood]:
        if self.no_likelihoods is not None and requests:
            raise OrtBenchError(f"{self.no_likelihoods}: no likelihood can be scored there")
        return self._map(self._loglikelihood_one, list(requests))

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Every answer and every likelihood of `requests` on one pool (answers keep their token counts)."""
        if self.no_likelihoods is not None and any(r.continuations for r in requests):
            raise OrtBenchError(f"{self.no_likelihoods}: no likelihood can be scored there")
        jobs: list[tuple[Any, ...]] = []
        for r in requests:
            if r.params is not None:
                jobs.append((self._generate_one, r.context, r.params))
            jobs += [(self._loglikelihood_one, r.context, c) for c in r.continuations]
        done = iter(self._map(lambda fn, *args: fn(*args), jobs))
        out = []
        for r in requests:
            text, new_tokens = next(done) if r.params is not None else (None, None)
            out.append(ScoreResult(text, new_tokens, tuple(next(done) for _ in r.continuations)))
        return out


def continuation_logprob(resp: dict[str, Any], context: str, continuation: str, url: str) -> LogLikelihood:
    """log p(continuation | context) from an echo of context + continuation: the prompt's tokens are
    those before the one new token (``usage.prompt_tokens``, else those starting inside the text);
    the continuation's are those starting at or after the context's end, and the first of them must
    start exactly there (no token holds the end of the context and the start of the continuation)."""
    full = context + continuation
    try:
        choice = resp["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise OrtBenchError(f"{url}: the answer has no choices[0]") from None
    lp = choice.get("logprobs") or {}
    tokens, offsets, logprobs = lp.get("tokens"), lp.get("text_offset"), lp.get("token_logprobs")
    echoed = isinstance(choice.get("text"), str) and choice["text"].startswith(full)
    if not (echoed and tokens and offsets and logprobs and len(tokens) == len(offsets) == len(logprobs)):
        raise NoPromptLogprobs(f"{url}: the endpoint returns no prompt log-probabilities (echo with logprobs)")
    n_prompt = (resp.get("usage") or {}).get("prompt_tokens")
    if not isinstance(n_prompt, int) or not 0 < n_prompt <= len(tokens):
        n_prompt = sum(1 for o in offsets if o < len(full))
    first = next((i for i in range(n_prompt) if offsets[i] >= len(context)), n_prompt)
    where = f"{url}: {context[-20:]!r} + {continuation[:20]!r}"
    if first == 0:
        raise OrtBenchError(f"{where}: the echoed tokens leave the context empty")
    if first == n_prompt or offsets[first] != len(context):
        raise OrtBenchError(f"{where}: the endpoint's tokens do not split context and continuation (a token "
                            f"runs across their boundary), so the continuation cannot be scored apart")
    if "".join(str(t) for t in tokens[first:n_prompt]) != continuation:
        raise OrtBenchError(f"{where}: the echoed token texts do not add up to the continuation")
    scored = logprobs[first:n_prompt]
    if any(not isinstance(x, int | float) or isinstance(x, bool) for x in scored):
        raise NoPromptLogprobs(f"{url}: the endpoint returns no prompt log-probabilities (echo with logprobs)")
    return LogLikelihood(float(sum(scored)), len(scored))
