"""The Jinja sandbox templates render in, with budgets: a template from a stranger can neither reach
Python internals (Jinja's `ImmutableSandboxedEnvironment`) nor hang or exhaust the machine.

- refused when the template is loaded: `import`, `from ... import`, `include`, `extends` (a template
  is one file; there is no loader to reach another);
- bounded while it renders: `range` to `MAX_RANGE` items; `*`, `**` and `+` checked before they
  build a huge string, list or number (and never folded at compile time, so `{{ 9**999999999 }}` is
  not computed while parsing); recursion ends at Python's limit; the output stops at `MAX_OUTPUT`
  characters; and, in the main thread, a render stops after `TIME_BUDGET` seconds (a SIGALRM timer:
  Jinja compiles to Python, so the timer interrupts any loop).

Every refusal is a `TemplateBudgetError` whose message the caller turns into one line naming the
template and the body.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_RANGE = 1_000
MAX_OUTPUT = 100_000  # characters of one rendered body
MAX_POWER_BITS = 4_096  # an integer power may have at most this many bits
TIME_BUDGET = 2.0  # seconds per rendered body (main thread)
REFUSED_TAGS = {nodes.Import: "import", nodes.FromImport: "import", nodes.Include: "include",
                nodes.Extends: "extends"}


class TemplateBudgetError(Exception):
    """A template asked for more than its budget, or for something a template may not do."""


def _size(v: Any) -> int | None:
    return len(v) if isinstance(v, str | list | tuple) else None


def _bounded_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise TemplateBudgetError(f"range of {len(r)} items (at most {MAX_RANGE})")
    return r


def _check_args(what: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """A width or count argument that would build a string past the budget in one step."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, int) and not isinstance(a, bool) and a > MAX_OUTPUT:
            raise TemplateBudgetError(f"{what}({a}) is too large (at most {MAX_OUTPUT})")


def _check_result(what: str, value: Any) -> Any:
    if _size(value) is not None and _size(value) > MAX_OUTPUT:
        raise TemplateBudgetError(f"{what} built {_size(value)} items (at most {MAX_OUTPUT})")
    return value


def _bounded_filter(name: str, fn: Any) -> Any:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_args(name, args[1:], kwargs)
        return _check_result(name, fn(*args, **kwargs))
    for attr in ("jinja_pass_arg",):  # keep how Jinja passes the context / environment
        if hasattr(fn, attr):
            setattr(bounded, attr, getattr(fn, attr))
    return bounded


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
        self.globals["range"] = _bounded_range
        self.filters = {name: _bounded_filter(name, fn) for name, fn in self.filters.items()}

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        """Method and function calls: width/count arguments bounded before, sizes after; `replace`
        bounded by what it could build."""
        name = getattr(__obj, "__name__", "call")
        _check_args(name, args, kwargs)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str) and name == "replace" and len(args) >= 2:
            old, new = str(args[0]), str(args[1])
            grows = (owner.count(old) if old else len(owner) + 1) * max(len(new) - len(old), 0)
            if len(owner) + grows > MAX_OUTPUT:
                raise TemplateBudgetError(f"replace would build {len(owner) + grows} characters")
        return _check_result(name, super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(left, int | float) and isinstance(right, int | float):
                base = abs(float(left))
                if base > 1 and float(right) * int(max(base, 2)).bit_length() > MAX_POWER_BITS:
                    raise TemplateBudgetError(f"power {left!r} ** {right!r} is too large")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if _size(seq) is not None and isinstance(n, int) and _size(seq) * n > MAX_OUTPUT:
                    raise TemplateBudgetError(f"repetition to {_size(seq) * n} items (at most {MAX_OUTPUT})")
        elif operator == "%" and isinstance(left, str):
            import re

            widths = [int(w) for w in re.findall(r"%[-+ #0]*(\d+)", left)]
            if widths and max(widths) > MAX_OUTPUT:
                raise TemplateBudgetError(f"format width {max(widths)} (at most {MAX_OUTPUT})")
        elif operator == "+":
            a, b = _size(left), _size(right)
            if a is not None and b is not None and a + b > MAX_OUTPUT:
                raise TemplateBudgetError(f"concatenation to {a + b} items (at most {MAX_OUTPUT})")
        return super().call_binop(context, operator, left, right)


def refused_tags(ast: nodes.Template) -> list[str]:
    """The tags a template may not use, as found in its parsed body."""
    return [name for node_type, name in REFUSED_TAGS.items() if any(True for _ in ast.find_all(node_type))]


@contextlib.contextmanager
def time_budget(seconds: float = TIME_BUDGET) -> Iterator[None]:
    """Raise TemplateBudgetError in the block after `seconds` (main thread only: signals go there)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise TemplateBudgetError(f"rendering took more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def render_bounded(template: Any, ctx: dict[str, Any]) -> str:
    """Render a compiled template within the output and time budgets."""
    out: list[str] = []
    n = 0
    with time_budget():
        for chunk in template.generate(ctx):
            n += len(chunk)
            if n > MAX_OUTPUT:
                raise TemplateBudgetError(f"output longer than {MAX_OUTPUT} characters")
            out.append(chunk)
    return "".join(out)
