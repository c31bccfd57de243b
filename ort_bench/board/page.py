"""The leaderboard's static page: one self-contained `index.html` (inline CSS, JS and SVG, no CDN).

Rendered with Jinja and autoescaping on, so every name, method, model name and link a submitter
wrote is HTML-escaped. A Content-Security-Policy allows only the page's own script (by its hash),
so even an escaping bug could not run a script. The table sorts on a click on any column header:
a metric column sorts best-first on the first click (by its direction), reversed on the next.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import jinja2
from markupsafe import Markup

CSS = """
:root { color-scheme: light; --fg: #1d2330; --muted: #5b6477; --line: #d9dde6; --head: #f3f5f9; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 2rem auto; max-width: 1400px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
p.lede, p.note { color: var(--muted); max-width: 60rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: .35rem .5rem; text-align: right; white-space: nowrap; }
th { background: var(--head); position: sticky; top: 0; cursor: pointer; user-select: none; vertical-align: bottom; }
th:hover { background: #e6eaf2; }
th[aria-sort="ascending"]::after { content: " \\25B4"; }
th[aria-sort="descending"]::after { content: " \\25BE"; }
td.text, th.text { text-align: left; }
td small { color: var(--muted); }
td.headline { font-weight: 600; }
dl.metrics { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; color: var(--muted); }
dl.metrics dt { font-weight: 600; color: var(--fg); }
figure { margin: 1.5rem 0; }
figure svg { max-width: 100%; height: auto; }
"""

# Sorting: cells carry data-v (a number, or text); empty cells always go last.
JS = """
(function () {
  var table = document.getElementById('leaderboard');
  if (!table) { return; }
  var heads = table.tHead.rows[0].cells;
  function key(row, col, numeric) {
    var v = row.cells[col].getAttribute('data-v');
    if (v === null || v === '') { return null; }
    return numeric ? parseFloat(v) : v.toLowerCase();
  }
  function sortBy(col) {
    var th = heads[col];
    var numeric = th.getAttribute('data-type') === 'number';
    var best = th.getAttribute('data-best') === 'low' || !numeric ? 'ascending' : 'descending';
    var current = th.getAttribute('aria-sort');
    var order = current === best ? (best === 'ascending' ? 'descending' : 'ascending') : best;
    var sign = order === 'ascending' ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (r, i) { return [r, i]; });
    rows.sort(function (a, b) {
      var x = key(a[0], col, numeric), y = key(b[0], col, numeric);
      if (x === null && y === null) { return a[1] - b[1]; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      if (x < y) { return -sign; }
      if (x > y) { return sign; }
      return a[1] - b[1];
    });
    rows.forEach(function (p) { body.appendChild(p[0]); });
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute('aria-sort'); }
    th.setAttribute('aria-sort', order);
  }
  for (var c = 0; c < heads.length; c++) {
    (function (col) {
      heads[col].addEventListener('click', function () { sortBy(col); });
      heads[col].addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sortBy(col); }
      });
    })(c);
  }
})();
""".strip()

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<title>ort-bench leaderboard ({{ version }})</title>
<style>{{ css }}</style>
</head>
<body>
<h1>ort-bench leaderboard <small>benchmark {{ version }}</small></h1>
<p class="lede">Does an unlearned model really forget, or only stop answering in the form it was unlearned on?
Each entry is an unlearned model scored against its reference (the model before unlearning) on every form.
Every number on this page was recomputed from the submitted per-probe records; none is taken as submitted.
Ranked by ORT score; click a column header to sort.</p>
<dl class="metrics">
{% for c in legend %}<dt>{{ c.label }} {{ c.arrow }}</dt><dd>{{ c.help }}</dd>
{% endfor %}</dl>
<div class="scroll">
<table id="leaderboard">
<thead><tr>
{% for c in columns %}<th scope="col" tabindex="0" data-col="{{ c.id }}" data-type="{{ c.type }}" \
data-best="{{ c.best }}"{% if c.sorted %} aria-sort="{{ c.sorted }}"{% endif %} class="{{ c.cls }}" \
title="{{ c.title }}">{{ c.label }}{% if c.arrow %} {{ c.arrow }}{% endif %}</th>
{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}<tr data-name="{{ row.name }}">
{% for cell in row.cells %}<td class="{{ cell.cls }}" data-v="{{ cell.v }}">\
{% if cell.href %}<a href="{{ cell.href }}" rel="nofollow noopener noreferrer">{{ cell.text }}</a>\
{% else %}{{ cell.text }}{% endif %}{% if cell.ci %} <small>[{{ cell.ci }}]</small>{% endif %}</td>
{% endfor %}</tr>
{% endfor %}</tbody>
</table>
</div>
{% if not rows %}<p class="note">No submissions yet: see leaderboards/README.md.</p>{% endif %}
{% if heatmap %}<figure id="heatmap">
{{ heatmap | safe }}
<figcaption>Forget efficacy per form (↑: more forgotten). The darkest cell of a row is its worst form.</figcaption>
</figure>{% endif %}
<p class="note">{{ n }} verified submission{{ '' if n == 1 else 's' }}. Forget efficacy E<sub>f</sub> =
clip(1 − S<sub>f</sub>(model) / S<sub>f</sub>(reference), 0, 1) per form f, with a bootstrap 95% interval in brackets.
Generated by <code>ort-bench leaderboard build</code>.</p>
<script>{{ js | safe }}</script>
</body>
</html>
"""

# Every ort-bench page (the leaderboard, a run's report): text from submissions is HTML-escaped
HTML_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def content_security_policy(script: str | None = None) -> Markup:
    """Every ort-bench page's policy: nothing loads from anywhere, inline styles only, and a script only
    where the page has one, allowed by its hash (`script`: `script_hash(js)`)."""
    script = f"script-src '{script}'; " if script else ""
    return Markup(f"default-src 'none'; style-src 'unsafe-inline'; {script}img-src data:; base-uri 'none'; "
                  "form-action 'none'")


def script_hash(js: str = JS) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")


def render_page(*, version: str, columns: list[dict[str, Any]], rows: list[dict[str, Any]],
                legend: list[dict[str, str]], heatmap: str | None) -> str:
    """The page as a string. `heatmap` is trusted SVG markup (made by matplotlib from numbers and slugs)."""
    return HTML_ENV.from_string(PAGE).render(
        version=version, columns=columns, rows=rows, legend=legend, heatmap=heatmap, n=len(rows),
        css=Markup(CSS), js=JS, csp=content_security_policy(script_hash(JS)),
    )
