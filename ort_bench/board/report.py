"""One run as one self-contained HTML page (`ort-bench report RUN_DIR`): what a reader needs to judge it.

The page shows a forest plot of per-form efficacy with its intervals beside the placebo's band (what
unrelated fine-tuning of the reference already gives) and the form gap beside the gap noise alone
gives; the worst form called out; model and reference side by side on a seeded sample of items per
form (prompt, gold, both answers, which still leak); attack curves where the run's attack was scored
at several checkpoints; and every hash that identifies the run.

It follows the leaderboard page's rules (`ort_bench.board.page`): Jinja with autoescaping, so every
prompt, answer, name and path from the run is HTML-escaped; plots are matplotlib SVG inlined (text
escaped by matplotlib, math text off, fixed hash salt, no date: `report_plots`); no script at all, and a
Content-Security-Policy that would block one anyway, and nothing loaded from anywhere. The same
run folders give a byte-identical page.

Nothing here recomputes a score: the numbers are results.json's (`ort-bench submit --dry-run`
recomputes and checks them); the records are read, with their seals checked, for the item samples.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ort_bench.benchmark import get_version
from ort_bench.board.page import CSS, HTML_ENV, content_security_policy
from ort_bench.board.report_plots import AttackGroup, curves_svg, forest_svg, form_row, gap_svg, num
from ort_bench.errors import OrtBenchError

REPORT_FILE = "report.html"
SAMPLE = 6  # items shown per form (half leaked, half forgotten where a form has both)
SEARCH_DEPTH = 3  # attack runs: folders this deep under the run's grandparent
MAX_FOLDERS = 5000  # ... and no more folders than this looked at
MAX_TEXT = 600  # characters of a prompt or answer shown (the rest cut, said so)


EXTRA_CSS = """
h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .3rem; }
.callout { border-left: 4px solid #c0392b; background: #fbeeec; padding: .6rem 1rem; max-width: 60rem; }
.callout strong { color: #8e2a1f; }
code, .hash { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.hash { word-break: break-all; }
table.items td, table.items th { white-space: normal; vertical-align: top; text-align: left; }
table.items td { max-width: 28rem; }
table.items pre { white-space: pre-wrap; word-break: break-word; margin: 0; font-size: 12px; }
tr.leaked td { background: #fbeeec; }
tr.forgotten td { background: #eef7ee; }
tr.unknown td { background: #f4f5f7; }
.mark-yes { color: #8e2a1f; font-weight: 600; }
.mark-no { color: #2e7d32; font-weight: 600; }
.mark-ref { color: var(--fg); font-weight: 600; }
#prompt-prefix { background: var(--head); padding: .4rem .6rem; white-space: pre-wrap; }
dl.hashes { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; }
dl.hashes dt { font-weight: 600; }
dl.hashes dd { margin: 0; }
details > summary { cursor: pointer; font-weight: 600; margin: .6rem 0 .3rem; }
#forms td.text small { white-space: normal; display: inline-block; min-width: 14rem; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<title>ort-bench report: {{ title }}</title>
<style>{{ css }}</style>
</head>
<body>
<h1>ort-bench run report <small>{{ title }}</small></h1>
<p class="lede">Model <code>{{ model.spec }}</code>{% if model.method %} ({{ model.method }}){% endif %} scored
against its reference <code>{{ reference.spec }}</code> on benchmark {{ version }}{% if tier %}, tier {{ tier }}\
{% endif %}: {{ n_probes }} probes, {{ n_known }} of {{ n_total }} items known to the reference. Efficacy
E<sub>f</sub> = clip(1 − S<sub>f</sub>(model) / S<sub>f</sub>(reference), 0, 1) per form f (↑: more forgotten).
The numbers are results.json's; <code>ort-bench submit --dry-run</code> recomputes them from the records.</p>

<section id="headline">
<dl class="metrics">
{% for h in headline %}<dt>{{ h.label }} {{ h.arrow }}</dt><dd>{{ h.value }}{% if h.help %} <small>{{ h.help }}</small>\
{% endif %}</dd>
{% endfor %}</dl>
{% if worst %}<div class="callout" id="worst-form"><p><strong>Worst form: {{ worst.form }}</strong>, efficacy
{{ worst.value }}. {{ worst.text }}</p></div>{% else %}<p class="note" id="worst-form">No form has an efficacy:
{{ no_worst }}</p>{% endif %}
</section>

<section id="efficacy">
<h2>Forget efficacy per form</h2>
<figure id="forest">
{{ forest | safe }}
<figcaption>Points: efficacy per form with its 95% interval ({{ ci_method }}).
{% if placebo %}Grey bands: the placebo's 95% interval on the same form (<code>{{ placebo.path }}</code>: the
reference fine-tuned on unrelated data, scored on the same probes): efficacy inside it is what a harmless change
already gives.{% endif %}</figcaption>
</figure>
<p class="note" id="placebo-note">{{ placebo_note }}</p>
<div class="scroll">
<table id="forms">
<thead><tr><th class="text">form</th><th>known / total items</th><th>{{ unit }}s</th><th>score M0</th>\
<th>score M ↓</th><th>E ↑ [95% CI]</th>{% if placebo %}<th>placebo E [95% CI]</th>{% endif %}\
<th>leaked / known</th><th>vs train form p</th><th class="text">note</th></tr></thead>
<tbody>
{% for r in form_rows %}<tr data-form="{{ r.form }}"{% if r.worst %} class="headline"{% endif %}>\
<td class="text">{{ r.form }}{% if r.worst %} (worst){% endif %}</td><td>{{ r.known }}</td><td>{{ r.clusters }}</td>\
<td>{{ r.s_ref }}</td><td>{{ r.s_model }}</td><td>{{ r.eff }}</td>{% if placebo %}<td>{{ r.placebo }}</td>{% endif %}\
<td>{{ r.leaked }}</td><td>{{ r.p_train }}</td><td class="text"><small>{{ r.note }}</small></td></tr>
{% endfor %}</tbody>
</table>
</div>
{% if gap %}<figure id="gap">
{{ gap | safe }}
<figcaption>The form gap max<sub>f</sub> E<sub>f</sub> − min<sub>f</sub> E<sub>f</sub> (↓) with its 95% interval, beside
the gaps noise alone gives when every form has one efficacy (form labels permuted within {{ unit }}s): shaded up to
their 95th percentile, median marked.</figcaption>
</figure>{% endif %}
<p class="note" id="noise-note">{{ noise_note }}</p>
</section>

<section id="items">
<h2>Model and reference, item by item</h2>
<p class="note">Per form, up to {{ sample }} items the reference knows, chosen by a seeded hash of the item id
(seed {{ seed }}): those the model still answers (leaked) and those it no longer answers (forgotten), half each where
the form has enough; a form with no known item shows items neither knows. ✓: the item counts as answered (its score
reaches the scorer's threshold; an item of several probes, a true/false pair or the rotations of a multiple-choice
question, takes the lowest). {% if prefix %}Prompts
that start with the text below show only the rest (after …):{% endif %}</p>
{% if prefix %}<pre class="hash" id="prompt-prefix">{{ prefix }}</pre>{% endif %}
{% for f in item_forms %}<details id="items-{{ loop.index }}" data-form="{{ f.form }}"{% if f.open %} open{% endif %}>
<summary>{{ f.form }}: {{ f.summary }}</summary>
{% if f.shown %}<div class="scroll"><table class="items">
<thead><tr><th>item</th><th>prompt</th><th>gold</th><th>model</th><th>reference</th></tr></thead>
<tbody>
{% for it in f.shown %}<tr class="{{ it.cls }}"><td><small>{{ it.target }}<br>{{ it.template }}<br>{{ it.lang }}\
{% if it.n_probes > 1 %}<br>{{ it.n_probes }} probes{% endif %}</small></td><td><pre>{{ it.prompt }}</pre></td>\
<td>{{ it.gold }}</td><td>{% for o in it.model %}<pre>{{ o }}</pre>{% endfor %}<span class="{{ it.model_cls }}">\
{{ it.model_mark }}</span></td><td>{% for o in it.reference %}<pre>{{ o }}</pre>{% endfor %}\
<span class="{{ it.ref_cls }}">{{ it.ref_mark }}</span></td></tr>
{% endfor %}</tbody></table></div>{% else %}<p class="note">No records of this form.</p>{% endif %}
</details>
{% endfor %}</section>

<section id="attacks">
<h2>Attack curves</h2>
{% if curves %}<figure id="attack-curves">
{{ curves | safe }}
<figcaption>Efficacy per form (↑) along each attack of this model, at the attack's scored checkpoints (step 0:
the model before the attack); black dashes: worst-form efficacy at each checkpoint. In the tables, robust efficacy
(ILU's robust accuracy): a form's mean over the checkpoints, and under WFE the lowest of these over the forms in the
headline.</figcaption>
</figure>
{% for g in attack_groups %}<h3>{{ g.label }}</h3>
<div class="scroll"><table class="attack">
<thead><tr><th>step</th><th class="text">run folder</th><th class="text">model fingerprint</th><th>WFE ↑</th>\
{% for f in g.forms %}<th>E {{ f }} ↑</th>{% endfor %}</tr></thead>
<tbody>
{% for p in g.points %}<tr><td>{{ p.step }}</td><td class="text"><code>{{ p.path }}</code></td>\
<td class="text hash">{{ p.fingerprint }}</td><td>{{ p.wfe }}</td>{% for v in p.effs %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}<tr class="headline"><td>robust</td><td class="text">mean over the checkpoints (WFE: their minimum)</td>\
<td></td>\
<td>{{ g.robust_wfe }}</td>\
{% for v in g.robust %}<td>{{ v }}</td>{% endfor %}</tr>
</tbody></table></div>
{% endfor %}{% endif %}<p class="note" id="attack-note">{{ attack_note }}</p>
</section>

<section id="provenance">
<h2>What identifies this run</h2>
<dl class="hashes">
{% for h in hashes %}<dt>{{ h.label }}</dt><dd class="hash">{{ h.value }}</dd>
{% endfor %}</dl>
</section>
<p class="note">Generated by <code>ort-bench report</code> (ort-bench {{ ort_bench_version }}) from the run folder
<code>{{ run_name }}</code>; no script, nothing loaded from elsewhere.</p>
</body>
</html>
"""



# --------------------------------------------------------------------------------------------------
# Reading a run
# --------------------------------------------------------------------------------------------------

@dataclass
class Run:
    """One evaluate run folder: results.json as written, and the records of its two models."""

    folder: Path
    raw: dict[str, Any]
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _fp(info: Any) -> str | None:
    return info.get("fingerprint") if isinstance(info, dict) else None


def _attack_of(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The attack that made this run's model (evaluate copies the attack card into results.json)."""
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    attack = model.get("attack")
    return attack if isinstance(attack, dict) and isinstance(attack.get("attacked_model"), dict) else None


def _read_raw(folder: Path) -> dict[str, Any] | None:
    """results.json of a folder as JSON, or None if it has none or it is not a results object (a
    neighbour folder that is not a run is simply not one)."""
    try:
        raw = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) and isinstance(raw.get("model"), dict) else None


def read_run(run_dir: str | Path) -> Run:
    """The run folder with results.json validated and its records read, seals checked; one-line errors."""
    from ort_bench.jsonl import iter_objects, validate_line
    from ort_bench.scoring.records import Record, check_seal
    from ort_bench.scoring.results import read_results

    folder = Path(run_dir)
    if not folder.is_dir():
        raise OrtBenchError(f"{folder}: no such run folder")
    res = read_results(folder / "results.json")
    if res.reference is None or res.comparison is None:
        raise OrtBenchError(f"{folder / 'results.json'}: no reference model: the report sets the model beside its "
                            "reference (run evaluate with --reference)")
    raw = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    path = folder / "records.jsonl"
    if not path.is_file():
        raise OrtBenchError(f"{path}: no such records file (a run folder has results.json and records.jsonl)")
    model = raw["model"]
    model_fps = ({c.get("fingerprint") for c in model["checkpoints"].values() if isinstance(c, dict)}
                 if isinstance(model.get("checkpoints"), dict) else {model["fingerprint"]})
    want = {"model": model_fps, "reference": {res.reference.fingerprint}}
    by_role: dict[str, list[dict[str, Any]]] = {"model": [], "reference": []}
    for lineno, rec in iter_objects(path, name=str(path), not_json="not a JSON record (a torn or edited line)",
                                    not_object="not a JSON record"):
        where = f"{path}:{lineno}"
        if not check_seal(rec):
            raise OrtBenchError(f"{where}: record edited (record_sha256 does not match its content)")
        validate_line(Record, rec, where)
        if rec["model_fingerprint"] in want[rec["role"]] and rec["params_hash"] == res.params_hash:
            by_role[rec["role"]].append(rec)
    if res.reference.fingerprint in model_fps and not by_role["reference"]:
        by_role["reference"] = list(by_role["model"])  # a model scored against itself: one set of answers
    if not by_role["model"] or not by_role["reference"]:
        role = "model" if not by_role["model"] else "reference"
        raise OrtBenchError(f"{path}: no records of the {role} results.json names (fingerprint and params_hash)")
    return Run(folder, raw, by_role)


def _comparable(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Scored like each other: same benchmark, reference, scoring parameters and probes."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        hashes = r.get("hashes") if isinstance(r.get("hashes"), dict) else {}
        return (r.get("benchmark_version"), _fp(r.get("reference")), r.get("params_hash"), hashes.get("probes_sha256"))

    return key(a) == key(b) and key(a)[1] is not None


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def _is_placebo_of(raw: dict[str, Any], run: dict[str, Any]) -> bool:
    """`raw` is a placebo for `run`: the same reference fine-tuned on an unrelated environment, scored like it."""
    attack = _attack_of(raw)
    return bool(attack and attack.get("attack") == "finetune" and _fp(attack["attacked_model"]) == _fp(run.get(
        "reference")) and _comparable(raw, run))


def find_placebo(run: Run, placebo: str | Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The placebo run to read this run against: `placebo` if given (it must be one, scored like the run), else
    the first sibling folder (by name) holding a placebo of this run's reference, or None."""
    if placebo is not None:
        folder = Path(placebo)
        raw = _read_raw(folder)
        if raw is None:
            raise OrtBenchError(f"{folder}: no results.json of a run (--placebo names an evaluate run folder)")
        if not _comparable(raw, run.raw):
            raise OrtBenchError(f"{folder}: not scored like this run (its benchmark, reference, scoring parameters "
                                "or probes differ): no placebo for it")
        if not _is_placebo_of(raw, run.raw):  # the band is drawn and named as the placebo's: it must be one
            raise OrtBenchError(f"{folder}: not a placebo of this run (its model is not the reference fine-tuned on "
                                "an unrelated environment: `ort-bench attack finetune`)")
        return folder, raw
    if _attack_of(run.raw) and _is_placebo_of(run.raw, run.raw):
        return None  # the run is a placebo itself
    parent = run.folder.resolve().parent
    try:
        siblings = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return None
    for folder in siblings:
        if folder == run.folder.resolve():
            continue
        raw = _read_raw(folder)
        if raw is not None and _is_placebo_of(raw, run.raw):
            return folder, raw
    return None


def _run_folders(roots: list[Path]) -> list[Path]:
    """Folders holding a results.json, up to `SEARCH_DEPTH` levels under each root (a run folder's
    own subfolders are not searched), at most `MAX_FOLDERS` looked at; sorted, deduplicated."""
    found: set[Path] = set()
    seen = 0
    for root in roots:
        level = [root]
        for _ in range(SEARCH_DEPTH + 1):
            nxt = []
            for d in level:
                seen += 1
                if seen > MAX_FOLDERS:
                    return sorted(found)
                if (d / "results.json").is_file():
                    found.add(d.resolve())
                    continue
                try:
                    nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                                  and not p.is_symlink())
                except OSError:
                    continue
            level = nxt
    return sorted(found)


def _attack_label(attack: dict[str, Any]) -> str:
    hp = attack.get("hyperparameters") if isinstance(attack.get("hyperparameters"), dict) else {}
    what = str(attack.get("attack", "attack"))
    if attack.get("env"):
        what += f" on {attack['env']}"
    if isinstance(attack.get("targets"), list):
        what += f" ({len(attack['targets'])} target{'s' if len(attack['targets']) != 1 else ''})"
    return f"{what}: {hp.get('steps', '?')} steps, lr {hp.get('lr', '?')}, seed {hp.get('seed', '?')}"


def find_attack_curves(run: Run, roots: list[Path] | None = None) -> tuple[list[AttackGroup], int]:
    """Attacks of this run's model (or, for an attacked run, of the model it attacked) scored like this
    run, grouped by attack, with the unattacked model as step 0 where it was scored; also how many
    run folders were looked at. `roots`: where to look (default: the run's parent and grandparent)."""
    attack = _attack_of(run.raw)
    base = _fp(attack["attacked_model"]) if attack else _fp(run.raw.get("model"))
    here = run.folder.resolve()
    if roots is None:
        roots = [here.parent, here.parent.parent]
    folders = _run_folders([Path(r).resolve() for r in roots])
    if here not in folders:
        folders.insert(0, here)
    step0: tuple[Path, dict[str, Any]] | None = None
    groups: dict[str, AttackGroup] = {}
    for folder in sorted(folders, key=lambda p: (p != here, str(p))):  # the run itself wins a tie
        raw = run.raw if folder == here else _read_raw(folder)
        if raw is None or not _comparable(raw, run.raw):
            continue
        a = _attack_of(raw)
        if a is None and _fp(raw.get("model")) == base:
            step0 = step0 or (folder, raw)
        elif a is not None and _fp(a["attacked_model"]) == base:
            hp = dict(a.get("hyperparameters") or {})
            step = hp.pop("checkpoint_step", hp.get("steps"))
            if not isinstance(step, int) or isinstance(step, bool):
                continue
            ident = json.dumps({k: a.get(k) for k in ("attack", "env", "targets")} | {"hp": hp}, sort_keys=True,
                               default=str)
            group = groups.setdefault(ident, AttackGroup(_attack_label(a)))
            group.points.setdefault(step, (folder, raw))
    out = []
    for g in sorted(groups.values(), key=lambda g: g.label):
        if step0 is not None:
            g.points.setdefault(0, step0)
        if len(g.points) >= 2:
            g.points = dict(sorted(g.points.items()))
            out.append(g)
    return out, len(folders)


# --------------------------------------------------------------------------------------------------
# Items side by side
# --------------------------------------------------------------------------------------------------

def _items(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Forget-split records by item (a true/false pair, a multiple-choice item's rotations, or a probe), file order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("split") == "forget":
            out.setdefault(r.get("item_id") or r["probe_id"], []).append(r)
    return out


def common_prefix(texts: list[str], share: float = 0.5) -> str:
    """The longest run of whole lines that more than `share` of the prompts start with (a chat template's
    system turn), or "" when under 20 characters: shown once instead of in every row."""
    best, lines = "", 1
    while True:
        counts: dict[str, int] = {}
        for t in texts:
            parts = t.split("\n", lines)
            if len(parts) > lines:  # at least `lines` whole lines
                head = "\n".join(parts[:lines]) + "\n"
                counts[head] = counts.get(head, 0) + 1
        top = min(counts, key=lambda k: (-counts[k], k)) if counts else None
        if top is None or counts[top] <= share * len(texts):
            break
        best, lines = top, lines + 1
    return best if len(best) >= 20 else ""


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f" … [{len(text) - MAX_TEXT} more characters]"


def _order(seed: int, item: str) -> str:
    return hashlib.sha256(f"{seed}|{item}".encode()).hexdigest()


def sample_items(run: Run, sample: int = SAMPLE) -> tuple[str, list[dict[str, Any]]]:
    """The common prompt prefix and, per forget form (results.json's order), the items shown and counts."""
    version = get_version(run.raw["benchmark_version"])
    seed = int((run.raw.get("config") or {}).get("seed", 0) or 0)
    model, ref = _items(run.records["model"]), _items(run.records["reference"])
    prompts = [r["prompt_text"] for recs in (model, ref) for item in recs.values() for r in item]
    prefix = common_prefix(prompts)

    def show(prompt: str) -> str:
        return _cut("… " + prompt[len(prefix):] if prefix and prompt.startswith(prefix) else prompt)

    def score(recs: list[dict[str, Any]]) -> float:
        return min(float(r["primary"]) for r in recs)

    forms: dict[str, list[str]] = {}
    for item, recs in ref.items():
        if item in model:
            forms.setdefault(recs[0]["form"], []).append(item)
    rows = [r["form"] for r in run.raw.get("forms", []) if isinstance(r, dict) and "form" in r]
    out = []
    for form in [*rows, *sorted(set(forms) - set(rows))]:
        items = forms.get(form, [])
        th = {i: version.threshold(ref[i][0]["scorer"]) for i in items}
        known = [i for i in items if score(ref[i]) >= th[i]]
        leaked = [i for i in known if score(model[i]) >= th[i]]
        by_hash = sorted(known, key=lambda i: _order(seed, i))
        lk = [i for i in by_hash if i in set(leaked)]
        fg = [i for i in by_hash if i not in set(leaked)]
        n_lk = max((sample + 1) // 2, sample - len(fg))  # half leaked, more if too few forgotten
        chosen = lk[:n_lk] + fg[: sample - min(n_lk, len(lk))]
        if not known:
            chosen = sorted(items, key=lambda i: _order(seed, i))
        shown = []
        for i in chosen[:sample]:
            m, r = model[i], ref[i]
            m_ok, r_ok = score(m) >= th[i], score(r) >= th[i]
            several = len(m) > 1
            answers = m[0]["answers"]
            gold = " | ".join(answers[:4]) + (f" (+{len(answers) - 4} more)" if len(answers) > 4 else "")
            if several:
                gold = "; ".join(f"{p.get('variant') or p['probe_id']}: {' | '.join(p['answers'][:2])}" for p in m)

            def outs(recs: list[dict[str, Any]], multi: bool = several) -> list[str]:
                return [_cut(f"{p.get('variant') or p['probe_id']}: {p['output']}" if multi else p["output"])
                        for p in recs]

            shown.append({
                "cls": ("leaked" if m_ok else "forgotten") if r_ok else "unknown",
                "target": m[0].get("target") or "", "template": m[0]["template_id"], "lang": m[0]["lang"],
                "n_probes": len(m), "prompt": show(m[0]["prompt_text"]), "gold": gold,
                "model": outs(m), "reference": outs(r),
                "model_mark": f"{'✓ still answers' if m_ok else '✗ does not answer'} (score {score(m):.2f})",
                "model_cls": "mark-yes" if m_ok else "mark-no",
                "ref_mark": f"{'✓ knows' if r_ok else '✗ does not know'} (score {score(r):.2f})",
                "ref_cls": "mark-ref",
            })
        out.append({"form": form, "shown": shown, "n_items": len(items), "n_known": len(known),
                    "n_leaked": len(leaked)})
    return prefix, out


# --------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------

def _f(v: Any, digits: int = 2) -> str:
    v = num(v)
    return "—" if v is None else f"{v:.{digits}f}"


def _ci(row: dict[str, Any], key: str, digits: int = 2) -> str:
    lo, hi = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    point = _f(row.get(key), digits)
    return point if num(lo) is None or num(hi) is None else f"{point} [{_f(lo, digits)}, {_f(hi, digits)}]"


def _dump(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)


def _submission(folder: Path) -> dict[str, Any]:
    """submission.json of a leaderboard entry folder, if it has a readable one (for its names and hashes)."""
    try:
        sub = json.loads((folder / "submission.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return sub if isinstance(sub, dict) else {}


def _file_hash(path: Path) -> str:
    from ort_bench.provenance import file_sha256

    return file_sha256(path) if path.is_file() else "—"


def _hashes(run: Run, sub: dict[str, Any], placebo: tuple[Path, dict[str, Any]] | None) -> list[dict[str, str]]:
    raw, out = run.raw, []

    def add(label: str, value: Any) -> None:
        if value is not None and value != {} and value != []:
            out.append({"label": label, "value": value if isinstance(value, str) else _dump(value)})

    add("run folder", run.folder.resolve().name)
    add("results.json sha256", _file_hash(run.folder / "results.json"))
    add("records.jsonl sha256", _file_hash(run.folder / "records.jsonl"))
    add("records read (model / reference)", f"{len(run.records['model'])} / {len(run.records['reference'])}")
    add("benchmark version", raw.get("benchmark_version"))
    add("results schema version", str(raw.get("schema_version")))
    add("created at", raw.get("created_at"))
    model, ref = raw.get("model") or {}, raw.get("reference") or {}
    add("model", f"{model.get('spec')} ({model.get('kind')})")
    add("model fingerprint", model.get("fingerprint"))
    if isinstance(model.get("checkpoints"), dict):
        for target, c in model["checkpoints"].items():
            add(f"checkpoint of {target}", _fp(c))
    unl = model.get("unlearned_with") or {}
    if unl:
        add("unlearned with", unl.get("method"))
        add("unlearning base model fingerprint", _fp(unl.get("base_model")))
        add("unlearning targets", unl.get("targets"))
        add("unlearning train form", unl.get("train_form"))
        add("unlearning hyperparameters", unl.get("hyperparameters"))
        if unl.get("trained_probe_ids"):
            add("trained probes (sha256 of their ids)", hashlib.sha256(_dump(unl["trained_probe_ids"]).encode())
                .hexdigest())
    attack = _attack_of(raw)
    if attack:
        add("attack", {k: v for k, v in attack.items() if k != "attacked_model"})
        add("attacked model fingerprint", _fp(attack["attacked_model"]))
    add("reference", f"{ref.get('spec')} ({ref.get('kind')})")
    add("reference fingerprint", ref.get("fingerprint"))
    add("params_hash", raw.get("params_hash"))
    for k, v in (raw.get("hashes") or {}).items():
        add(k, v)
    add("config", raw.get("config"))
    add("selection", raw.get("selection"))
    for k, v in (raw.get("versions") or {}).items():
        add(f"version of {k}", v)
    if sub:
        for k in ("name", "method", "model_name", "date", "link"):
            add(f"submission {k}", sub.get(k) if isinstance(sub.get(k), str) else None)
        for k, v in (sub.get("files") or {}).items() if isinstance(sub.get("files"), dict) else ():
            add(f"submitted {k} sha256", v)
    if placebo is not None:
        folder, p = placebo
        add("placebo run", _rel(folder, run.folder))
        add("placebo model fingerprint", _fp(p.get("model")))
        add("placebo results.json sha256", _file_hash(folder / "results.json"))
    return out


def _placebo_note(run: Run, placebo: tuple[Path, dict[str, Any]] | None) -> str:
    if placebo is not None:
        attack = _attack_of(placebo[1]) or {}
        hp = attack.get("hyperparameters") or {}
        return (f"Placebo: {_rel(placebo[0], run.folder)}, the reference fine-tuned {hp.get('steps', '?')} steps on "
                f"{attack.get('env', 'unrelated data')} (model {str(_fp(placebo[1].get('model')))[:12]}), scored on "
                "the same probes. Read each form's efficacy against its band.")
    if _attack_of(run.raw) and _is_placebo_of(run.raw, run.raw):
        return "This run is itself a placebo (its model is the reference fine-tuned on unrelated data): no band."
    return ("No placebo for this run: no sibling run folder holds the reference fine-tuned on unrelated data and "
            "scored on the same probes (ort-bench attack finetune on the reference, then evaluate; or --placebo "
            "DIR). Without one, nothing on this page says how much efficacy a harmless change already gives.")


def _noise_note(c: dict[str, Any]) -> str:
    noise = c.get("noise_gap") or {}
    if not noise:
        if c.get("form_gap") is None:
            return "Fewer than two forms have an efficacy: no form gap and no noise test."
        return "This run's results carry no noise test of the form gap (it came with benchmark v3)."
    return (f"Form gap {_ci(c, 'form_gap')}; noise alone gives a median of {_f(noise.get('gap_noise_median'))} and a "
            f"95th percentile of {_f(noise.get('gap_noise_q95'))} ({noise.get('n_perm', '?')} permutations over "
            f"{noise.get('n_items', '?')} known items of {noise.get('n_clusters', '?')} clusters): p = "
            f"{_f(noise.get('p_value'), 3)}.")


def render_report(run_dir: str | Path, placebo: str | Path | None = None, sample: int = SAMPLE,
                  attack_roots: list[str | Path] | None = None) -> tuple[str, dict[str, Any]]:
    """The page for one run, and a summary of what it shows. `placebo`: the placebo run folder (default: a
    sibling that is one); `attack_roots`: where to look for attacks of the model (default: the run's parent
    and grandparent, `SEARCH_DEPTH` deep); `sample`: items shown per form."""
    from importlib.metadata import PackageNotFoundError, version

    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 0:
        raise OrtBenchError(f"sample must be a whole number of items, 0 or more (got {sample!r})")
    run = read_run(run_dir)
    raw = run.raw
    c = raw["comparison"]
    sub = _submission(run.folder)
    found = find_placebo(run, placebo)
    placebo_rows = ({r["form"]: r for r in found[1].get("forms") or [] if isinstance(r, dict) and "form" in r}
                    if found else None)
    model, ref = raw["model"], raw["reference"]
    title = str(sub.get("name") or run.folder.resolve().name)
    unit = str(c.get("cluster_unit") or "target")
    rows = [r for r in raw.get("forms") or [] if isinstance(r, dict) and "form" in r]
    worst = raw.get("worst_form")
    prefix, item_forms = sample_items(run, sample)
    counts = {f["form"]: f for f in item_forms}

    form_rows = []
    for r in rows:
        f = r["form"]
        note = r.get("excluded") or r.get("note") or ""
        form_rows.append({
            "form": f, "worst": f == worst, "known": f"{r.get('n_known', '—')} / {r.get('n_total', '—')}",
            "clusters": r.get("n_clusters_known", r.get("n_targets_known", "—")),
            "s_ref": _f(r.get("score_reference"), 3), "s_model": _f(r.get("score_model"), 3),
            "eff": _ci(r, "efficacy") + ("" if r.get("in_headline", True) or r.get("efficacy") is None else " (seen)"),
            "placebo": _ci(placebo_rows.get(f, {}), "efficacy") if placebo_rows is not None else "",
            "leaked": f"{counts[f]['n_leaked']} / {counts[f]['n_known']}" if f in counts else "—",
            "p_train": _f(r.get("p_vs_train_form"), 3), "note": note,
        })

    worst_box = None
    if worst is not None:
        wr = form_row(raw, worst)
        text = (f"The model keeps {_f(wr.get('retained_knowledge'))} of what the reference knew in this form "
                f"(score {_f(wr.get('score_model'), 3)} against {_f(wr.get('score_reference'), 3)}, above chance, "
                f"mean over {unit}s)")
        if worst in counts:
            text += (f"; {counts[worst]['n_leaked']} of the {counts[worst]['n_known']} items the reference knows are "
                     "still answered")
        text += "."
        pr = (placebo_rows or {}).get(worst) or {}
        if num(pr.get("efficacy")) is not None:
            lo, p_hi = num(wr.get("efficacy_ci_low")), num(pr.get("efficacy_ci_high"))
            rel = ("its interval lies above the placebo's" if lo is not None and p_hi is not None and lo > p_hi
                   else "its interval overlaps the placebo's: not told apart from unrelated fine-tuning")
            text += f" The placebo gives {_ci(pr, 'efficacy')} on this form: {rel}."
        worst_box = {"form": worst, "value": _ci(c, "worst_form_efficacy"), "text": text}

    headline = [
        {"label": "Worst-form efficacy", "arrow": "↑", "value": _ci(c, "worst_form_efficacy")
         + (f" ({worst})" if worst else ""), "help": "min over forms of E_f: the headline"},
        {"label": "Form gap", "arrow": "↓", "value": _ci(c, "form_gap"),
         "help": "max − min of E_f" + (f"; noise alone: p = {_f((c.get('noise_gap') or {}).get('p_value'), 3)}"
                                       if c.get("noise_gap") else "")},
        {"label": "Utility", "arrow": "↑", "value": _ci(c, "utility"),
         "help": f"neighbour retention {_f(c.get('neighbour_retention'))}, general retention "
                 f"{_f(c.get('general_retention'))}"},
        {"label": "ORT score", "arrow": "↑", "value": _ci(c, "ort_score"),
         "help": "harmonic mean of worst-form efficacy and utility"},
        {"label": "Fluency distance", "arrow": "↓", "value": _f(c.get("fluency_distance")),
         "help": f"|H(model) − H(reference)| bits: {_f(c.get('fluency'))} vs {_f(c.get('fluency_reference'))}"}
        if c.get("fluency_distance") is not None else
        {"label": "Fluency", "arrow": "", "value": _f(raw.get("fluency")), "help": "n-gram entropy, bits"},
    ]
    if c.get("train_form") is not None:
        headline.append({"label": "Train form gap", "arrow": "↓", "value": _f(raw.get("train_form_gap")),
                         "help": f"E({c['train_form']}) − WFE"})
    if c.get("few_targets"):
        headline.append({"label": "Few targets", "arrow": "", "value": f"{c.get('n_targets')} target(s)",
                         "help": "intervals over facts, not targets"})

    forest = forest_svg(rows, worst, num(c.get("worst_form_efficacy")),
                        f"{title}: forget efficacy per form (↑), {model.get('spec')}", placebo_rows)
    gap_rows = [("this run", c)] if c.get("form_gap") is not None else []
    if found is not None and (found[1].get("comparison") or {}).get("form_gap") is not None:
        gap_rows.append(("placebo", found[1]["comparison"]))
    gap = gap_svg(gap_rows) if gap_rows else None

    groups, n_looked = find_attack_curves(run, [Path(r) for r in attack_roots] if attack_roots is not None else None)
    measured = [r["form"] for r in rows if r.get("efficacy") is not None]
    curves, attack_groups = None, []
    if groups:
        forms = sorted({r["form"] for g in groups for _, p in g.points.values() for r in p.get("forms") or []
                        if isinstance(r, dict) and num(r.get("efficacy")) is not None},
                       key=lambda f: (f not in measured, f))
        curves = curves_svg(groups, forms)
        for g in groups:
            pts, effs = [], {f: [] for f in forms}
            for step, (folder, p) in g.points.items():
                vals = [num(form_row(p, f).get("efficacy")) for f in forms]
                for f, v in zip(forms, vals, strict=True):
                    effs[f].append(v)
                pts.append({"step": step, "path": _rel(folder, run.folder), "fingerprint": _fp(p.get("model")),
                            "wfe": _f(p.get("worst_form_efficacy")), "effs": [_f(v) for v in vals]})
            robust = {f: sum(v) / len(v) for f, v in effs.items() if v and None not in v}  # type: ignore[arg-type]
            in_wfe = [f for f in robust
                      if all(form_row(p, f).get("in_headline", True) for _, p in g.points.values())]
            attack_groups.append({"label": g.label, "forms": forms, "points": pts,
                                  "robust_wfe": _f(min(robust[f] for f in in_wfe)) if in_wfe else "—",
                                  "robust": [_f(robust.get(f)) for f in forms]})
        attack_note = (f"{len(groups)} attack{'s' if len(groups) != 1 else ''} of this model scored at several "
                       "checkpoints like this run, found in the run folders near this one.")
    else:
        attack_note = ("No attack curve: no run folder near this one (under its parent and grandparent, "
                       f"{SEARCH_DEPTH} levels deep) holds this model attacked and scored like it at two or more "
                       "checkpoints (ort-bench attack ... --save-at, then evaluate each checkpoint).")

    try:
        ort_version = version("ort-bench")
    except PackageNotFoundError:
        ort_version = "unknown"
    open_form = worst if worst in counts else (item_forms[0]["form"] if item_forms else None)
    page = HTML_ENV.from_string(PAGE).render(
        title=title, css=Markup(CSS + EXTRA_CSS), csp=content_security_policy(), version=raw.get("benchmark_version"),
        tier=(raw.get("selection") or {}).get("tier"), n_probes=raw.get("n_probes"),
        n_known=c.get("n_known"), n_total=c.get("n_total"),
        model={"spec": model.get("spec"), "method": (model.get("unlearned_with") or {}).get("method")
               or sub.get("method") or (_attack_of(raw) or {}).get("attack")},
        reference={"spec": ref.get("spec")}, headline=headline, worst=worst_box,
        no_worst="every form is excluded (too few known items or targets, or no more than chance)",
        forest=Markup(forest), ci_method=c.get("ci_method") or "bootstrap over targets",
        placebo={"path": _rel(found[0], run.folder)} if found else None, placebo_note=_placebo_note(run, found),
        unit=unit, form_rows=form_rows, gap=Markup(gap) if gap else None, noise_note=_noise_note(c),
        sample=sample, seed=int((raw.get("config") or {}).get("seed", 0) or 0), prefix=prefix,
        item_forms=[{**f, "open": f["form"] == open_form,
                     "summary": (f"{f['n_leaked']} of {f['n_known']} known items still answered (of {f['n_items']})"
                                 if f["n_known"] else f"the reference knows none of its {f['n_items']} items")}
                    for f in item_forms],
        curves=Markup(curves) if curves else None, attack_groups=attack_groups, attack_note=attack_note,
        hashes=_hashes(run, sub, found), ort_bench_version=ort_version, run_name=run.folder.resolve().name,
    )
    summary = {
        "run": str(run.folder), "worst_form": worst, "worst_form_efficacy": c.get("worst_form_efficacy"),
        "forms": [r["form"] for r in rows], "placebo": str(found[0]) if found else None,
        "attack_curves": [g.label for g in groups], "run_folders_searched": n_looked,
        "items_shown": sum(len(f["shown"]) for f in item_forms),
    }
    return page, summary


def build_report(run_dir: str | Path, out: str | Path | None = None, placebo: str | Path | None = None,
                 sample: int = SAMPLE, attack_roots: list[str | Path] | None = None) -> dict[str, Any]:
    """Write the report of one evaluate run folder (`render_report`) to `out` (default RUN_DIR/report.html);
    return where it went and what it shows."""
    page, summary = render_report(run_dir, placebo=placebo, sample=sample, attack_roots=attack_roots)
    out = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    if out.is_dir():
        raise OrtBenchError(f"{out}: is a folder (--out names the HTML file to write)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        with tmp.open("w", encoding="utf-8", newline="\n") as fh:
            fh.write(page)
        tmp.replace(out)
    except OSError as exc:
        raise OrtBenchError(f"{out}: cannot write the report ({exc.strerror})") from None
    return {"out": str(out), **summary}
