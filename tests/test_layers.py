"""The folders follow the pipeline and the import graph runs one way: a module imports only its own
stage and the stages before it (lazy imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ort_bench"
# rank of each stage; unlearning and board are siblings: neither imports the other
STAGES = {"base": 0, "kb": 1, "scoring": 2, "unlearning": 3, "board": 3, "top": 4}
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
    assert stage_of("ort_bench.api") == "top"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("_")} == {
        "kb", "scoring", "unlearning", "board"}
