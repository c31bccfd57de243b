"""LoRA adapters: the spec ``ADAPTER_DIR@BASE``, a cheap check (safetensors headers only) that an
adapter fits its base, and applying it with ``peft`` (not merged).
"""

from __future__ import annotations

import re
from pathlib import Path

from ort_bench.errors import OrtBenchError, one_line


def split_adapter_spec(spec: str) -> tuple[str, str] | None:
    """`ADAPTER_DIR@BASE`, where ADAPTER_DIR is an existing adapter directory."""
    for i, ch in enumerate(spec):
        if ch == "@" and (Path(spec[:i]).expanduser() / "adapter_config.json").is_file():
            return spec[:i], spec[i + 1:]
    return None


def _adapter_targets(adapter: Path) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Adapter weights grouped by the base module they modify: {module path: [(kind, shape)]}."""
    from safetensors import safe_open

    path = adapter / "adapter_model.safetensors"
    out: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            m = re.match(r"^(?:base_model\.model\.)?(.+)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)"
                         r"(?:\.[^.]+)?(?:\.weight)?$", key)
            if m:
                out.setdefault(m.group(1), []).append((m.group(2), tuple(f.get_slice(key).get_shape())))
    return out


def _base_shapes(d: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for p in sorted(d.glob("*.safetensors")):
        with safe_open(str(p), framework="pt") as f:
            for key in f.keys():
                shapes[key] = tuple(f.get_slice(key).get_shape())
    return shapes


def check_adapter_fits(adapter: Path, base_path: Path, base_spec: str) -> None:
    """Every module the adapter modifies exists in the base, with matching shapes. Cheap: reads
    safetensors headers only. (Pickle weights are not inspected; loading checks those.)"""
    if not (adapter / "adapter_model.safetensors").is_file() or not list(base_path.glob("*.safetensors")):
        return
    shapes = _base_shapes(base_path)
    # a module path as peft names it may carry a prefix the saved keys lack (or the other way round)
    by_suffix = {k[: -len(".weight")]: v for k, v in shapes.items() if k.endswith(".weight")}
    for module, parts in sorted(_adapter_targets(adapter).items()):
        shape = by_suffix.get(module)
        if shape is None:
            hits = [v for k, v in by_suffix.items() if k.endswith("." + module) or module.endswith("." + k)]
            shape = hits[0] if len(hits) == 1 else None
        if shape is None and module.rsplit(".", 1)[-1] == "lm_head":
            continue  # tied to the input embeddings, so not saved on its own: loading checks it
        if shape is None:
            raise OrtBenchError(
                f"{adapter}: LoRA adapter does not fit base {base_spec}: the base has no module {module!r} "
                "(wrong base model?)"
            )
        dims = set(shape)
        for kind, s in parts:
            if len(s) != 2:
                continue
            fan = s[1] if kind in ("lora_A", "lora_embedding_A") else s[0]
            if len(shape) == 2 and fan not in dims:
                raise OrtBenchError(
                    f"{adapter}: LoRA adapter does not fit base {base_spec}: {module} {kind} has shape {list(s)} "
                    f"but the base weight is {list(shape)} (wrong base model?)"
                )


def apply_adapter(base_model, adapter: Path, base_path: Path):
    import warnings

    from peft import PeftModel

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            peft_model = PeftModel.from_pretrained(base_model, str(adapter), is_trainable=False)
    except Exception as exc:
        raise OrtBenchError(
            f"{adapter}: LoRA adapter does not load over base {base_path} ({one_line(exc)})"
        ) from None
    for w in caught:  # peft only warns when adapter weights find no module to go to
        if "missing adapter keys" in str(w.message).lower():
            raise OrtBenchError(f"{adapter}: LoRA adapter does not fit base {base_path} "
                                f"({str(w.message).splitlines()[0]})")
    return peft_model
