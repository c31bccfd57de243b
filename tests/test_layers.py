"""The folders follow the pipeline and the import graph runs one way: a module imports only its own
stage and the stages before it (lazy imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ort_bench"
# rank of each stage; kb and models are siblings, as are unlearning and board: neither imports the other
STAGES = {"base": 0, "kb": 1, "models": 1, "scoring": 2, "unlearning": 3, "board": 3, "top": 4}
TOP = {"api", "cli", "demo"}


def stage_of(module: str) -> str:
    """`ort_bench.scoring.records` -> scoring; `ort_bench.errors` -> base; `ort_bench.api` -> top."""
    parts = module.split(".")
    if len(parts) == 1:
        return "top"  # `from ort_bench import api`
    if parts[1] in STAGES:
        return parts[1]
    return "top" if parts[1] in TOP else "base"


def imports_of(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ort_bench"):
            if node.module == "ort_bench":
                out += [(node.lineno, f"ort_bench.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("ort_bench")]
    return out


def test_every_module_imports_only_earlier_stages():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        here = stage_of(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
        for line, module in imports_of(path):
            there = stage_of(module)
            if STAGES[there] > STAGES[here] or (STAGES[there] == STAGES[here] and there != here):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} imports {module} ({there})")
    assert not bad, "\n".join(bad)


def test_stage_of_reads_the_layout():
    assert stage_of("ort_bench.errors") == "base"
    assert stage_of("ort_bench.kb.facts") == "kb"
    assert stage_of("ort_bench.unlearning.methods.npo") == "unlearning"
    assert stage_of("ort_bench.models.resolve") == "models"
    assert stage_of("ort_bench.api") == "top"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")} == {
        "kb", "models", "scoring", "unlearning", "board"}


def module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (lazy and TYPE_CHECKING imports included); `from
    ort_bench.x import y` counts as importing `ort_bench.x.y` when that is a module, else `ort_bench.x`."""
    modules = {module_of(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ort_bench"):
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    edges.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith("ort_bench")}
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_import_circle():
    """Files, not only folders: two modules of one stage that import each other (even lazily) are one
    concept split in two, or a layer inside the stage that runs both ways."""
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_cycles_finds_a_circle_and_only_that():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
