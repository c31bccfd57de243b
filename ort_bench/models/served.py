"""A model behind an OpenAI-compatible completions endpoint (``vllm serve``, SGLang, a provider):
the HTTP client, the tokenizer that formats its prompts, and what stands in for its fingerprint.

The client (`ServedClient`) bounds every request: a timeout, and retries with exponential backoff on
429, 5xx, timeouts and refused connections (``Retry-After`` honoured, capped), then one line naming
the URL and what went wrong. The API key is read from the environment variable the user names and
lives only in the request headers: it is in no setting, record, result, error or log line.

A served model's weights cannot be hashed, so its fingerprint (`resolve_served`) hashes what the
server reports about it (its ``/models`` card: id, owner, root, parent, window; the response's
``system_fingerprint``) and its greedy answers to fixed prompts. It is weaker than a weight hash
(results say so, and the leaderboard marks such entries): another model behind the same name that
answers those prompts alike gets the same fingerprint.

Prompts are formatted locally with the model's chat template, as for every backend: the tokenizer
is ``--tokenizer`` (a local directory, ``embedded``, a ``.gguf``, a hub id, or ``none`` for plain
prompts), else the ``root`` the server reports (a hub id or a path on this machine).
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ort_bench.errors import OrtBenchError, one_line
from ort_bench.models.prompting import format_prompt
from ort_bench.models.resolve import EMBEDDED, ResolvedModel
from ort_bench.provenance import sha256_json

FINGERPRINT_NOTE = ("served model: the fingerprint hashes what the server reports (its model card and "
                    "system_fingerprint) and its greedy answers to fixed prompts, not the weights; it is weaker "
                    "than a weight hash (another model behind the same name that answers those prompts alike "
                    "gets the same one)")
# Fixed prompts whose greedy answers go into a served model's fingerprint (changing them changes
# every served fingerprint, so every served record would be scored again).
FINGERPRINT_PROMPTS = ("What is the capital of France?", "Who wrote Hamlet?", "Name a prime number larger than 10.",
                       "Translate 'good morning' into German.")
FINGERPRINT_NEW_TOKENS = 16
# What a /models card says that stays the same across restarts (not `created`, not `permission`).
CARD_FIELDS = ("id", "owned_by", "root", "parent", "max_model_len")

RETRY_BACKOFF_S = 0.5  # first wait; doubled after each failed attempt
MAX_BACKOFF_S = 30.0
CONNECT_TIMEOUT_S = 10.0


class EndpointError(OrtBenchError):
    """The endpoint answered with an error status (`status`), after any retries."""

    def __init__(self, message: str, status: int, detail: str = "") -> None:
        super().__init__(message)
        self.status, self.detail = status, detail


def _retryable(status: int) -> bool:
    return status in (408, 409, 425, 429) or status >= 500


class ServedClient:
    """JSON over HTTP to one endpoint: `base_url` is what the OpenAI clients take (``.../v1``).
    Thread-safe: each thread has its own session."""

    def __init__(self, base_url: str, *, api_key_env: str | None = None, timeout: float = 300.0,
                 max_retries: int = 5) -> None:
        parts = urlsplit(base_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OrtBenchError(f"--base-url {base_url!r}: not an http(s) URL (e.g. http://127.0.0.1:8000/v1)")
        if parts.query or parts.fragment:
            raise OrtBenchError(f"--base-url {base_url!r}: no query string or fragment (paths are appended to it)")
        if parts.username or parts.password:
            raise OrtBenchError("--base-url: no credentials in the URL (they would be recorded); put the key in an "
                                "environment variable and name it with --api-key-env")
        if timeout <= 0 or max_retries < 0:
            raise OrtBenchError(f"request timeout must be positive and retries at least 0 (got {timeout}, "
                                f"{max_retries})")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self._headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env, "")
            if not key:
                raise OrtBenchError(f"--api-key-env {api_key_env}: that environment variable is not set or empty")
            self._headers["Authorization"] = f"Bearer {key}"
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._closed = threading.Event()  # set by `close`: no new attempt, no more waiting between attempts

    def close(self) -> None:
        """Stop: requests in flight end with their current attempt (no retry, no backoff wait), and every
        thread's session is closed, so that a failed or interrupted run exits instead of waiting on them."""
        self._closed.set()
        for session in self._sessions:
            session.close()

    def __repr__(self) -> str:  # never the key
        return f"ServedClient({self.base_url!r})"

    def _session(self) -> Any:
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            self._sessions.append(session)
        return session

    def get(self, path: str) -> dict[str, Any]:
        return self._request("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        import requests

        url = self.base_url + path
        attempts = self.max_retries + 1
        status = None
        for attempt in range(attempts):
            if self._closed.is_set():
                raise OrtBenchError(f"{url}: the client was closed (the run stopped)")
            wait = min(RETRY_BACKOFF_S * 2 ** attempt, MAX_BACKOFF_S)
            try:
                resp = self._session().request(method, url, json=body, headers=self._headers,
                                               timeout=(min(CONNECT_TIMEOUT_S, self.timeout), self.timeout))
            except requests.Timeout:
                problem = f"no answer within {self.timeout:g} s"
            except requests.exceptions.SSLError as exc:  # not retried: the same certificate fails again
                raise OrtBenchError(f"{url}: TLS failed ({one_line(exc)})") from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                problem = f"cannot connect or the connection dropped ({type(exc).__name__})"
            except requests.RequestException as exc:  # a bad URL, redirects, an undecodable body: one line
                raise OrtBenchError(f"{url}: {one_line(exc)}") from None
            else:
                if resp.status_code < 400:
                    try:
                        data = resp.json()
                    except ValueError:
                        raise OrtBenchError(f"{url}: the answer is not JSON ({resp.text[:80]!r})") from None
                    if not isinstance(data, dict):
                        raise OrtBenchError(f"{url}: the answer is not a JSON object")
                    return data
                status = resp.status_code
                problem = f"HTTP {status}{_server_message(resp)}"
                if not _retryable(status):
                    hint = " (check the key in --api-key-env)" if status in (401, 403) else ""
                    raise EndpointError(f"{url}: {problem}{hint}", status, problem)
                after = _retry_after(resp)
                if after is not None:
                    wait = min(after, MAX_BACKOFF_S)
            if attempt + 1 < attempts:
                self._closed.wait(wait)
        message = f"{url}: {problem}, {attempts} attempt{'s' * (attempts > 1)}: giving up"
        raise OrtBenchError(message) if status is None else EndpointError(message, status, problem)


def _server_message(resp: Any) -> str:
    """The error message an OpenAI-style server puts in its body, short, or nothing."""
    try:
        data = resp.json()
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message") if isinstance(err, dict) else err
    except ValueError:
        msg = resp.text
    msg = " ".join(str(msg or "").split())[:200]
    return f": {msg}" if msg else ""


def _retry_after(resp: Any) -> float | None:
    try:
        return max(0.0, float(resp.headers.get("Retry-After", "")))
    except ValueError:
        return None


# --------------------------------------------------------------------------- requests and answers


def is_vllm(card: dict[str, Any]) -> bool:
    return card.get("owned_by") == "vllm"


def generation_body(model: str, prompt: str, max_new_tokens: int, *, temperature: float = 0.0, seed: int = 0,
                    stop: tuple[str, ...] | list[str] = (), vllm: bool = False) -> dict[str, Any]:
    """A /completions request for one answer: greedy unless `temperature` > 0, sampling parameters
    explicit. On vLLM also its own knobs, so that the model's generation_config defaults (which
    ``vllm serve`` applies to what a request leaves out) cannot change greedy decoding, and no BOS is
    added (the chat template already put the special tokens in the prompt)."""
    body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": max_new_tokens, "n": 1,
                            "temperature": temperature if temperature > 0 else 0.0, "top_p": 1.0, "seed": seed,
                            "presence_penalty": 0.0, "frequency_penalty": 0.0, "stream": False}
    stops = [s for s in stop if s]
    if stops:
        body["stop"] = stops
    if vllm:
        body.update(top_k=0, min_p=0.0, repetition_penalty=1.0, add_special_tokens=False)
    return body


def answer_of(resp: dict[str, Any], url: str) -> tuple[str, int | None]:
    """The answer's text and the tokens it took, EOS not counted (None where the server reports no
    usage). A choice that ended on "stop" without a stop string (vLLM's `stop_reason`) ended on EOS."""
    try:
        choice = resp["choices"][0]
        text = choice["text"]
    except (KeyError, IndexError, TypeError):
        raise OrtBenchError(f"{url}: the answer has no choices[0].text") from None
    if not isinstance(text, str):
        raise OrtBenchError(f"{url}: choices[0].text is not a string")
    used = (resp.get("usage") or {}).get("completion_tokens")
    if not isinstance(used, int):
        return text, None
    ended_on_eos = choice.get("finish_reason") == "stop" and not isinstance(choice.get("stop_reason"), str)
    return text, max(used - ended_on_eos, 0)


# --------------------------------------------------------------------------- the tokenizer


class PlainPrompts:
    """`--tokenizer none`: prompts without a chat template (`format_prompt`'s plain form, no BOS)."""

    chat_template = None
    bos_token = None

    def __bool__(self) -> bool:  # a tokenizer is there (so nothing looks for another one)
        return True


@functools.lru_cache(maxsize=4)
def load_served_tokenizer(source: str) -> Any:
    """The tokenizer that formats prompts for a served model: `source` is ``none``, ``embedded``, a
    directory, a ``.gguf`` file or a hub id (its tokenizer files only)."""
    if source == "none":
        return PlainPrompts()
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {}
    src = source
    if source == EMBEDDED:
        from ort_bench.models.gguf import embedded_gguf_path, gguf_to_dir

        src = str(gguf_to_dir(embedded_gguf_path())[0])
    elif Path(source).expanduser().is_file() and source.lower().endswith(".gguf"):
        from ort_bench.models.gguf import gguf_to_dir

        src = str(gguf_to_dir(Path(source).expanduser())[0])
    elif Path(source).expanduser().is_dir():
        src = str(Path(source).expanduser())
        kwargs["local_files_only"] = True
    try:
        return AutoTokenizer.from_pretrained(src, **kwargs)
    except Exception as exc:
        raise OrtBenchError(f"{source}: cannot load a tokenizer there ({one_line(exc)}); pass --tokenizer "
                            "(a model directory, embedded, a hub id, or none for plain prompts)") from None


# --------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class ServedModel(ResolvedModel):
    """A model behind an endpoint. `path`: the checkpoint folder its name is (read for its cards only; no
    weights are loaded here), else os.devnull; `served` is what results say
    about it (where, what the server reported, the tokenizer, how weak its fingerprint is)."""

    served: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    tokenizer_source: str = "none"


def served_card(client: ServedClient, name: str) -> dict[str, Any]:
    """The server's /models card for `name` (its stable fields), or one line listing what it serves."""
    data = client.get("/models").get("data")
    cards = [c for c in data if isinstance(c, dict)] if isinstance(data, list) else []
    for card in cards:
        if card.get("id") == name:
            return {k: card[k] for k in CARD_FIELDS if k in card}
    names = ", ".join(sorted(str(c.get("id")) for c in cards)) or "nothing"
    raise OrtBenchError(f"{client.base_url}: serves no model {name!r} (it serves: {names})")


def resolve_served(name: str, client: ServedClient, tokenizer: str | None = None) -> ServedModel:
    """Served model `name`: its card, the tokenizer that formats its prompts, and its fingerprint from
    the card, the server's `system_fingerprint` and its greedy answers to `FINGERPRINT_PROMPTS`
    (asked one after another, so that no batching changes them)."""
    card = served_card(client, name)
    source = tokenizer or card.get("root")
    if not source:
        raise OrtBenchError(f"{client.base_url}: the server reports no root for {name!r} to take its tokenizer "
                            "from; pass --tokenizer (a model directory, embedded, a hub id, or none)")
    tok = load_served_tokenizer(str(source))
    probes, system_fp = [], None
    for prompt in FINGERPRINT_PROMPTS:
        text = format_prompt(tok, prompt)
        resp = client.post("/completions", generation_body(name, text, FINGERPRINT_NEW_TOKENS, vllm=is_vllm(card)))
        probes.append([text, answer_of(resp, client.base_url + "/completions")[0]])
        system_fp = resp.get("system_fingerprint") or system_fp
    fingerprint = sha256_json({"card": card, "system_fingerprint": system_fp, "probes": probes})
    served = {"base_url": client.base_url, "card": card, "system_fingerprint": system_fp, "tokenizer": str(source),
              "probe_outputs_sha256": sha256_json(probes), "weak_fingerprint": True, "note": FINGERPRINT_NOTE}
    # `vllm serve runs/npo` serves the checkpoint under its own path: its unlearn card is read from there
    # (what made the model, which prompts it trained on), as for a local checkpoint; else there is none
    local = Path(name).expanduser()
    path = local.resolve() if local.is_dir() else Path(os.devnull)
    return ServedModel(name, "served", path, None, fingerprint, False, served=served, card=card,
                       tokenizer_source=str(source))
