"""ROCR's second-moment statistics of MLP keys (ORT's `layer_stats.py`), cached on disk.

`key_covariances` returns, per layer, the eigendecomposition of the uncentred covariance E[k k^T] of
the MLP down-projection's inputs over every token of a general-text corpus. ROCR's null-space
projector is built from it. It costs a forward pass over the corpus, so it is cached (one file per
layer under `$ORT_BENCH_CACHE/rocr`), keyed by a hash of everything it depends on: the weights that
feed the layer (non-layer parameters and layers 0..l, hashed from the live tensors, so an in-memory
edited model never reuses another's entry), the model config, dtype, the token ids of the corpus
(so the corpus text, the tokenizer and its chat template), the layer and `COV_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.unlearning.methods.base import Example, collect_inputs, decoder_layers, mlp_down_proj

COV_VERSION = 1  # bump when what a cached covariance holds changes


def _tensor_bytes(t) -> bytes:
    import torch

    return t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()


def layer_weight_digests(model, layers_needed: list[int]) -> dict[int, str]:
    """For each layer l, a sha256 over everything that determines layer l's MLP keys: all
    parameters outside the decoder layers, layers 0..l (names, shapes, dtypes, bytes), the config."""
    blocks = decoder_layers(model)
    block_ids = {id(p): i for i, b in enumerate(blocks) for p in b.parameters()}
    head = hashlib.sha256()
    cfg = model.config.to_dict()
    for k in ("_name_or_path", "transformers_version", "name_or_path"):
        cfg.pop(k, None)
    head.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, p in model.named_parameters():
        if id(p) not in block_ids:
            head.update(f"{name}|{tuple(p.shape)}|{p.dtype}".encode())
            head.update(_tensor_bytes(p))
    digests: dict[int, str] = {}
    running = head.hexdigest()
    for i in range(max(layers_needed) + 1):
        h = hashlib.sha256(running.encode())
        for name, p in blocks[i].named_parameters():
            h.update(f"{i}.{name}|{tuple(p.shape)}|{p.dtype}".encode())
            h.update(_tensor_bytes(p))
        running = h.hexdigest()
        digests[i] = running
    return {layer: digests[layer] for layer in layers_needed}


def corpus_token_ids(tokenizer, texts: list[str | Example], max_tokens: int, max_length: int = 128) -> list[list[int]]:
    """Tokenized general texts (Examples through the chat template, strings after BOS), in order,
    until `max_tokens` tokens."""
    from ort_bench.models.prompting import format_prompt, join_continuation

    out: list[list[int]] = []
    total = 0
    bos = getattr(tokenizer, "bos_token", None) or ""
    for t in texts:
        if isinstance(t, Example):
            ctx = format_prompt(tokenizer, t.prompt, t.system, t.prefill)
            text = ctx + join_continuation(ctx, t.answer)
        else:
            text = t if (not bos or t.startswith(bos)) else bos + t
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        if len(ids) < 2:
            continue
        out.append(ids)
        total += len(ids)
        if total >= max_tokens:
            break
    return out


def cache_dir_for(cache_dir: str | None) -> Path:
    """The covariance cache folder: `cache_dir`, else `$ORT_BENCH_CACHE/rocr`."""
    if cache_dir:
        return Path(cache_dir)
    from ort_bench.models import cache_root

    return cache_root() / "rocr"


def key_covariances(model, tokenizer, texts: list[str | Example], layers: list[int], max_tokens: int,
                    cache_dir: Path, batch_size: int = 8) -> tuple[dict[int, tuple[Any, Any]], dict[str, Any]]:
    """Eigendecomposition (eigvals ascending, eigvecs as columns) of the uncentred covariance
    E[k k^T] of the down-projection inputs at every token of the corpus, per layer; from the disk
    cache when an entry with the same key exists. Returns ({layer: (eigvals, eigvecs)}, info)."""
    import torch
    from safetensors.torch import load_file, save_file

    t0 = time.perf_counter()
    docs = corpus_token_ids(tokenizer, texts, max_tokens)
    if not docs:
        raise OrtBenchError("rocr: the general-text corpus for the key covariance is empty")
    corpus_digest = hashlib.sha256(json.dumps(docs, separators=(",", ":")).encode()).hexdigest()
    dtype = str(next(model.parameters()).dtype)
    digests = layer_weight_digests(model, layers)
    keys = {
        layer: hashlib.sha256(json.dumps({
            "version": COV_VERSION, "layer": layer, "weights": digests[layer], "corpus": corpus_digest,
            "arch": type(model).__name__, "dtype": dtype, "contexts": "all-tokens",
        }, sort_keys=True).encode()).hexdigest()
        for layer in layers
    }
    paths = {layer: cache_dir / f"cov-L{layer}-{keys[layer][:40]}.safetensors" for layer in layers}
    result: dict[int, tuple[Any, Any]] = {}
    hits = []
    for layer in layers:
        if paths[layer].is_file():
            try:
                data = load_file(str(paths[layer]))
                result[layer] = (data["eigvals"].double(), data["eigvecs"].double())
                hits.append(layer)
            except Exception:  # a corrupt entry is recomputed
                pass
    hash_seconds = time.perf_counter() - t0
    missing = [layer for layer in layers if layer not in result]
    n_tokens = sum(len(d) for d in docs)
    if missing:
        from ort_bench.unlearning.methods.training import collate, pad_id

        device = next(model.parameters()).device
        blocks = decoder_layers(model)
        mods = {layer: mlp_down_proj(blocks[layer]).module for layer in missing}
        acc = {layer: None for layer in missing}
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for i in range(0, len(docs), batch_size):
                batch = collate([{"input_ids": d, "labels": d} for d in docs[i:i + batch_size]], pad_id(tokenizer),
                                device)
                got = collect_inputs(mods, lambda batch=batch: model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False),
                    stop_after=blocks[max(missing)])
                m = batch["attention_mask"].bool()
                for layer in missing:
                    k = got[layer][m].double()
                    c = k.T @ k
                    acc[layer] = c if acc[layer] is None else acc[layer] + c
        model.train(was_training)
        cache_dir.mkdir(parents=True, exist_ok=True)
        for layer in missing:
            cov = (acc[layer] / n_tokens).cpu()
            evals, evecs = (t.float().contiguous() for t in torch.linalg.eigh(cov))
            result[layer] = (evals.double(), evecs.double())  # as stored: a cache hit gives the same edit
            meta = {"key": keys[layer], "layer": str(layer), "tokens": str(n_tokens), "corpus": corpus_digest,
                    "version": str(COV_VERSION)}
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
            os.close(fd)
            try:
                save_file({"eigvals": evals, "eigvecs": evecs}, tmp, metadata=meta)
                os.replace(tmp, paths[layer])
            except OSError:
                Path(tmp).unlink(missing_ok=True)  # a read-only cache only costs time
    info = {"cache_hits": hits, "computed": missing, "tokens": n_tokens, "corpus_sha256": corpus_digest,
            "cache_keys": {str(k): v for k, v in keys.items()}, "cache_dir": str(cache_dir),
            "seconds": round(time.perf_counter() - t0, 3), "hash_seconds": round(hash_seconds, 3)}
    return result, info
