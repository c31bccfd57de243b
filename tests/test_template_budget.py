"""A hostile template ends in one line within seconds, naming the template (issue 14): no payload
hangs a command, exhausts memory, or reaches another file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import load_kb
from ort_bench.kb.render import render_probes
from ort_bench.kb.templates import load_template

FIX = Path(__file__).parent / "fixtures"
Q4 = "".join("{% for x" + str(i) + " in question %}" for i in range(4)) + "x" + "{% endfor %}" * 4
Q7 = "".join("{% for x" + str(i) + " in question %}" for i in range(7)) + "{% endfor %}" * 7 + "{{ question }}"
PAYLOADS = {
    "nested-loops-output": Q4,
    "nested-loops-silent": Q7,
    "string-times-huge": "{{ question*100000000 }}",
    "power-folded": "{{ 9**999999999 }}",
    "power-of-string-times": "{{ 'x'*10**10 }}",
    "recursive-macro": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "huge-range": "{% for i in range(10**9) %}{% endfor %}{{ question }}",
    "padding-filter": "{{ question|center(10**9) }}",
    "padding-method": "{{ question.ljust(10**9) }}",
    "replace-chain": "{{ question.replace('', question).replace('', question).replace('', question) }}",
    "percent-width": "{{ '%1000000000s' % question }}",
    "format-map": "{{ '{x.__class__.__mro__}'.format_map({'x': question}) }}",
    "empty-prompt": "{% if false %}{{ question }}{% endif %}",
    "import": "{% import 'other.yaml' as o %}{{ question }}",
    "include": "{% include 'other.yaml' %}",
    "extends": "{% extends 'other.yaml' %}",
}


def _template(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    indented = "\n".join("  " + line for line in body.splitlines())
    path.write_text(f"id: {name}\nform: qa\nlang: en\nscorer: answer_match\nneeds: [question]\n"
                    f"prompt: |-\n{indented}\ntarget: \"{{{{ answer }}}}\"\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_every_payload_is_one_line_within_seconds(name, tmp_path):
    kb = load_kb(FIX / "kb")
    path = _template(tmp_path, name, PAYLOADS[name])
    t0 = time.perf_counter()
    with pytest.raises(OrtBenchError) as info:
        render_probes(kb, [load_template(path)], "forget")
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    assert msg.startswith(f"{name}.yaml: ") and "\n" not in msg, msg


def test_an_honest_template_still_renders(tmp_path):
    kb = load_kb(FIX / "kb")
    path = _template(tmp_path, "ok", "{% for w in question.split() %}{{ w }} {% endfor %}({{ range(3)|list|length }})")
    probes, _ = render_probes(kb, [load_template(path)], "forget")
    assert probes and all(p.prompt.endswith("(3)") for p in probes)
