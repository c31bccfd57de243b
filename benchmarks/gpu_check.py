"""GPU check (issue 20, item 6): the `hf` backend timed on benchmark v3's full probe set on one GPU.

Two models, both built from a config with random weights, in bfloat16, directly on the GPU (timing
needs no knowledge, and random weights decode every answer to its token limit, the worst case):

  embedded-arch  the embedded model's architecture (SmolLM2-135M; its config.json)
  llama3-8b      Llama-3-8B's shape (hidden 4096, 32 layers, 32 heads, 8 KV heads, MLP 14336,
                 vocab 128256, rope theta 500000, 8192 positions)

Both use the embedded model's tokenizer and chat template (the 8B's larger vocabulary only adds ids
that decode to nothing). Scoring goes through the project's own path, as `ort-bench evaluate` runs it:
`EvalConfig(tier="full", device=..., dtype=..., batch_size=..., chunk_size=...)`, the backend class from
`checked_backend("hf", ...)` started with the config's settings, then `score_probes` chunk by chunk.
The only stand-in: the backend's model loader (`models.load_causal_lm`) hands over the model already
built on the GPU instead of reading weights from disk (16 GB for the 8B would take minutes to write,
hash and read back; see `handing_over`).

Each model gets a time budget (`--seconds-per-model`): chunks of a seeded shuffle of the full set's
items are scored until the budget is used (a chunk is shortened to fit what is left, and a timer
stops a chunk that overruns), after a small warm-up that is not counted. Printed per model: probes
scored, probes/s, the extrapolated time for the whole full tier, peak GPU memory
(`torch.cuda.max_memory_allocated`), tokens processed (counted by a hook on the input embedding,
padding included), approximate TFLOP/s, and the ratio against the CPU figure (`CPU_PROBES_PER_S`).

Two steps, because the GPU machine can fetch nothing and lacks pydantic, rouge-score and nltk:

  bash benchmarks/gpu_check.sh --prepare   here, with the project's venv: writes out/gpu_check/
                                           (the full tier's probes, the embedded model's config and
                                           tokenizer files, wheels of the missing packages)
  bash benchmarks/gpu_check.sh [OPTIONS]   on the GPU machine, with out/gpu_check/ carried: installs
                                           the wheels into a temporary folder and calls `run` below

A CPU smoke test of the whole flow (tiny 2-layer models, a few probes):
  bash benchmarks/gpu_check.sh --device cpu --tiny --max-probes 24 --seconds-per-model 60
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import importlib.metadata
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PREPARED = ROOT / "out" / "gpu_check"

# The CPU figure the GPU is compared with: probes/s of the embedded model with the `hf` backend on the
# 2-core CPU machine, benchmark v3's core tier and generation lengths (benchmarks/README.md, "The full
# default benchmark": about 1 probe/s, 2026-12-04). Update it when the team re-measures it (issue 20
# item 4), or pass --cpu-probes-per-s.
CPU_PROBES_PER_S = 1.0

# What the scoring path imports that the GPU machine lacks (it has torch, transformers, jinja2, pyyaml,
# pandas, pyarrow, numpy, tqdm, absl-py, six, click, joblib, regex): pydantic (probes and records, with
# its core, which is one binary wheel per Python), rouge-score and nltk (ROUGE-L of free answers and
# the Porter stemmer; nltk needs defusedxml), and typing-extensions (pydantic wants a recent one).
# Versions are the ones of the venv that runs `prepare`, so the GPU runs what was tested here.
CARRIED = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
           "rouge-score", "nltk", "defusedxml")
BINARY_PYTHONS = ("3.10", "3.11", "3.12", "3.13")  # pydantic-core's wheel for each (the GPU image has 3.12)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
TRAVEL_LIMIT_MIB = 64  # the device machine's limit on the working tree plus carried folders

LLAMA3_8B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=14336, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192,
                 rms_norm_eps=1e-5, tie_word_embeddings=False)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, head_dim=16)  # --tiny: the same models shrunk, for a CPU smoke test
MODELS = ("embedded-arch", "llama3-8b")


# --------------------------------------------------------------------------- prepare (here)

def _pip(*args: str, quiet_failure: bool = False) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "-q", "--disable-pip-version-check"], check=True,
                   stderr=subprocess.DEVNULL if quiet_failure else None)


def _travel_mib(extra: Path) -> float:
    """What a device call sends: tracked and untracked-not-ignored files, plus `extra` (carried)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    files = [ROOT / f for f in listed if f] + [p for p in extra.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files if p.is_file() and not p.is_symlink()) / 2**20


def prepare(args: argparse.Namespace) -> None:
    """Write the folder the GPU run reads: probes, the embedded model's config and tokenizer, wheels."""
    from ort_bench.models import resolve_model
    from ort_bench.scoring.selection import select_probes

    out = Path(args.prepared)
    shutil.rmtree(out, ignore_errors=True)
    (out / "embedded").mkdir(parents=True)

    embedded = resolve_model("embedded")  # config and tokenizer only: the weights stay here
    for f in sorted(embedded.path.iterdir()):
        if f.name in ("config.json", "chat_template.jinja") or f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy2(f, out / "embedded" / f.name)

    probes, hashes = select_probes(tier="full")
    with gzip.open(out / "probes_full.jsonl.gz", "wt", encoding="utf-8") as fh:
        for p in probes:
            fh.write(p.model_dump_json() + "\n")
    print(f"probes: {len(probes)} (tier full) -> {out / 'probes_full.jsonl.gz'}")

    wheels = out / "wheels"
    versions = {name: importlib.metadata.version(name) for name in CARRIED}
    for name, version in versions.items():
        common = ["--no-deps", "-d", str(wheels), f"{name}=={version}"]
        if name == "pydantic-core":
            for py in BINARY_PYTHONS:
                _pip("download", "--only-binary=:all:", "--python-version", py, "--implementation", "cp",
                     *(a for plat in PLATFORMS for a in ("--platform", plat)), *common)
            continue
        try:
            _pip("download", "--only-binary=:all:", *common, quiet_failure=True)
        except subprocess.CalledProcessError:  # sdist only (rouge-score): build its pure-Python wheel
            print(f"{name} {version}: no wheel on the index, building one")
            _pip("wheel", "--no-deps", "-w", str(wheels), f"{name}=={version}")
    (wheels / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in versions.items()))
    impure = [w.name for w in wheels.glob("*.whl") if "none-any" not in w.name and "pydantic_core" not in w.name]
    if impure:
        raise SystemExit(f"wheels built for this machine only: {impure}")

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    manifest = {"probes": len(probes), "tier": "full", **hashes, "embedded_fingerprint": embedded.fingerprint,
                "commit": commit, "dirty": dirty, "wheels": versions, "pythons": list(BINARY_PYTHONS),
                "prepared": time.strftime("%Y-%m-%d %H:%M:%S")}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    own = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    total = _travel_mib(out)
    print(f"prepared {out}: {own:.1f} MiB; with the working tree {total:.1f} MiB travel "
          f"(limit {TRAVEL_LIMIT_MIB} MiB)")
    if total > TRAVEL_LIMIT_MIB:
        raise SystemExit("too large to travel: ignore or remove what need not go")
    print("device command: bash benchmarks/gpu_check.sh   (carry: out/gpu_check)")


# --------------------------------------------------------------------------- run (on the GPU machine)

class OutOfTime(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise OutOfTime in the main thread after `seconds` (stops a chunk that overruns its budget)."""
    def fire(*_):
        raise OutOfTime

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def handing_over(lm: Any):
    """While the backend starts, `models.load_causal_lm` (in every ort_bench module that imported it)
    returns `lm`, the random model already on the device, instead of loading weights from disk."""
    from ort_bench.models import loading as models

    original, calls = models.load_causal_lm, []

    def stand_in(model: Any, load: Any = None) -> Any:
        calls.append(load)
        return lm

    holders = [m for name, m in list(sys.modules.items())
               if name.startswith("ort_bench") and getattr(m, "load_causal_lm", None) is original]
    for m in holders:
        m.load_causal_lm = stand_in
    try:
        yield
    finally:
        for m in holders:
            m.load_causal_lm = original
    if not calls:
        raise SystemExit("the hf backend no longer loads through models.load_causal_lm: update handing_over")


def model_config(name: str, prepared: Path, tiny: bool):
    from transformers import AutoConfig, LlamaConfig

    embedded = AutoConfig.from_pretrained(prepared / "embedded")
    if name == "embedded-arch":
        cfg = embedded
    else:
        ids = {k: getattr(embedded, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
        cfg = LlamaConfig(**LLAMA3_8B, **ids)
    for key, value in (TINY if tiny else {}).items():
        setattr(cfg, key, value)
    return cfg


def build_model(name: str, prepared: Path, folder: Path, args: argparse.Namespace):
    """(random model on the device, a ResolvedModel whose `folder` holds its config and the tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ort_bench.models import ResolvedModel, torch_dtype

    cfg = model_config(name, prepared, args.tiny)
    for f in (prepared / "embedded").iterdir():
        if f.name != "config.json":
            shutil.copy2(f, folder / f.name)
    cfg.save_pretrained(folder)
    torch.manual_seed(0)
    with torch.device(args.device):
        lm = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype(args.dtype))
    lm.eval()
    spec = f"random:{name}{'-tiny' if args.tiny else ''}"
    return lm, ResolvedModel(spec, "hf_dir", folder, None, f"random-weights-{spec}")


class TokenCounter:
    """Ids through the input embedding, per forward call (padding included): one id a row is a
    decode step, more is a prompt (prefill, or a likelihood pass)."""

    def __init__(self, lm: Any):
        self.prompt = self.decode = 0
        self.handle = lm.get_input_embeddings().register_forward_pre_hook(self)

    def __call__(self, module: Any, inputs: tuple) -> None:
        ids = inputs[0]
        if ids.shape[-1] == 1:
            self.decode += ids.numel()
        else:
            self.prompt += ids.numel()


def score_for(name: str, probes: list, full_set: int, prepared: Path, folder: Path, args: argparse.Namespace,
              budget: float, deadline: float) -> dict[str, Any]:
    """Build one random model, start the hf backend on it, score chunks of `probes` for `budget` seconds
    (ending by `deadline`, a `time.perf_counter()` time, whatever the build took); the rate is
    extrapolated to `full_set` probes."""
    import torch

    from ort_bench.scorers import get_scorer
    from ort_bench.scoring.backends import checked_backend
    from ort_bench.scoring.evaluate import EvalConfig
    from ort_bench.scoring.scoring_loop import score_probes

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    lm, resolved = build_model(name, prepared, folder, args)
    if cuda:
        torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in lm.parameters())
    embeddings = {id(m.weight): m.weight.numel() for m in (lm.get_input_embeddings(), lm.get_output_embeddings())}
    flop_params = params - sum(embeddings.values())  # the blocks: every token goes through them
    weights_gib = torch.cuda.memory_allocated() / 2**30 if cuda else None

    batch = args.batch_size or (256 if name == "embedded-arch" else 128)
    config = EvalConfig(tier="full", device=args.device, dtype=args.dtype, batch_size=batch,
                        chunk_size=args.chunk_size)
    settings = config.backend_settings()
    backend_cls = checked_backend(config.backend, config, **settings)  # imports the hf module first
    with handing_over(lm):
        backend = backend_cls(resolved, config, **settings)
    tokenizer = backend.tokenizer

    t1 = time.perf_counter()
    score_probes(backend, tokenizer, probes[:args.warmup], config)  # CUDA and kernel start-up, not counted
    warmup_s = time.perf_counter() - t1
    todo = probes[args.warmup:]
    budget = min(budget, deadline - time.perf_counter())

    counter = TokenCounter(lm)
    scored = gen = limit = prompt_tokens = decode_tokens = 0
    seconds = 0.0
    stopped = "end of the probe set"
    print(f"[{name}] {_size(params)} parameters, built in {build_s:.1f} s, warm-up {warmup_s:.1f} s; "
          f"scoring for {budget:.0f} s (batch {batch}, chunks of {args.chunk_size})", flush=True)
    while scored < len(todo):
        left = budget - seconds
        n = min(args.chunk_size, len(todo) - scored)
        # shorten the chunk to what the rate so far (at first the warm-up's, a low one) says fits, 10% margin
        rate = scored / seconds if scored else (args.warmup / warmup_s if args.warmup else None)
        n = min(n, int(0.9 * left * rate)) if rate else n
        if not scored:  # the warm-up's rate is a low one: score at least a few (the timer still holds)
            n = max(n, min(16, len(todo)))
        if n < min(16, len(todo) - scored):
            stopped = "time budget"
            break
        chunk = todo[scored:scored + n]
        t = time.perf_counter()
        try:
            with time_limit(left):
                score_probes(backend, tokenizer, chunk, config)
                if cuda:
                    torch.cuda.synchronize()
        except OutOfTime:
            stopped = "time budget (a chunk was cut: not counted)"
            break
        seconds += time.perf_counter() - t
        scored += n
        gen_here = [config.new_tokens(p.form) for p in chunk if get_scorer(p.scorer).needs_generation]
        gen, limit = gen + len(gen_here), limit + sum(gen_here)
        prompt_tokens, decode_tokens = counter.prompt, counter.decode  # a chunk cut short does not count
        print(f"[{name}]   {scored:6d} probes in {seconds:6.1f} s: {scored / seconds:7.2f} probes/s", flush=True)
    counter.handle.remove()

    rate = scored / seconds if seconds else 0.0
    result = {
        "model": name, "parameters": params, "batch_size": batch, "chunk_size": args.chunk_size,
        "dtype": args.dtype, "device": args.device, "build_s": round(build_s, 2), "warmup_s": round(warmup_s, 2),
        "scored": scored, "of": full_set, "generated": gen, "seconds": round(seconds, 2),
        "probes_per_s": round(rate, 3), "full_set_s": round(full_set / rate) if rate else None,
        "x_cpu": round(rate / args.cpu_probes_per_s, 2), "stopped": stopped,
        "weights_gib": round(weights_gib, 2) if weights_gib is not None else None,
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens,
        "decode_tokens_per_generated": round(decode_tokens / gen, 1) if gen else None,
        "limit_per_generated": round(limit / gen, 1) if gen else None,
        "tflops": 2 * flop_params * (prompt_tokens + decode_tokens) / seconds / 1e12 if seconds else None,
    }
    backend.close()
    del backend, lm
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def _size(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    h, rest = divmod(int(seconds), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def summary(results: list[dict[str, Any]], head: list[str], args: argparse.Namespace) -> str:
    def gib(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"


    lines = [*head, "",
             "| model | params | batch | scored / full set | seconds | probes/s | full set (h:mm:ss) | "
             f"x CPU ({args.cpu_probes_per_s:g}/s) | peak GPU GiB (weights) | decode tokens / answer (limit) "
             "| ~TFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['model']} | {_size(r['parameters'])} | {r['batch_size']} | {r['scored']} / {r['of']} | "
            f"{r['seconds']:.1f} | **{r['probes_per_s']:.2f}** | {_hms(r['full_set_s'])} | {r['x_cpu']:.1f}x | "
            f"{gib(r['peak_gib'])} ({gib(r['weights_gib'])}) | {r['decode_tokens_per_generated'] or '-'} "
            f"({r['limit_per_generated'] or '-'}) | {'-' if r['tflops'] is None else format(r['tflops'], '.3g')} |")
    lines += ["", "stopped: " + "; ".join(f"{r['model']}: {r['stopped']}" for r in results),
              "x CPU: probes/s over the CPU figure (the embedded model, core tier, hf, 2 cores; "
              "CPU_PROBES_PER_S in benchmarks/gpu_check.py or --cpu-probes-per-s).",
              "decode tokens / answer: ids fed one at a time (decode steps; a one-token likelihood pass counts "
              "too) per free-answer probe, against the mean token limit of those probes (an answer's last token "
              "needs no pass: limit - 1 is every answer run to its limit); ~TFLOP/s: 2 x non-embedding "
              "parameters x tokens processed / s (logits and attention left out)."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    import torch
    import transformers

    from ort_bench.kb.probes import Probe

    prepared = Path(args.prepared)
    manifest = json.loads((prepared / "manifest.json").read_text())
    with gzip.open(prepared / "probes_full.jsonl.gz", "rt", encoding="utf-8") as fh:
        probes = [Probe.model_validate_json(line) for line in fh if line.strip()]
    if len(probes) != manifest["probes"]:
        raise SystemExit(f"{prepared}: {len(probes)} probes, the manifest says {manifest['probes']}")
    items: dict[str, list] = {}
    for p in probes:  # a seeded shuffle of whole items, so that any prefix is a fair sample of the mix
        items.setdefault(p.item_key, []).append(p)
    order = list(items.values())
    random.Random(0).shuffle(order)
    probes = [p for item in order for p in item]
    sample = probes[:args.max_probes] if args.max_probes else probes

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU here (for a smoke test: --device cpu --tiny)")
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        device = f"CPU, {torch.get_num_threads()} threads"
    head = [f"GPU check (benchmarks/gpu_check.py), {time.strftime('%Y-%m-%d %H:%M')}: {device}; "
            f"torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}",
            f"probes: benchmark v3 full tier, {manifest['probes']} (probes_sha256 {manifest['probes_sha256'][:12]}, "
            f"commit {manifest['commit'][:10]}{' + changes' if manifest['dirty'] else ''}); "
            f"random weights, {args.dtype}{', tiny shapes' if args.tiny else ''}"]
    print(head[0], "\n" + head[1], flush=True)

    results: list[dict[str, Any]] = []
    names = args.models.split(",")
    for k, name in enumerate(names):
        left = args.deadline - (time.perf_counter() - start)
        share = left / (len(names) - k) - 30  # 30 s: build and warm-up
        if share < 10:
            print(f"[{name}] skipped: the {args.deadline:.0f} s deadline is too close", flush=True)
            continue
        budget, deadline = min(args.seconds_per_model, share), start + args.deadline - 10  # 10 s: teardown
        with tempfile.TemporaryDirectory(prefix=f"gpu_check-{name}-") as folder:  # its config and tokenizer
            results.append(score_for(name, sample, len(probes), prepared, Path(folder), args, budget, deadline))
        text = summary(results, head, args)
        if args.out:  # after every model, so a run stopped later keeps what it measured
            Path(args.out).write_text(text)
            Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + summary(results, head, args), flush=True)
    print(f"total {time.perf_counter() - start:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare", help="write out/gpu_check/ (here, with the project's venv)")
    p.add_argument("--prepared", default=str(PREPARED))
    r = sub.add_parser("run", help="time the models (on the GPU machine, through gpu_check.sh)")
    r.add_argument("--prepared", default=str(PREPARED))
    r.add_argument("--device", default="cuda")
    r.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    r.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    r.add_argument("--tiny", action="store_true", help="2-layer, hidden-64 versions of the models (smoke test)")
    r.add_argument("--seconds-per-model", type=float, default=150.0, help="scoring time budget per model")
    r.add_argument("--deadline", type=float, default=420.0, help="seconds for the whole run, start-up included")
    r.add_argument("--batch-size", type=int, default=None, help="default: 256 (embedded-arch), 128 (llama3-8b)")
    r.add_argument("--chunk-size", type=int, default=1024, help="probes per score_probes call (evaluate's "
                   "--chunk-size; its default, 128, leaves GPU batches small)")
    r.add_argument("--warmup", type=int, default=16, help="probes scored first and not counted")
    r.add_argument("--max-probes", type=int, default=None, help="score at most this many (smoke tests)")
    r.add_argument("--cpu-probes-per-s", type=float, default=CPU_PROBES_PER_S)
    r.add_argument("--out", default=os.path.join(os.environ["OUT"], "gpu_check.txt") if os.environ.get("OUT") else None,
                   help="also write the summary here (default: $OUT/gpu_check.txt when OUT is set), and .json")
    args = ap.parse_args(argv)
    if args.step == "prepare":
        prepare(args)
        return
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        ap.error(f"unknown models {sorted(unknown)} (choose from {', '.join(MODELS)})")
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    run(args)


if __name__ == "__main__":
    main()
