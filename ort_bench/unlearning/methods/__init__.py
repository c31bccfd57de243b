"""Reference unlearning methods, one file each, over one shared base and training loop.

    ga        gradient ascent                      graddiff  GA + retain NLL (alpha)
    npo       negative preference optimisation     simnpo    reference-free, length-normalised NPO
    rmu       representation misdirection          ilu       NPO/RMU + invariance penalty
    rocr      training-free rank-one concept redirection

`METHODS` maps names to classes, in name order; every module of this package is imported on
import, so a method registers itself with `@register_method` in its own file and is listed nowhere
else. `make_config` builds a method's config from a dict; the CLI gets every hyperparameter from
`add_method_arguments(parser)` and reads it back with `config_from_args(args)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pkgutil
import typing
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.unlearning.methods.base import (
    METHODS,
    TRAIN_FIELDS,
    DataSource,
    Example,
    Method,
    MethodConfig,
    OwnData,
    TrainConfig,
    UnlearnData,
    get_method,
    register_method,
)

__all__ = [
    "METHODS", "DataSource", "Example", "Method", "MethodConfig", "OwnData", "TrainConfig", "UnlearnData",
    "add_method_arguments", "config_from_args", "get_method", "in_table_order", "make_config", "register_method",
]


def _register_all() -> None:
    """Import every module of this package (each method's `@register_method` runs; helper modules
    register nothing), then put `METHODS` in name order, whatever order the imports ran in."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    ordered = sorted(METHODS.items())
    METHODS.clear()
    METHODS.update(ordered)


_register_all()


def in_table_order(names: list[str] | None = None) -> list[str]:
    """`names` (default: every method) in the order result tables list them (`Method.order`)."""
    names = list(METHODS) if names is None else names
    return sorted(names, key=lambda n: (get_method(n).order, n))


# `unlearn`'s max_steps and seed: nothing to act on in a training-free method (`Method.trains` False)
UNTRAINED_IGNORES = ("max_steps", "seed")
GRADIENT_METHODS = tuple(n for n, c in METHODS.items() if issubclass(c.config_class, TrainConfig))


def make_config(method: str, config: dict[str, Any] | MethodConfig | None = None, **overrides: Any) -> MethodConfig:
    """The config of `method` from nothing (published defaults), a dict or a config object, with
    `overrides` (None values ignored) applied by the config's own `apply_overrides` (ILU sends
    training fields to its base). A method that does not train ignores a step count and a seed."""
    method_cls = get_method(method)
    cls = method_cls.config_class
    if config is None:
        cfg = cls()
    elif isinstance(config, MethodConfig):
        if not isinstance(config, cls):
            raise OrtBenchError(f"method {method} takes a {cls.__name__}, not {type(config).__name__}")
        cfg = dataclasses.replace(config)
    elif isinstance(config, dict):
        cfg = cls.from_dict(config, method)
    else:
        raise OrtBenchError(f"config must be a dict or a MethodConfig, not {type(config).__name__}")
    overrides = {k: v for k, v in overrides.items() if v is not None
                 and (method_cls.trains or k not in UNTRAINED_IGNORES)}
    return cfg.apply_overrides(overrides, method) if overrides else cfg


# ----------------------------------------------------------------------------- CLI


def _flag(cls: type[MethodConfig], f: dataclasses.Field) -> str:
    if f.metadata.get("cli"):
        return f.metadata["cli"]
    name = f.name.replace("_", "-")
    return f"--{cls.cli_prefix}-{name}" if cls.cli_prefix else f"--{name}"


def _dest(cls: type[MethodConfig], f: dataclasses.Field) -> str:
    return _flag(cls, f).lstrip("-").replace("-", "_")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.replace(",", " ").split() if v)


def _arg_kwargs(tp: Any, default: Any, help_text: str, choices) -> dict[str, Any]:
    args = typing.get_args(tp)
    base = next((a for a in args if a is not type(None)), tp) if args and typing.get_origin(tp) is not tuple else tp
    kw: dict[str, Any] = {"default": default}
    shown = ",".join(default) if isinstance(default, tuple) else default
    if base is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(base) is tuple:
        kw["type"], kw["metavar"] = _csv, "A,B"
    elif base in (int, float, str):
        kw["type"] = base
    if choices:
        kw["choices"] = choices
    kw["help"] = help_text if default is None and "default" in help_text else f"{help_text} (default: {shown})"
    return kw


def _has(parser: argparse.ArgumentParser, flag: str) -> bool:
    return flag in parser._option_string_actions  # noqa: SLF001 (argparse has no public lookup)


def add_method_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--method` and every hyperparameter of every method, with its published default.

    Shared training options (`--lr`, `--max-steps`, `--batch-size`, ...) apply to every gradient
    method (and to ILU's base method); where methods publish different defaults (`--lr`: 1e-5, RMU
    5e-5) the option defaults to None, meaning "the method's own", and the help lists them.
    Method-specific options carry the method's name (`--npo-beta`, `--rmu-layer`, `--rocr-layers`);
    ILU's are `--base-method`, `--ilu-lambda`, `--ilu-penalty`, `--ilu-envs`, `--ilu-batch-size`.
    Options the parser already has are left alone (their dest must match, e.g. `--seed` -> seed).
    """
    lines = "; ".join(f"{n}: {c.summary}" for n, c in METHODS.items())
    if not _has(parser, "--method"):
        parser.add_argument("--method", required=True, choices=list(METHODS), metavar="NAME",
                            help=f"unlearning method ({lines})")
    grad_classes = {n: METHODS[n].config_class for n in GRADIENT_METHODS}
    g = parser.add_argument_group(
        "training (gradient methods: " + ", ".join(GRADIENT_METHODS) + "; ilu uses its base method's)")
    for f in dataclasses.fields(TrainConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if _has(parser, flag):
            continue
        defaults = {n: next(x for x in dataclasses.fields(c) if x.name == f.name).default
                    for n, c in grad_classes.items()}
        distinct = set(defaults.values())
        tp = typing.get_type_hints(TrainConfig)[f.name]
        if len(distinct) == 1:
            g.add_argument(flag, dest=f.name, **_arg_kwargs(tp, distinct.pop(), f.metadata["help"], None))
        else:
            by_value: dict[Any, list[str]] = {}
            for n, v in defaults.items():
                by_value.setdefault(v, []).append(n)
            listed = ", ".join(f"{v} ({', '.join(ns)})" for v, ns in by_value.items())
            kw = _arg_kwargs(tp, None, f.metadata["help"], None)
            kw["help"] = f"{f.metadata['help']} (default: the method's: {listed})"
            g.add_argument(flag, dest=f.name, **kw)
    for name, cls in METHODS.items():
        cls_cfg = cls.config_class
        own = [f for f in dataclasses.fields(cls_cfg) if f.name not in TRAIN_FIELDS and not f.metadata.get("nested")]
        if not own:
            continue
        grp = parser.add_argument_group(f"{name}: {cls.summary}")
        hints = typing.get_type_hints(cls_cfg)
        for f in own:
            flag = _flag(cls_cfg, f)
            if _has(parser, flag):
                continue
            grp.add_argument(flag, dest=_dest(cls_cfg, f),
                             **_arg_kwargs(hints[f.name], f.default, f.metadata.get("help", ""),
                                           f.metadata.get("choices")))
    return parser


def _config_from_namespace(args: argparse.Namespace, method: str) -> MethodConfig:
    cls = get_method(method).config_class
    data: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("nested"):
            continue
        dest = f.name if f.name in TRAIN_FIELDS else _dest(cls, f)
        value = getattr(args, dest, None)
        if value is not None:
            data[f.name] = value
    return cls.from_dict(data, method)


def config_from_args(args: argparse.Namespace) -> MethodConfig:
    """The config of `args.method` from parsed arguments (options left at None take the method's
    default); configs holding another method's (ILU's base) read it in `nested_from_args`."""
    method = args.method
    cls = get_method(method).config_class
    nested = cls.nested_from_args(args, lambda m: _config_from_namespace(args, m))
    cfg = _config_from_namespace(args, method)
    return dataclasses.replace(cfg, **nested) if nested else cfg
