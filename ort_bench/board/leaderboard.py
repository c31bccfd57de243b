"""The leaderboard, built from files: every stored submission is verified and re-scored from its
records (`ort_bench.board.submit.verify_submission`, which uses `ort_bench.scoring.metrics`), then written as
`leaderboard.md`, `leaderboard.csv`, `leaderboard.json`, `heatmap.svg` and a self-contained
`index.html`. Nothing is hand-edited and nothing is taken from a submitted aggregate.

Deterministic: the same submissions give byte-identical files (no timestamps; entries ordered by
ORT score, best first, then by name; the heatmap is an SVG with fixed ids and no date).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from ort_bench.benchmark import BENCHMARK_VERSION, VERSIONS, get_version
from ort_bench.board.audit import read_audit
from ort_bench.board.submit import required_forms, submissions_dir, verify_submission
from ort_bench.errors import OrtBenchError
from ort_bench.scoring.per_target import ONE_PER_TARGET
from ort_bench.scoring.results import fmt

OUTPUT_FILES = ("leaderboard.md", "leaderboard.csv", "leaderboard.json", "heatmap.svg", "index.html")

# The headline columns: key in the recomputed results, label, help text, and CI keys if any.
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("worst_form_efficacy", "Worst-form efficacy",
     "min over forms of E_f: what an attacker who picks the form finds forgotten (the headline)"),
    ("form_gap", "Form gap", "max_f E_f − min_f E_f: how much forgetting depends on the form asked"),
    ("utility", "Utility", "mean retention of neighbour knowledge and general knowledge, clip(R, 0, 1)"),
    ("ort_score", "ORT score", "harmonic mean of worst-form efficacy and utility (ranking)"),
)
EFFICACY_HELP = "forget efficacy on form f: clip(1 − S_f(model) / S_f(reference), 0, 1), 95% bootstrap CI"


def _direction(key: str) -> str:
    """'high' or 'low' (which end is better), from ort_bench.scoring.metrics.DIRECTIONS."""
    from ort_bench.scoring.metrics import DIRECTIONS, HIGHER, LOWER

    d = DIRECTIONS.get(key)
    if d == HIGHER:
        return "high"
    if d == LOWER:
        return "low"
    raise OrtBenchError(f"metric {key!r} has no direction in ort_bench.scoring.metrics.DIRECTIONS")


ARROW = {"high": "↑", "low": "↓"}
SERVED_HELP = ("scored through an OpenAI-compatible endpoint (`--backend openai`): its fingerprint hashes what the "
               "server reported and its answers to fixed prompts, which is weaker than a weight hash")


def _audit_text(a: dict[str, Any] | None) -> str:
    return f"audited ({a['sample']} items, {a['date']})" if a else "not audited"


def _entry(sub: Any, run: Any, forms: tuple[str, ...], folder: Path | None = None) -> dict[str, Any]:
    r = run.recomputed
    rows = {row["form"]: row for row in r.get("forms", [])}
    per_form = {}
    for f in forms:
        row = rows.get(f, {})
        per_form[f] = {"efficacy": row.get("efficacy"), "ci_low": row.get("efficacy_ci_low"),
                       "ci_high": row.get("efficacy_ci_high"), "n_known": row.get("n_known"),
                       "excluded": row.get("excluded")}
        if get_version(run.results.benchmark_version).reports_prob:
            per_form[f].update(prob_model=row.get("prob_model"), prob_reference=row.get("prob_reference"),
                               chance=row.get("chance"))
    cmp = r.get("comparison") or {}
    res = run.results
    return {
        "name": sub.name, "method": sub.method, "model_name": sub.model_name or res.model.spec,
        "link": str(sub.link) if sub.link else None, "date": sub.date.isoformat(),
        "model_fingerprint": res.model.fingerprint, "reference": res.reference.spec,
        "reference_fingerprint": res.reference.fingerprint,
        "worst_form_efficacy": r.get("worst_form_efficacy"),
        "worst_form_efficacy_ci_low": cmp.get("worst_form_efficacy_ci_low"),
        "worst_form_efficacy_ci_high": cmp.get("worst_form_efficacy_ci_high"),
        "worst_form": r.get("worst_form"),
        "form_gap": r.get("form_gap"), "form_gap_ci_low": cmp.get("form_gap_ci_low"),
        "form_gap_ci_high": cmp.get("form_gap_ci_high"),
        "utility": r.get("utility"), "ort_score": r.get("ort_score"), "fluency": r.get("fluency"),
        "n_probes": res.n_probes, "n_known": cmp.get("n_known"),
        "forms": per_form,
        **({"audit": read_audit(folder) if folder is not None else None}
           if get_version(res.benchmark_version).shows_audit else {}),
        **(_v3_extras(cmp) if get_version(res.benchmark_version).metrics == "v3" else {}),
        **({"served": served} if (served := _served(res)) else {}),
    }


def _served(res: Any) -> list[str]:
    """The roles (model, reference) scored behind an endpoint, whose fingerprints are weaker (none for most);
    a model of one checkpoint per target counts when any of its checkpoints was served."""
    def served(info: Any) -> bool:
        checkpoints = (info.model_dump().get("checkpoints") or {}).values()
        return info.kind == "served" or any(isinstance(c, dict) and c.get("kind") == "served" for c in checkpoints)

    return [role for role, info in (("model", res.model), ("reference", res.reference))
            if info is not None and served(info)]


def _model_text(e: dict[str, Any]) -> str:
    return (e["model_name"] or "") + (f" (served: {', '.join(e['served'])})" if e.get("served") else "")


V3_COLUMNS = ("ort_score_ci_low", "ort_score_ci_high", "utility_ci_low", "utility_ci_high", "rank_ci_low",
              "rank_ci_high", "fluency_distance", "noise_gap_p_value", "cluster_unit")


def _v3_extras(cmp: dict[str, Any]) -> dict[str, Any]:
    """What benchmark v3 adds to an entry: intervals on utility and the ORT score, the fluency distance,
    the noise test of the form gap (the rank interval is set across entries, `_rank_intervals`)."""
    return {"ort_score_ci_low": cmp.get("ort_score_ci_low"), "ort_score_ci_high": cmp.get("ort_score_ci_high"),
            "utility_ci_low": cmp.get("utility_ci_low"), "utility_ci_high": cmp.get("utility_ci_high"),
            "rank_ci_low": None, "rank_ci_high": None, "fluency_distance": cmp.get("fluency_distance"),
            "noise_gap_p_value": (cmp.get("noise_gap") or {}).get("p_value"), "cluster_unit": cmp.get("cluster_unit")}


def _rank_intervals(entries: list[dict[str, Any]], runs: dict[str, Any], version: str) -> None:
    """95% intervals of each entry's rank by ORT score: the targets resampled jointly across entries (a
    pinned tier: every entry has the same targets), over the forms every entry has in its headline."""
    from ort_bench.scoring import inference
    from ort_bench.scoring.metrics_v3 import known_frames
    from ort_bench.scoring.records import records_frame

    # one checkpoint per target: its utility is a mean over checkpoints, not resampled with the others' targets
    runs = {n: r for n, r in runs.items() if r.results.model.model_dump().get("protocol") != ONE_PER_TARGET}
    entries = [e for e in entries if e["name"] in runs]
    if not entries:
        return
    frames = {n: known_frames(records_frame(r.records["model"]), records_frame(r.records["reference"]),
                              get_version(version)) for n, r in runs.items()}
    headline = [{f["form"] for f in r.recomputed["forms"] if f.get("in_headline") and f.get("efficacy") is not None}
                for r in runs.values()]
    forms = sorted(set.intersection(*headline)) if headline else []
    ranks = inference.rank_intervals(frames, forms, key="ort", seed=0)
    for e in entries:
        _, lo, hi = ranks[e["name"]]
        e["rank_ci_low"], e["rank_ci_high"] = int(lo), int(hi)


def _order(e: dict[str, Any]) -> tuple[Any, ...]:
    s = e["ort_score"]
    return (s is None, -(s or 0.0), e["name"])


def collect_entries(root: str | Path | None = None, version: str = BENCHMARK_VERSION,
                    skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """Every submission of `version`, verified and recomputed, in leaderboard order. A submission that
    fails its checks stops the build (naming its folder), or with `skipped` given is left out and its
    one-line reason appended there (`leaderboard build --keep-going`)."""
    forms = required_forms(version)
    subs = submissions_dir(root, version)
    entries = []
    runs: dict[str, Any] = {}
    if subs.is_dir():
        for folder in sorted(p for p in subs.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                sub, run = verify_submission(folder)
            except OrtBenchError as exc:
                if skipped is None:
                    raise OrtBenchError(f"{exc} (leaderboard build --keep-going skips it)") from None
                skipped.append(f"{folder}: {exc}")
                continue
            entries.append(_entry(sub, run, forms, folder))
            runs[sub.name] = run
    entries.sort(key=_order)
    for i, e in enumerate(entries, start=1):
        e["rank"] = i
    if get_version(version).metrics == "v3":
        _rank_intervals(entries, runs, version)
    return entries


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------

def _ci(lo: float | None, hi: float | None) -> str:
    return "" if lo is None or hi is None else f"{lo:.2f}–{hi:.2f}"


def _directions(forms: tuple[str, ...]) -> dict[str, str]:
    out = {k: _direction(k) for k, _, _ in HEADLINE}
    eff = _direction("forms.efficacy")
    out.update({f"efficacy.{f}": eff for f in forms})
    return out


def _md_text(s: str | None) -> str:
    """User text inside a Markdown table cell: HTML-escaped (renderers pass HTML through), pipes escaped."""
    if not s:
        return ""
    return html.escape(s, quote=True).replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")


def _md_url(u: str) -> str:
    return u.replace("(", "%28").replace(")", "%29").replace(" ", "%20").replace("<", "%3C").replace(">", "%3E")


def write_markdown(entries: list[dict[str, Any]], forms: tuple[str, ...], version: str) -> str:
    d = _directions(forms)
    head = ["#", "Name", "Method", "Model"]
    head += [f"{label} {ARROW[d[k]]}" for k, label, _ in HEADLINE]
    head += [f"E {_md_text(f)} {ARROW[d['efficacy.' + f]]}" for f in forms]
    audits = get_version(version).shows_audit
    if audits:
        head.append("Audit")
    lines = [
        f"# ort-bench leaderboard (benchmark {version})", "",
        "Generated by `ort-bench leaderboard build` from the verified submissions in `submissions/`: every number "
        "is recomputed from the per-probe records. ↑ higher is better, ↓ lower is better; brackets: 95% "
        + ("interval (cluster jackknife over targets, coverage in docs/coverage_sim.md; the rank's: targets "
           "resampled jointly across entries)" if get_version(version).metrics == "v3" else "bootstrap interval")
        + ". Ranked by ORT score.", "",
        "| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 4 and i != 0 else "---:" for i in range(len(head)))
        + "|",
    ]
    for e in entries:
        name = _md_text(e["name"])
        if e["link"]:
            name = f"[{name}]({_md_url(e['link'])})"
        rank = str(e["rank"]) + (f" [{e['rank_ci_low']}–{e['rank_ci_high']}]" if e.get("rank_ci_low") else "")
        cells = [rank, name, _md_text(e["method"]), _md_text(_model_text(e))]
        for k, _, _ in HEADLINE:
            v = fmt(e[k])
            ci = _ci(e.get(f"{k}_ci_low"), e.get(f"{k}_ci_high"))
            if k == "worst_form_efficacy" and e["worst_form"]:
                v += f" ({_md_text(e['worst_form'])})"
            cells.append(f"{v} [{ci}]" if ci else v)
        for f in forms:
            c = e["forms"][f]
            ci = _ci(c["ci_low"], c["ci_high"])
            cells.append(f"{fmt(c['efficacy'])} [{ci}]" if ci else fmt(c["efficacy"]))
        if audits:
            cells.append(_audit_text(e.get("audit")))
        lines.append("| " + " | ".join(cells) + " |")
    if not entries:
        lines += ["", "No submissions yet: see ../README.md."]
    if entries and get_version(version).reports_prob:
        lines += ["", "## ORT's Prob per form", "",
                  "exp(−mean token NLL) of the gold answer, over every item of the form, per target then over "
                  "targets (as ORT's evaluation averages): the number to set beside the ORT paper's tables. "
                  "Model / reference; ↓ for the model.", "",
                  "| Name | " + " | ".join(_md_text(f) for f in forms) + " |", "|---|" + "---:|" * len(forms)]
        for e in entries:
            cells = [f"{fmt(e['forms'][f].get('prob_model'))} / {fmt(e['forms'][f].get('prob_reference'))}"
                     for f in forms]
            lines.append(f"| {_md_text(e['name'])} | " + " | ".join(cells) + " |")
    lines += ["", "## Columns", ""]
    for k, label, help_ in HEADLINE:
        lines.append(f"- **{label}** {ARROW[d[k]]}: {help_}.")
    lines.append(f"- **E form** {ARROW[_direction('forms.efficacy')]}: {EFFICACY_HELP}.")
    if any(e.get("served") for e in entries):
        lines.append(f"- **(served)** after a model: {SERVED_HELP}.")
    if audits:
        lines.append("- **Audit**: whether `ort-bench audit` re-scored a seeded sample of the entry's items with its "
                     "checkpoint and found the same outputs (K items, date); entries are not audited by default.")
    if entries:
        lines += ["", "![Forget efficacy per form](heatmap.svg)"]
    return "\n".join(lines) + "\n"


def csv_columns(forms: tuple[str, ...], prob: bool = False, audit: bool = False, v3: bool = False) -> list[str]:
    cols = ["rank", "name", "method", "model_name", "link", "date", "model_fingerprint", "reference",
            "reference_fingerprint", "worst_form_efficacy", "worst_form_efficacy_ci_low",
            "worst_form_efficacy_ci_high", "worst_form", "form_gap", "form_gap_ci_low", "form_gap_ci_high",
            "utility", "ort_score", "fluency", "n_probes", "n_known", *(V3_COLUMNS if v3 else ())]
    for f in forms:
        cols += [f"efficacy_{f}", f"efficacy_{f}_ci_low", f"efficacy_{f}_ci_high"]
        if prob:
            cols += [f"prob_model_{f}", f"prob_reference_{f}"]
    return cols + (["audit"] if audit else [])


def _flat(e: dict[str, Any], forms: tuple[str, ...]) -> dict[str, Any]:
    row = {k: v for k, v in e.items() if k != "forms"}
    for f in forms:
        c = e["forms"][f]
        row[f"efficacy_{f}"], row[f"efficacy_{f}_ci_low"], row[f"efficacy_{f}_ci_high"] = (
            c["efficacy"], c["ci_low"], c["ci_high"])
        row[f"prob_model_{f}"], row[f"prob_reference_{f}"] = c.get("prob_model"), c.get("prob_reference")
    if "audit" in e:
        row["audit"] = _audit_text(e["audit"])
    row["served"] = ",".join(e.get("served", []))
    return row


def _csv_text(v: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (=, +, -, @, or a tab/CR first) gets a leading
    apostrophe (OWASP's CSV-injection advice); numbers are written with repr, so they never start so."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


PORTABLE_DIGITS = 12  # significant digits a number keeps in leaderboard.csv / leaderboard.json


def portable(obj: Any) -> Any:
    """Floats rounded to `PORTABLE_DIGITS` significant digits, recursively: interval bounds are sums of
    bootstrap weights whose last bits depend on the CPU's BLAS kernel (an AMD EPYC and the machine that
    wrote the v2 files differ at the 16th digit), and a rebuilt leaderboard must be byte-identical on
    every machine."""
    if isinstance(obj, float):
        return float(f"{obj:.{PORTABLE_DIGITS}g}") if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [portable(v) for v in obj]
    return obj


def write_csv(entries: list[dict[str, Any]], forms: tuple[str, ...], version: str) -> str:
    buf = io.StringIO()
    v = get_version(version)
    cols = csv_columns(forms, prob=v.reports_prob, audit=v.shows_audit, v3=v.metrics == "v3")
    cols += ["served"] if any(e.get("served") for e in entries) else []  # only where an entry has a weaker fingerprint
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for e in entries:
        row = portable(_flat(e, forms))
        w.writerow(["" if row.get(c) is None else repr(row[c]) if isinstance(row[c], float) else _csv_text(row[c])
                    for c in cols])
    return buf.getvalue()


def write_json(entries: list[dict[str, Any]], forms: tuple[str, ...], version: str) -> str:
    from ort_bench.scoring.metrics import DIRECTIONS

    doc = {
        "benchmark_version": version,
        "ranking": "ort_score, higher first; ties by name",
        "forms": list(forms),
        "directions": {k: DIRECTIONS[k] for k in ("worst_form_efficacy", "form_gap", "utility", "ort_score",
                                                  "fluency", "forms.efficacy")},
        "entries": portable(entries),
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def heatmap_svg(entries: list[dict[str, Any]], forms: tuple[str, ...]) -> str:
    """Forget efficacy per entry and form, as an SVG (matplotlib, no date, fixed ids, text as text)."""
    try:
        import matplotlib
        from matplotlib.backends.backend_svg import FigureCanvasSVG
        from matplotlib.figure import Figure
    except ImportError:
        raise OrtBenchError("the leaderboard heatmap needs matplotlib: pip install matplotlib") from None
    import numpy as np

    names = [e["name"] for e in entries] or ["(no submissions)"]
    data = np.array([[np.nan if e["forms"][f]["efficacy"] is None else e["forms"][f]["efficacy"] for f in forms]
                     for e in entries] or [[np.nan] * len(forms)], dtype=float)
    rc = {"svg.hashsalt": "ort-bench-leaderboard", "svg.fonttype": "none", "svg.image_inline": True,
          "font.family": "DejaVu Sans", "font.size": 9, "path.simplify": True}
    with matplotlib.rc_context(rc):
        fig = Figure(figsize=(1.0 + 0.62 * len(forms), 1.4 + 0.34 * len(names)))
        FigureCanvasSVG(fig)
        ax = fig.add_subplot()
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
        # pcolormesh, not imshow: vector cells, no embedded raster image.
        im = ax.pcolormesh(np.ma.masked_invalid(data), cmap=cmap, vmin=0.0, vmax=1.0, edgecolors="white",
                           linewidth=0.5)
        ax.set_xticks([j + 0.5 for j in range(len(forms))], labels=list(forms), rotation=40, ha="right",
                      rotation_mode="anchor")
        ax.set_yticks([i + 0.5 for i in range(len(names))], labels=names)
        ax.invert_yaxis()  # rank 1 on top
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        ax.tick_params(length=0)
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                v = data[i, j]
                ax.text(j + 0.5, i + 0.5, "—" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if np.isnan(v) or v > 0.6 else "white")
        ax.set_title("Forget efficacy per form (↑)", fontsize=10)
        cbar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
        cbar.solids.set_rasterized(False)  # vector: no embedded PNG
        cbar.solids.set_edgecolor("face")  # no seams between the colour bands
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()


def _inline_svg(svg: str) -> str:
    """The <svg> element alone (no XML declaration or DOCTYPE), for inlining in the page."""
    start = svg.find("<svg")
    return svg[start:].strip() if start >= 0 else ""


def write_html(entries: list[dict[str, Any]], forms: tuple[str, ...], version: str, svg: str | None) -> str:
    from ort_bench.board.page import render_page

    d = _directions(forms)
    columns = [
        {"id": "rank", "label": "#", "type": "number", "best": "low", "cls": "", "title": "rank by ORT score"},
        {"id": "name", "label": "Name", "type": "text", "best": "low", "cls": "text", "title": "submission"},
        {"id": "method", "label": "Method", "type": "text", "best": "low", "cls": "text", "title": "method"},
        {"id": "model", "label": "Model", "type": "text", "best": "low", "cls": "text", "title": "model"},
    ]
    for k, label, help_ in HEADLINE:
        columns.append({"id": k, "label": label, "arrow": ARROW[d[k]], "type": "number", "best": d[k],
                        "cls": "", "title": help_})
    for f in forms:
        key = "efficacy." + f
        columns.append({"id": f"efficacy_{f}", "label": f"E {f}", "arrow": ARROW[d[key]], "type": "number",
                        "best": d[key], "cls": "", "title": f"{EFFICACY_HELP} (form {f})"})
    audits = get_version(version).shows_audit
    if audits:
        columns.append({"id": "audit", "label": "Audit", "type": "text", "best": "low", "cls": "text",
                        "title": "re-scored by ort-bench audit on a seeded sample (K items, date)"})
    for c in columns:
        c.setdefault("arrow", "")
        c["sorted"] = "descending" if c["id"] == "ort_score" else ""

    def num(v: float | None) -> str:
        return "" if v is None else repr(float(v))

    rows = []
    for e in entries:
        cells = [
            {"v": str(e["rank"]), "text": str(e["rank"]), "cls": ""},
            {"v": e["name"], "text": e["name"], "cls": "text", "href": e["link"]},
            {"v": e["method"] or "", "text": e["method"] or "", "cls": "text"},
            {"v": e["model_name"] or "", "text": _model_text(e), "cls": "text"},
        ]
        for k, _, _ in HEADLINE:
            text = fmt(e[k])
            if k == "worst_form_efficacy" and e["worst_form"]:
                text += f" ({e['worst_form']})"
            cells.append({"v": num(e[k]), "text": text, "cls": "headline" if k == "ort_score" else "",
                          "ci": _ci(e.get(f"{k}_ci_low"), e.get(f"{k}_ci_high"))})
        for f in forms:
            c = e["forms"][f]
            cells.append({"v": num(c["efficacy"]), "text": fmt(c["efficacy"]), "cls": "",
                          "ci": _ci(c["ci_low"], c["ci_high"])})
        if audits:
            cells.append({"v": _audit_text(e.get("audit")), "text": _audit_text(e.get("audit")), "cls": "text"})
        for c in cells:
            c.setdefault("href", None)
            c.setdefault("ci", "")
        rows.append({"name": e["name"], "cells": cells})
    legend = [{"label": label, "arrow": ARROW[d[k]], "help": help_} for k, label, help_ in HEADLINE]
    legend.append({"label": "E form", "arrow": ARROW[_direction("forms.efficacy")], "help": EFFICACY_HELP})
    if any(e.get("served") for e in entries):
        legend.append({"label": "(served)", "arrow": "", "help": SERVED_HELP})
    return render_page(version=version, columns=columns, rows=rows, legend=legend,
                       heatmap=_inline_svg(svg) if svg and entries else None)


def build_leaderboard(out: str | Path | None = None, root: str | Path | None = None,
                      version: str = BENCHMARK_VERSION, keep_going: bool = False) -> dict[str, Any]:
    """Verify and re-score every submission of benchmark `version` under `root` (default: the shipped
    `leaderboards/`), and write the tables and page into `out` (default: `<root>/<version>/`)."""
    from ort_bench.paths import leaderboards_dir

    get_version(version)
    root = Path(root) if root is not None else leaderboards_dir()
    out = Path(out) if out is not None else root / version
    forms = required_forms(version)
    skipped: list[str] = []
    entries = collect_entries(root, version, skipped if keep_going else None)
    if out.exists() and not out.is_dir():
        raise OrtBenchError(f"{out}: exists and is not a folder (--out names the folder the tables go to)")
    svg = heatmap_svg(entries, forms)
    files = {
        "leaderboard.md": write_markdown(entries, forms, version),
        "leaderboard.csv": write_csv(entries, forms, version),
        "leaderboard.json": write_json(entries, forms, version),
        "heatmap.svg": svg,
        "index.html": write_html(entries, forms, version, svg),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OrtBenchError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    for fname, text in files.items():
        tmp = out / f".{fname}.tmp"
        with tmp.open("w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        tmp.replace(out / fname)
    return {"out": str(out), "benchmark_version": version, "entries": len(entries),
            "names": [e["name"] for e in entries], "files": [str(out / f) for f in OUTPUT_FILES],
            **({"skipped": skipped} if skipped else {})}


def build_all(root: str | Path | None = None, keep_going: bool = False) -> list[dict[str, Any]]:
    """Every benchmark version's leaderboard that has a folder under `root` (closed versions still
    rebuild, from their stored records, with their own definitions)."""
    from ort_bench.paths import leaderboards_dir

    base = Path(root) if root is not None else leaderboards_dir()
    return [build_leaderboard(root=base, version=v, keep_going=keep_going) for v in VERSIONS if (base / v).is_dir()]
