"""The transformers backend: batched, one prefill per prompt, shared system prefix; CPU or GPU.

Where the FLOPs go (and what is saved): every chat prompt starts with the same system turn, so the
longest token prefix shared by a call's prompts is run once and its KV cache is copied to every row of
every batch (rows are laid out prefix | padding | own tokens, with an attention mask and explicit
positions so each row sees exactly its own unpadded sequence). A prompt's generation and the
likelihoods of its continuations (a probe's gold answer and aliases, an item's options) share the one
prefill of the prompt: the prompt's last logits predict both the first answer token and each
continuation's first token, and the continuations run on copies of its cache. Greedy decoding is our
own loop over a pool of rows: a row leaves at its EOS (or its stop string) instead of decoding to the
limit, and newly prefilled rows join (their caches padded on the left to the pool's width), so every
decoding step, whose cost on a CPU is mostly reading the weights once, carries as many rows as it can.
Measured on the embedded model: answers identical to the plain batched path on the 972 probes of the
core tier, log-likelihoods within 4e-5 nats (`benchmarks/README.md`). The token rules (tokenization
without special tokens, empty contexts, the window) are the shared `TokenBackend` layer's.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from ort_bench.errors import OrtBenchError
from ort_bench.models import ResolvedModel, load_causal_lm, load_tokenizer, resolve_device
from ort_bench.models.load_options import LoadOptions
from ort_bench.scoring.backends.base import GenerationParams, LogLikelihood, TokenBackend, cut_at_stop, register_backend

__all__ = ["HFBackend"]

MIN_SHARED_PREFIX = 4  # tokens: a shorter common prefix is not worth a separate pass


@dataclasses.dataclass
class _Row:
    """One prompt in the engine: its ids, the continuations scored after it, its generation params,
    the answer's token ids so far."""

    index: int
    prompt: list[int]
    conts: list[list[int]]
    params: GenerationParams | None
    answer: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Decoding:
    """Rows decoded together: their KV cache, attention mask (batch x cached columns), the position of
    each row's next token, and the log-probabilities of that token."""

    rows: list[_Row]
    cache: Any
    mask: Any
    next_pos: Any
    logprobs: Any

    def take(self, keep: list[int]) -> None:
        """Keep only these rows (indices into `rows`)."""
        import torch

        idx = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(idx)
        self.rows = [self.rows[j] for j in keep]
        self.mask, self.next_pos, self.logprobs = self.mask[idx], self.next_pos[idx], self.logprobs[idx]

    def compact(self) -> None:
        """Drop the leftmost cache columns that no row still in the pool attends to (they were held by
        rows that left), so that the pool is as wide as its rows' own sequences, not as everything it
        ever held (a refilled pool would otherwise widen by one column per step for the whole call)."""
        used = self.mask.any(0).nonzero()
        first = int(used[0, 0]) if len(used) else 0
        if first >= MIN_SHARED_PREFIX:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]
            self.mask = self.mask[:, first:]

    def merge(self, other: _Decoding) -> _Decoding:
        """Both sets of rows in one: the shorter cache is padded on the left (masked out; positions are
        each row's own, so no row sees a difference)."""
        import torch

        width = max(self.mask.shape[1], other.mask.shape[1])

        def left_pad(x: Any, dim: int) -> Any:
            missing = width - x.shape[dim]
            if not missing:
                return x
            shape = list(x.shape)
            shape[dim] = missing
            return torch.cat([x.new_zeros(shape), x], dim=dim)

        cache = copy.copy(self.cache)
        cache.layers = []
        for a, b in zip(self.cache.layers, other.cache.layers, strict=True):
            layer = copy.copy(a)
            layer.keys = torch.cat([left_pad(a.keys, -2), left_pad(b.keys, -2)])
            layer.values = torch.cat([left_pad(a.values, -2), left_pad(b.values, -2)])
            cache.layers.append(layer)
        return _Decoding(self.rows + other.rows, cache, torch.cat([left_pad(self.mask, 1), left_pad(other.mask, 1)]),
                         torch.cat([self.next_pos, other.next_pos]), torch.cat([self.logprobs, other.logprobs]))


def _select(cache: Any, rows: Any) -> Any:
    """A cache holding the given batch rows of `cache` (repeats allowed); `cache` is left as it is."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    out.batch_select_indices(rows)
    return out


@register_backend("hf")
class HFBackend(TokenBackend):
    load_options = ("dtype", "device", "trust_remote_code", "allow_pickle")

    def __init__(self, model: ResolvedModel, options: LoadOptions | None = None, batch_size: int = 16,
                 seed: int = 0, token_budget: int | None = None, progress: bool | None = None,
                 decode_batch: int | None = None):
        import inspect

        import torch

        if batch_size < 1:
            raise OrtBenchError(f"batch size must be at least 1 (got {batch_size})")
        self.model_info = model
        options = options or LoadOptions()
        self.dtype = options.dtype
        self.device = resolve_device(options.device)
        self.batch_size = batch_size
        # a batch is capped in padded tokens too: a CPU gains nothing from long padded batches
        # (measured: 4 short contexts per pass run twice as fast as 32); a GPU does
        self.token_budget = token_budget or (512 if self.device == "cpu" else 65536)
        # rows decoded together: a step costs about the same for 1 row or 32 (it reads every weight)
        self.decode_batch = decode_batch or 4 * batch_size
        self.seed = seed
        self.progress = sys.stderr.isatty() if progress is None else progress
        torch.manual_seed(seed)
        self.tokenizer = load_tokenizer(model)
        self.model = load_causal_lm(model, dataclasses.replace(options, device=self.device))
        cfg = self.model.config
        self.max_length = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        base = getattr(self.model, "get_base_model", lambda: self.model)()  # a peft wrapper hides the signature
        self._keep_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        self._prefix: tuple[tuple[int, ...], Any] | None = None  # the last shared prefix and its cache
        self.tokens_processed = 0  # tokens through the model (padding included): the FLOPs spent
        self._plain: bool | None = None  # whether the model's KV cache can be shared (found on first use)
        self._eos = set(self.eos_ids())

    def settings(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": self.dtype, "device": self.device, "batch_size": self.batch_size}

    # -- the engine's calls
    def _generate_tokens(self, prompts: list[list[int]], params: GenerationParams) -> list[list[int]]:
        return [ids or [] for ids, _ in self._score_tokens([(p, [], params) for p in prompts])]

    def _loglikelihood_tokens(self, requests: list[tuple[list[int], list[int]]]) -> list[LogLikelihood]:
        return [lls[0] for _, lls in self._score_tokens([(ctx, [cont], None) for ctx, cont in requests])]

    def _score_tokens(self, requests: list[tuple[list[int], list[list[int]], GenerationParams | None]],
                      ) -> list[tuple[list[int] | None, list[LogLikelihood]]]:
        """Prefill in small batches (each scores its rows' continuations at once); rows that generate join
        one decoding pool of up to `decode_batch` rows, which is refilled as rows finish, so that every
        decoding step (its cost is mostly reading the weights) carries as many rows as it can."""
        import torch

        rows = [_Row(i, list(p), [list(c) for c in conts], params) for i, (p, conts, params) in enumerate(requests)]
        results: list[tuple[list[int] | None, list[LogLikelihood]]] = [(None, []) for _ in rows]
        if not rows:
            return results
        n_prefix, shared = self._shared_prefix([r.prompt for r in rows])
        prefix_cache = self._prefix_cache(rows[min(shared)].prompt[:n_prefix]) if n_prefix else None
        pending = deque(self._prefill_batches(rows, n_prefix, shared))
        torch.manual_seed(next((r.params.seed for r in rows if r.params is not None), self.seed))
        pool: _Decoding | None = None
        bar = tqdm(total=len(rows), desc="score", unit="prompt", leave=False, disable=not self.progress)
        with torch.inference_mode():
            while pending or pool is not None:
                while pending and (pool is None or self._plain_cache() and
                                   len(pool.rows) + len(pending[0][1]) <= self.decode_batch):
                    n, batch = pending.popleft()
                    state = self._prefill(batch, n, prefix_cache if n else None)
                    for row, lls in zip(batch, self._continuations(state), strict=True):
                        results[row.index] = (None, lls)
                    gen = [b for b, r in enumerate(batch) if r.params is not None]
                    bar.update(len(batch) - len(gen))
                    if gen:
                        state.take(gen)
                        pool = state if pool is None else pool.merge(state)
                if pool is not None:
                    for row in self._step(pool):
                        results[row.index] = (row.answer, results[row.index][1])
                        bar.update(1)
                    if not pool.rows:
                        pool = None
        bar.close()
        return results

    # -- the parts
    def _shared_prefix(self, prompts: list[list[int]]) -> tuple[int, set[int]]:
        """The shared prefix that saves the most tokens: its length and the prompts that start with it
        (each keeps at least one token of its own). Prompts are compared with the most common start,
        so one prompt with another system turn does not spoil the rest. (0, {}) when the model's cache
        cannot be shared (a sliding window or another non-plain cache layer)."""
        if len(prompts) < 2 or not self._plain_cache():
            return 0, set()
        starts = Counter(tuple(p[:32]) for p in prompts)
        ref = next(p for p in prompts if tuple(p[:32]) == starts.most_common(1)[0][0])
        common = []
        for p in prompts:
            n, k = min(len(ref), len(p) - 1), 0
            while k < n and p[k] == ref[k]:
                k += 1
            common.append(k)
        best = max(set(common), key=lambda n: (n * sum(c >= n for c in common), n))
        shared = {i for i, c in enumerate(common) if c >= best}
        if best < MIN_SHARED_PREFIX or len(shared) < 2:
            return 0, set()
        return best, shared

    def _plain_cache(self) -> bool:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        if self._plain is None:
            try:
                cache = DynamicCache(config=self.model.config)
                self._plain = type(cache) is DynamicCache and all(type(x) is DynamicLayer for x in cache.layers)
            except Exception:  # a model whose config the cache does not understand: do not share
                self._plain = False
        return self._plain

    def _prefix_cache(self, prefix: list[int]) -> Any:
        """The KV cache of `prefix` (batch 1), kept for the next call with the same prefix."""
        import torch

        if self._prefix is None or self._prefix[0] != tuple(prefix):
            ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
            with torch.inference_mode():
                out = self.model(input_ids=ids, use_cache=True, **({"logits_to_keep": 1} if self._keep_logits else {}))
            self.tokens_processed += len(prefix)
            self._prefix = (tuple(prefix), out.past_key_values)
        return self._prefix[1]

    def _forward(self, ids: Any, mask: Any, pos: Any, cache: Any, keep: int | None) -> Any:
        self.tokens_processed += ids.numel()
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": pos,
                                  "past_key_values": cache, "use_cache": True}
        if keep is not None and self._keep_logits:
            kwargs["logits_to_keep"] = keep
        return self.model(**kwargs)

    def _prefill_batches(self, rows: list[_Row], n_prefix: int, shared: set[int]) -> list[tuple[int, list[_Row]]]:
        """(prefix length, rows) batches: rows after the shared prefix first, then the others; longest
        own part first, so that a batch's padding is small; capped in rows and in padded tokens."""
        batches: list[tuple[int, list[_Row]]] = []
        for n, group in ((n_prefix, [r for r in rows if r.index in shared]),
                         (0, [r for r in rows if r.index not in shared])):
            batches += [(n, b) for b in self._capped(group, lambda r, n=n: len(r.prompt) - n)]
        return batches

    def _capped(self, items: list[Any], width: Callable[[Any], int]) -> list[list[Any]]:
        """`items` in batches, longest first (a batch is as wide as its first item), each at most
        `batch_size` items and `token_budget` padded tokens."""
        batches: list[list[Any]] = []
        for item in sorted(items, key=lambda x: -width(x)):
            if not batches or len(batches[-1]) >= self.batch_size or \
                    (len(batches[-1]) + 1) * width(batches[-1][0]) > self.token_budget:
                batches.append([])
            batches[-1].append(item)
        return batches

    def _prefill(self, batch: list[_Row], n_prefix: int, prefix_cache: Any) -> _Decoding:
        """Run the batch's prompts (after the shared prefix, whose cache is copied to every row)."""
        import torch

        dev = self.device
        own = [r.prompt[n_prefix:] for r in batch]
        width = max(len(s) for s in own)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), n_prefix + width), dtype=torch.long)
        mask[:, :n_prefix] = 1
        for b, s in enumerate(own):
            ids[b, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[b, n_prefix + width - len(s):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, n_prefix:]
        cache = None
        if prefix_cache is not None:
            cache = _select(prefix_cache, torch.zeros(len(batch), dtype=torch.long, device=dev))
        out = self._forward(ids, mask, pos, cache, keep=1)
        # the last logits predict each row's next token: its answer's first and every continuation's first
        return _Decoding(list(batch), out.past_key_values, mask, mask.sum(-1),
                         torch.log_softmax(out.logits[:, -1, :].float(), dim=-1))

    def _continuations(self, state: _Decoding) -> list[list[LogLikelihood]]:
        """log p(continuation | prompt) of every row's continuations, on copies of the prompts' cache."""
        import torch

        dev = self.device
        pairs = [(b, c) for b, r in enumerate(state.rows) for c in r.conts]
        totals = [0.0] * len(pairs)
        if pairs:
            totals = state.logprobs[torch.tensor([b for b, _ in pairs], device=dev),
                                    torch.tensor([c[0] for _, c in pairs], device=dev)].tolist()
        # the rest of every longer continuation, in groups capped like a batch
        longer = [k for k, (_, c) in enumerate(pairs) if len(c) > 1]
        for group in self._capped(longer, lambda k: len(pairs[k][1]) - 1):
            src = torch.tensor([pairs[k][0] for k in group], dtype=torch.long, device=dev)
            width = len(pairs[group[0]][1]) - 1
            ids = torch.zeros((len(group), width), dtype=torch.long)
            cmask = torch.zeros((len(group), width), dtype=torch.long)
            for g, k in enumerate(group):
                c = pairs[k][1]
                ids[g, :len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
                cmask[g, :len(c) - 1] = 1
            ids, cmask = ids.to(dev), cmask.to(dev)
            pos = state.next_pos[src][:, None] + torch.arange(width, device=dev)[None, :]
            logits = self._forward(ids, torch.cat([state.mask[src], cmask], dim=1), pos, _select(state.cache, src),
                                   keep=None).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for g, k in enumerate(group):
                c = pairs[k][1]
                target = torch.tensor(c[1:], dtype=torch.long, device=dev)
                totals[k] += float(logprobs[g, :len(c) - 1, :].gather(-1, target[:, None]).sum())
        out: list[list[LogLikelihood]] = [[] for _ in state.rows]
        for (b, c), total in zip(pairs, totals, strict=True):
            out[b].append(LogLikelihood(float(total), len(c)))
        return out

    def _step(self, pool: _Decoding) -> list[_Row]:
        """One decoding step of the pool: each row takes its next token (greedy, or sampled where
        temperature > 0); rows at their EOS (not kept), stop string or token limit leave; the rest run
        one token further. Returns the rows that finished."""
        import torch

        eos = self._eos
        nxt = self._next_tokens(pool.logprobs, [r.params for r in pool.rows])
        keep, done = [], []
        for j, (row, tok) in enumerate(zip(pool.rows, nxt.tolist(), strict=True)):
            params = row.params
            if tok not in eos:
                row.answer.append(tok)
                stopped = bool(params.stop) and self._stopped(row.answer, params.stop)
                if len(row.answer) < params.max_new_tokens and not stopped:
                    keep.append(j)
                    continue
            done.append(row)
        if len(keep) < len(pool.rows):
            pool.take(keep)
            pool.compact()
            nxt = nxt[torch.tensor(keep, dtype=torch.long, device=nxt.device)]
        if pool.rows:
            pool.mask = torch.cat([pool.mask, torch.ones((len(keep), 1), dtype=pool.mask.dtype, device=self.device)], 1)
            out = self._forward(nxt[:, None], pool.mask, pool.next_pos[:, None], pool.cache, keep=1)
            pool.cache, pool.next_pos = out.past_key_values, pool.next_pos + 1
            pool.logprobs = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        return done

    def _next_tokens(self, logprobs: Any, params: list[GenerationParams]) -> Any:
        import torch

        nxt = logprobs.argmax(-1)
        for j, p in enumerate(params):
            if p.temperature > 0:
                probs = torch.softmax(logprobs[j] / p.temperature, dim=-1)
                nxt[j] = torch.multinomial(probs, 1)[0]
        return nxt

    def _stopped(self, ids: list[int], stop: tuple[str, ...]) -> bool:
        text = self.tokenizer.decode(ids, skip_special_tokens=True).lstrip()
        return cut_at_stop(text, stop) != text
