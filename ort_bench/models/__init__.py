"""The models stage: what scoring and unlearning both need to turn a model spec into a loaded model.

    resolve.py        a spec (embedded, GGUF, HF dir, LoRA adapter, hub id) -> ResolvedModel (+ fingerprint)
    fingerprint.py    the sha256 over the files that decide a model's answers; the cache
    gguf.py           the embedded model; GGUF -> cached safetensors directory
    lora.py           adapter spec, fit check, applying an adapter with peft
    load_options.py   how a model is loaded (LoadOptions: one object, one flag per field)
    loading.py        tokenizer and weights with transformers; merged directory for vLLM/training
    prompting.py      chat formatting shared by every backend and by training
    served.py         a model behind an OpenAI-compatible endpoint: client, tokenizer, a weaker fingerprint
    checkpoint.py     unlearning/attack cards and saving checkpoints (written by unlearning, read by scoring)
"""

from ort_bench.models.fingerprint import cache_root, dir_fingerprint, file_sha256
from ort_bench.models.gguf import embedded_gguf_path, gguf_architecture, gguf_to_dir
from ort_bench.models.load_options import LoadOptions, add_load_options, resolve_device
from ort_bench.models.loading import load_causal_lm, load_tokenizer, merged_dir, torch_dtype
from ort_bench.models.resolve import EMBEDDED, ResolvedModel, resolve_model

__all__ = ["EMBEDDED", "LoadOptions", "ResolvedModel", "add_load_options", "cache_root", "dir_fingerprint",
           "embedded_gguf_path", "file_sha256", "gguf_architecture", "gguf_to_dir", "load_causal_lm",
           "load_tokenizer", "merged_dir", "resolve_device", "resolve_model", "torch_dtype"]
