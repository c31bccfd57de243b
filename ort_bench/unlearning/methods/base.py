"""What every unlearning method shares: its config (a dataclass whose fields are the CLI options),
the registry, the data it gets, and helpers that find layers and MLP projections in a model.

A method is a class with a `name`, a `config_class` and `apply(model, tokenizer, data, progress)`,
which edits `model` in place and returns statistics for the card (open-unlearning style: one class
per method over one shared base). Register it with `@register_method`; a module in this package is
found without being listed anywhere. A method that needs more than the forget and retain examples
builds it in `own_data` (it lands in `UnlearnData.method_data` and in the card's data section); a
config that holds another method's config routes overrides in `apply_overrides`.
"""

from __future__ import annotations

import dataclasses
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ort_bench.errors import OrtBenchError

if TYPE_CHECKING:
    import argparse

# ----------------------------------------------------------------------------- configs


def hp(default: Any, help: str, *, choices: tuple[str, ...] | None = None, cli: str | None = None) -> Any:
    """A hyperparameter: a dataclass field with its CLI help (and choices, and an explicit flag)."""
    meta = {"help": help, "choices": choices, "cli": cli}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for a sequence default")
    return field(default=default, metadata=meta)


@dataclass
class MethodConfig:
    """Base of every method's hyperparameters. `cli_prefix` names the method-specific flags
    (`--npo-beta`); fields of `TrainConfig` are shared flags (`--lr`)."""

    cli_prefix: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, MethodConfig) else (list(v) if isinstance(v, tuple) else v)
        return out

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    @classmethod
    def from_dict(cls, data: dict[str, Any], method: str = "") -> MethodConfig:
        """Build from a dict; an unknown key or a wrongly typed value is a one-line OrtBenchError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise OrtBenchError(
                f"unknown hyperparameter {unknown[0]!r} for method {method or cls.__name__} "
                f"(known: {', '.join(sorted(names))})"
            )
        types = cls.field_types()
        kwargs = {k: _coerce(k, v, types[k], method or cls.__name__) for k, v in data.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise OrtBenchError(f"method {method or cls.__name__}: {exc}") from None

    def apply_overrides(self, overrides: dict[str, Any], method: str) -> MethodConfig:
        """A copy with `overrides` (field -> value) applied; an unknown field is a one-line error.
        A config that composes with another method's (ILU's base) sends them where they belong."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = [k for k in overrides if k not in names]
        if unknown:
            raise OrtBenchError(f"unknown hyperparameter {unknown[0]!r} for method {method}")
        return type(self).from_dict({**self.to_dict(), **overrides}, method)

    @classmethod
    def nested_from_args(cls, args: argparse.Namespace,
                         build: Callable[[str], MethodConfig]) -> dict[str, Any]:
        """Fields holding other methods' configs, read from CLI arguments (`build(method)` reads
        one method's); none by default."""
        return {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise OrtBenchError(
                    f"{f.name} must be one of {', '.join(choices)} (got {getattr(self, f.name)!r})"
                )


def _coerce(name: str, value: Any, tp: Any, method: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, MethodConfig):
        return value
    if value is None and (type(None) in args):
        return None
    try:
        if tp is bool:
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes", "on")
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            return tuple(str(v) for v in value)
    except (TypeError, ValueError):
        raise OrtBenchError(f"hyperparameter {name!r} of method {method}: bad value {value!r}") from None
    return value


@dataclass
class TrainConfig(MethodConfig):
    """The shared training loop's settings (every gradient method has them). Defaults follow
    TOFU / open-unlearning (AdamW, lr 1e-5, weight decay 0.01, linear schedule with warm-up);
    `max_steps` and batch sizes are small so that a run fits a CPU."""

    lr: float = hp(1e-5, "learning rate (AdamW)")
    max_steps: int = hp(20, "optimiser steps")
    batch_size: int = hp(4, "forget examples per step")
    retain_batch_size: int = hp(4, "retain examples per step")
    warmup_ratio: float = hp(0.1, "fraction of the steps with linear warm-up (then linear decay to 0)")
    weight_decay: float = hp(0.01, "AdamW weight decay")
    max_grad_norm: float = hp(1.0, "gradient clipping (global norm); 0 disables")
    max_length: int = hp(256, "tokens per example (prompt truncated from the left)")
    seed: int = hp(0, "random seed (batch order, RMU's random direction)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_steps < 1:
            raise OrtBenchError(f"max_steps must be at least 1 (got {self.max_steps})")
        if self.batch_size < 1 or self.retain_batch_size < 1:
            raise OrtBenchError("batch sizes must be at least 1")
        if self.lr < 0:
            raise OrtBenchError(f"lr must not be negative (got {self.lr})")


TRAIN_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    """One (prompt, answer) pair; the prompt is formatted with the model's chat template."""

    prompt: str
    answer: str
    system: str | None = None
    prefill: str | None = None


def probe_examples(probes) -> list[Example]:
    """Rendered probes as training examples: each prompt with its first gold answer."""
    return [Example(p.prompt, p.answers[0], p.system, p.prefill) for p in probes]


def env_examples(items) -> list[Example]:
    """A fine-tuning environment's items (`ort_bench.unlearning.envs.load_env`) as training examples."""
    return [Example(it.prompt, it.answer) for it in items]


@dataclass
class UnlearnData:
    """Everything a method gets: the forget and retain examples every method shares, and in
    `method_data` whatever its own `Method.own_data` built (e.g. ROCR's names and corpus)."""

    forget: list[Example]
    retain: list[Example] = field(default_factory=list)
    method_data: Any = None
    model_fingerprint: str | None = None


@dataclass(frozen=True)
class DataSource:
    """What a method may build its own data from: the knowledge base, the templates, the targets and
    `render` (`ort_bench.kb.render.render`, called as unlearn calls it)."""

    kb: Any
    templates: Any
    targets: list[str]
    render: Callable[..., tuple[list, Any]]


@dataclass
class OwnData:
    """A method's own data: `data` goes to `UnlearnData.method_data`, `card` into the card's data
    section, and the facts of `probes` count as seen by the method."""

    data: Any = None
    card: dict[str, Any] = field(default_factory=dict)
    probes: list = field(default_factory=list)


# ----------------------------------------------------------------------------- methods


class Method(ABC):
    """One unlearning method. Subclasses set `name`, `summary`, `config_class` and `apply`; they
    may set `trains`, `order` and override `own_data`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    trains: ClassVar[bool] = True  # False: training-free (`make_config` ignores max_steps and seed)
    order: ClassVar[int] = 100  # where the method comes in experiment tables (lower first; ties by name)

    def __init__(self, config: MethodConfig | None = None):
        if config is None:
            config = self.config_class()
        if not isinstance(config, self.config_class):
            raise OrtBenchError(
                f"method {self.name} takes a {self.config_class.__name__}, not {type(config).__name__}"
            )
        self.config = config

    def own_data(self, source: DataSource) -> OwnData:
        """What the method needs beyond the forget and retain examples; nothing by default."""
        return OwnData()

    @abstractmethod
    def apply(self, model, tokenizer, data: UnlearnData, progress: bool = True) -> dict[str, Any]:
        """Edit `model` in place; return statistics (losses, timings) for the card."""


METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make `cls` available under `cls.name` (CLI, `unlearn`, `make_config`)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise OrtBenchError(f"unknown method {name!r} (choose from {', '.join(METHODS)})")
    return METHODS[name]


# ----------------------------------------------------------------------------- model anatomy


def decoder_layers(model) -> list:
    """The transformer blocks of a causal LM (Llama/Mistral/Qwen style `model.layers`, GPT-2 style
    `transformer.h`, GPT-NeoX `gpt_neox.layers`), looking through a peft wrapper."""
    base = model
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.layers"):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return list(obj)
    raise OrtBenchError(f"{type(base).__name__}: cannot find the transformer layers (unsupported architecture)")


@dataclass(frozen=True)
class DownProj:
    """The MLP's output projection of one layer: `module` maps keys (d_ff) to values (d_model).
    `transposed` is True for GPT-2's Conv1D, whose weight is stored (d_ff, d_model)."""

    module: Any
    transposed: bool

    @property
    def weight(self):
        return self.module.weight

    def delta_to_weight(self, delta):
        """A (d_model, d_ff) update in the layout of this module's weight."""
        return delta.T if self.transposed else delta


def mlp_down_proj(layer) -> DownProj:
    mlp = getattr(layer, "mlp", None) or getattr(layer, "feed_forward", None)
    if mlp is None:
        raise OrtBenchError(f"{type(layer).__name__}: no MLP found (unsupported architecture)")
    for name in ("down_proj", "fc2", "dense_4h_to_h", "w2"):
        mod = getattr(mlp, name, None)
        if mod is not None:
            return DownProj(mod, False)
    mod = getattr(mlp, "c_proj", None)
    if mod is not None:  # GPT-2 Conv1D: y = x @ W + b with W (in, out)
        return DownProj(mod, type(mod).__name__ == "Conv1D")
    raise OrtBenchError(f"{type(mlp).__name__}: no MLP output projection found (unsupported architecture)")


def mlp_parameters(layer, which: str) -> list:
    """MLP weights of one layer: `down_proj` (the output projection only, as in RMU's published
    code) or `mlp` (every MLP weight)."""
    if which == "down_proj":
        return [mlp_down_proj(layer).weight]
    mlp = getattr(layer, "mlp", None) or getattr(layer, "feed_forward", None)
    return [p for n, p in mlp.named_parameters() if n.endswith("weight")]


def layer_output(output):
    """A decoder layer's hidden states, whether it returns a tensor or a tuple."""
    return output[0] if isinstance(output, (tuple, list)) else output


class StopForward(Exception):
    """Raised by a hook to end a forward pass early (only the layers up to the hook are run)."""


def run_until(model, layer_idx: int, **inputs):
    """Run `model` up to and including decoder layer `layer_idx`; return that layer's output
    hidden states (gradients flow as usual). Saves the rest of the forward pass."""
    layer = decoder_layers(model)[layer_idx]
    box: dict[str, Any] = {}

    def hook(_mod, _args, output):
        box["h"] = layer_output(output)
        raise StopForward

    handle = layer.register_forward_hook(hook)
    try:
        model(**inputs, use_cache=False)
    except StopForward:
        pass
    finally:
        handle.remove()
    return box["h"]


def collect_inputs(modules: dict[int, Any], fn: Callable[[], Any], stop_after: Any | None = None) -> dict[int, Any]:
    """Run `fn` with forward pre-hooks on `modules` and return the first positional input each got.
    When `stop_after` (a module) is given, the forward pass stops once it has run."""
    got: dict[int, Any] = {}
    handles = []
    for key, mod in modules.items():
        def pre(_mod, args, key=key):
            got[key] = args[0]
        handles.append(mod.register_forward_pre_hook(pre))
    if stop_after is not None:
        def post(_mod, _args, _out):
            raise StopForward
        handles.append(stop_after.register_forward_hook(post))
    try:
        fn()
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return got
