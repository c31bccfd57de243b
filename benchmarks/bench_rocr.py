"""Time the ROCR edit on the embedded model (SmolLM2-135M-Instruct): with a cold covariance cache
(first run: the general-text key covariance is computed and stored) and with it warm (later runs).

    python benchmarks/bench_rocr.py [--targets japan,germany] [--runs 2] [--threads N]

Uses the shipped knowledge base (or `ORT_BENCH_DATA`) for the targets, their neighbours and the
general-text corpus; the cold run uses a fresh temporary cache, so the numbers do not depend on
what the user's cache holds. Prints seconds per phase and the edit's own statistics.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time


def time_update(d_ff: int, d_model: int, null_dims: int, n_prev: int, repeats: int = 3) -> tuple[float, float]:
    """Seconds of one layer's update: ORT's direct d_ff x d_ff solve vs ort-bench's m x m one (the
    same Delta), for one new key after `n_prev` earlier ones (C_prev = K_prev^T K_prev)."""
    import torch

    from ort_bench.unlearning.methods.rocr import rocr_update

    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(d_ff, null_dims, generator=gen, dtype=torch.float64))
    k = torch.randn(1, d_ff, generator=gen, dtype=torch.float64)
    prev = torch.randn(n_prev, d_ff, generator=gen, dtype=torch.float64)
    r = torch.randn(1, d_model, generator=gen, dtype=torch.float64)

    def direct():
        p = basis @ basis.T
        a = p @ (k.T @ k + prev.T @ prev) + torch.eye(d_ff, dtype=torch.float64)
        return torch.linalg.solve(a, p @ k.T @ r)

    def ours():
        return rocr_update(k, r, basis, prev, 1.0)

    diff = float((direct() - ours()).abs().max() / direct().abs().max())
    assert diff < 1e-8, diff  # the same update
    out = []
    for fn in (direct, ours):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        out.append((time.perf_counter() - t0) / repeats)
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--targets", default=None, help="comma list of target ids (default: the first two of the KB)")
    ap.add_argument("--layers", default="auto")
    ap.add_argument("--threshold", type=float, default=None, help="null-space eigenvalue threshold (default: ORT's)")
    ap.add_argument("--runs", type=int, default=2, help="warm runs after the cold one")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()

    import torch

    from ort_bench.kb.facts import load_kb
    from ort_bench.kb.templates import load_templates
    from ort_bench.models import load_causal_lm, load_tokenizer, resolve_model
    from ort_bench.unlearning.methods import get_method, make_config
    from ort_bench.unlearning.unlearn import build_data

    if args.threads:
        torch.set_num_threads(args.threads)
    kb, templates = load_kb(), load_templates()
    targets = args.targets.split(",") if args.targets else list(kb.targets)[:2]
    t0 = time.perf_counter()
    resolved = resolve_model(args.model)
    tok = load_tokenizer(resolved)
    base = load_causal_lm(resolved)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    data, _ = build_data(kb, templates, targets, "qa", "rocr")
    data_s = time.perf_counter() - t0
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model {args.model}: load {load_s:.1f}s; targets {', '.join(targets)}: "
          f"{sum(len(v) for v in data.method_data.subjects.values())} names, "
          f"{len(data.method_data.general_texts)} general texts (data {data_s:.1f}s)")
    with tempfile.TemporaryDirectory() as cache:
        extra = {"nullspace_threshold": args.threshold} if args.threshold else {}
        cfg = make_config("rocr", {"layers": args.layers, "cache_dir": cache, **extra})
        for run in range(1 + args.runs):
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            stats = get_method("rocr")(cfg).apply(model, tok, data, progress=False)
            total = time.perf_counter() - t0
            cov = stats["covariance"]
            label = "cold cache" if run == 0 else "warm cache"
            print(f"run {run + 1} ({label}): total {total:.2f}s = covariance {cov['seconds']:.2f}s "
                  f"(weight hashing {cov['hash_seconds']:.2f}s; computed layers {cov['computed']}, "
                  f"{cov['tokens']} tokens) + edit {stats['edit_seconds']:.2f}s")
        print(f"layers {stats['layers']}; residual gap to {stats['unrelated_subject']!r} "
              f"{stats['residual_gap_before']:.1f} -> {stats['residual_gap_after']:.1f}")
        for row in stats["per_layer"]:
            print(f"  {row['target']} layer {row['layer']}: null space {row['null_space_dims']}/{row['key_dims']} "
                  f"dims, key energy in it {row['key_energy_in_null_space']:.2f}, "
                  f"|dW|/|W| {row['update_rel_norm']:.4f}")
    d_model, d_ff = base.config.hidden_size, base.config.intermediate_size
    null_dims = stats["per_layer"][0]["null_space_dims"]
    for n_prev in (0, 9):
        direct, ours = time_update(d_ff, d_model, null_dims, n_prev)
        print(f"one layer's update after {n_prev} earlier keys: ORT's d_ff x d_ff solve {direct * 1e3:.0f} ms, "
              f"ours (m x m) {ours * 1e3:.1f} ms: {direct / ours:.0f}x")

if __name__ == "__main__":
    main()
