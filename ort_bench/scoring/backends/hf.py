"""The transformers backend: batched, length-sorted, left-padded; CPU or GPU.

Prompts arrive fully formatted (``ort_bench.scoring.prompting``) and are tokenized without special tokens.
Generation is greedy unless ``temperature > 0``. Log-likelihoods take one forward pass per batch:
context and continuation are tokenized separately and their ids concatenated, so the continuation's
tokens are exactly the tokens of the answer string whatever the context ends with.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from tqdm.auto import tqdm

from ort_bench.errors import OrtBenchError
from ort_bench.scoring.backends.base import Backend, GenerationParams, LogLikelihood, register_backend
from ort_bench.scoring.load_options import LoadOptions
from ort_bench.scoring.models import ResolvedModel, load_causal_lm, load_tokenizer, resolve_device


def _batches(order: list, size: int) -> list[list]:
    return [order[i:i + size] for i in range(0, len(order), size)]


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    for s in stop:
        if s:
            i = text.find(s)
            if i >= 0:
                text = text[:i]
    return text


@register_backend("hf")
class HFBackend(Backend):
    load_options = ("dtype", "device", "trust_remote_code", "allow_pickle")

    def __init__(self, model: ResolvedModel, options: LoadOptions | None = None, batch_size: int = 16,
                 seed: int = 0, token_budget: int | None = None, progress: bool | None = None):
        import torch

        if batch_size < 1:
            raise OrtBenchError(f"batch size must be at least 1 (got {batch_size})")
        self.model_info = model
        options = options or LoadOptions()
        self.dtype = options.dtype
        self.device = resolve_device(options.device)
        self.batch_size = batch_size
        # likelihood batches are capped in padded tokens too: a CPU gains nothing from long padded
        # batches (measured: 4 short contexts per pass run twice as fast as 32); a GPU does
        self.token_budget = token_budget or (256 if self.device == "cpu" else 32768)
        self.seed = seed
        self.progress = sys.stderr.isatty() if progress is None else progress
        torch.manual_seed(seed)
        self.tokenizer = load_tokenizer(model)
        self.model = load_causal_lm(model, dataclasses.replace(options, device=self.device))
        cfg = self.model.config
        self.max_length = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        import inspect

        self._keep_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        if not self._keep_logits:  # a peft wrapper hides the signature: look at the wrapped model
            base = getattr(self.model, "get_base_model", lambda: self.model)()
            self._keep_logits = "logits_to_keep" in inspect.signature(base.forward).parameters

    def settings(self) -> dict[str, Any]:
        return {"backend": self.name, "dtype": self.dtype, "device": self.device, "batch_size": self.batch_size}

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for v in (gen_eos, self.tokenizer.eos_token_id):
            for i in v if isinstance(v, list | tuple) else [v]:
                if i is not None and i not in ids:
                    ids.append(int(i))
        return ids

    def _left_pad(self, seqs: list[list[int]]):
        """input_ids, attention_mask and position_ids for left-padded sequences."""
        import torch

        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            if s:
                ids[row, width - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[row, width - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    def generate(self, prompts: list[str], params: GenerationParams) -> list[str]:
        """Continuations in input order: special tokens skipped, leading whitespace dropped, cut at
        the first stop string, stripped."""
        import torch
        from transformers import GenerationConfig

        if not prompts:
            return []
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        encoded = [self._encode(p) or ([start] if start is not None else []) for p in prompts]
        if any(not e for e in encoded):
            raise OrtBenchError("an empty prompt and the tokenizer has no BOS or EOS token to start from")
        if self.max_length:
            room = self.max_length - params.max_new_tokens
            encoded = [e[-room:] if room > 0 and len(e) > room else e for e in encoded]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        sample = params.temperature > 0
        eos = self._eos_ids()
        gen_cfg = GenerationConfig(
            max_new_tokens=params.max_new_tokens, do_sample=sample, num_beams=1,
            temperature=params.temperature if sample else None, top_p=None, top_k=None,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos or None,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        out: list[str | None] = [None] * len(prompts)
        torch.manual_seed(params.seed)
        batches = _batches(order, self.batch_size)
        with torch.inference_mode():
            for batch in tqdm(batches, desc="generate", unit="batch", leave=False, disable=not self.progress):
                ids, mask, _ = self._left_pad([encoded[i] for i in batch])
                gen = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)
                new = gen[:, ids.shape[1]:].cpu()
                texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
                for i, text in zip(batch, texts, strict=True):
                    out[i] = cut_at_stop(text.lstrip(), params.stop).strip()
        return [t or "" for t in out]

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[LogLikelihood]:
        """Sum log-probabilities of each continuation given its context. Requests that share a context
        (a probe's answer aliases, an MCQ's options) share one forward pass over it: the context is
        run once with a KV cache, then all its continuations run on copies of that cache."""
        if not requests:
            return []
        prefix = self.tokenizer.bos_token_id
        if prefix is None:
            prefix = self.tokenizer.eos_token_id
        results: list[LogLikelihood | None] = [None] * len(requests)
        ctx_cache: dict[str, list[int]] = {}
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}  # context ids -> (request, cont ids)
        whole: list[tuple[int, list[int], int]] = []  # too long to split: (request, ids, n continuation tokens)
        for i, (ctx, cont) in enumerate(requests):
            cont_ids = self._encode(cont)
            if not cont_ids:
                results[i] = LogLikelihood(0.0, 0)
                continue
            if ctx not in ctx_cache:
                ctx_cache[ctx] = self._encode(ctx)
            ctx_ids = ctx_cache[ctx]
            if not ctx_ids:  # the first continuation token needs something to be predicted from
                if prefix is None:
                    raise OrtBenchError("empty context and the tokenizer has no BOS or EOS token to start from")
                ctx_ids = [prefix]
            full = ctx_ids + cont_ids
            if self.max_length and len(full) > self.max_length:
                full = full[-(self.max_length + 1):]  # drop the oldest context tokens
                whole.append((i, full, min(len(cont_ids), len(full) - 1)))
            else:
                groups.setdefault(tuple(ctx_ids), []).append((i, cont_ids))
        import torch

        with torch.inference_mode():
            self._shared_context(groups, results)
            self._whole_sequences(whole, results)
        return results  # type: ignore[return-value]

    def _shared_context(self, groups: dict[tuple[int, ...], list[tuple[int, list[int]]]],
                        results: list[LogLikelihood | None]) -> None:
        import torch

        contexts = sorted(groups, key=len, reverse=True)
        batches: list[list[tuple[int, ...]]] = []
        for ctx in contexts:  # longest first: a batch's width is its first context's length
            if not batches or len(batches[-1]) >= self.batch_size or \
                    (len(batches[-1]) + 1) * len(batches[-1][0]) > self.token_budget:
                batches.append([])
            batches[-1].append(ctx)
        for batch in tqdm(batches, desc="loglikelihood", unit="batch", leave=False, disable=not self.progress):
            ids, mask, pos = self._left_pad([list(c) for c in batch])
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                             **({"logits_to_keep": 1} if self._keep_logits else {}))
            first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # predicts each first token
            rows = [(b, i, cont) for b, ctx in enumerate(batch) for i, cont in groups[ctx]]
            src = torch.tensor([b for b, _, _ in rows], dtype=torch.long, device=ids.device)
            width = max(len(cont) for _, _, cont in rows)
            totals = first[src, torch.tensor([cont[0] for _, _, cont in rows], device=ids.device)]
            if width > 1:  # the rest of every continuation, on its context's cache
                cache = out.past_key_values
                cache.reorder_cache(src)
                cont_ids = torch.full((len(rows), width - 1), self.tokenizer.pad_token_id, dtype=torch.long)
                cont_mask = torch.zeros((len(rows), width - 1), dtype=torch.long)
                for r, (_, _, cont) in enumerate(rows):
                    cont_ids[r, :len(cont) - 1] = torch.tensor(cont[:-1], dtype=torch.long)
                    cont_mask[r, :len(cont) - 1] = 1
                cont_ids, cont_mask = cont_ids.to(ids.device), cont_mask.to(ids.device)
                full_mask = torch.cat([mask[src], cont_mask], dim=1)
                cont_pos = mask[src].sum(-1, keepdim=True) + torch.arange(width - 1, device=ids.device)[None, :]
                logits = self.model(input_ids=cont_ids, attention_mask=full_mask, position_ids=cont_pos,
                                    past_key_values=cache, use_cache=True).logits.float()
                logprobs = torch.log_softmax(logits, dim=-1)
                for r, (_, _, cont) in enumerate(rows):
                    if len(cont) > 1:
                        target = torch.tensor(cont[1:], dtype=torch.long, device=logprobs.device)
                        totals[r] += logprobs[r, :len(cont) - 1, :].gather(-1, target[:, None]).sum()
            for r, (_, i, cont) in enumerate(rows):
                results[i] = LogLikelihood(float(totals[r]), len(cont))

    def _whole_sequences(self, items: list[tuple[int, list[int], int]], results: list[LogLikelihood | None]) -> None:
        """Requests longer than the model's window: one left-truncated sequence each, batched."""
        import torch

        order = sorted(items, key=lambda it: -len(it[1]))
        for batch in _batches(order, self.batch_size):  # type: ignore[arg-type]
            ids, mask, pos = self._left_pad([seq[:-1] for _, seq, _ in batch])
            keep = max(n for _, _, n in batch)
            kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": pos,
                                      "use_cache": False}
            if self._keep_logits:
                kwargs["logits_to_keep"] = keep
            logprobs = torch.log_softmax(self.model(**kwargs).logits[:, -keep:, :].float(), dim=-1)
            for row, (i, seq, n) in enumerate(batch):
                target = torch.tensor(seq[-n:], dtype=torch.long, device=logprobs.device)
                lp = logprobs[row, keep - n:, :].gather(-1, target[:, None]).squeeze(-1)
                results[i] = LogLikelihood(float(lp.sum()), n)
