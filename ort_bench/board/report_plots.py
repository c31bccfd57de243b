"""The run report's plots: matplotlib figures written as inline SVG (`ort_bench.board.report` places them).

Fixed hash salt, no date, math text off, fonts as text: the same numbers give the same bytes, and text from
a run (form names, labels) is escaped by matplotlib's SVG writer.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ort_bench.errors import OrtBenchError

WORST = "#c0392b"
MEASURED = "#1f5fa8"
SEEN = "#7f8fa6"
PLACEBO_BAND = "#d9dce1"
PLACEBO_POINT = "#6c7480"
NOISE_BAND = "#f6d7b8"


@dataclass
class AttackGroup:
    """One attack run of this model, scored at several checkpoints: step -> (folder, results)."""

    label: str
    points: dict[int, tuple[Path, dict[str, Any]]] = field(default_factory=dict)


def form_row(raw: dict[str, Any], form: str) -> dict[str, Any]:
    return next((r for r in raw.get("forms") or [] if isinstance(r, dict) and r.get("form") == form), {})



def _rc(salt: str) -> dict[str, Any]:
    return {"svg.hashsalt": f"ort-bench-report-{salt}", "svg.fonttype": "none", "svg.image_inline": True,
            "font.family": "DejaVu Sans", "font.size": 9, "path.simplify": True, "text.parse_math": False,
            "text.usetex": False}


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_svg import FigureCanvasSVG
        from matplotlib.figure import Figure
    except ImportError:
        raise OrtBenchError("the report's plots need matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(width, height))
    FigureCanvasSVG(fig)
    return fig


def _svg(fig: Any, prefix: str) -> str:
    """The figure as an inline <svg>: no XML header or date; its plain ids (figure_1, axes_1, ...) prefixed,
    so that several plots on one page share no id (referenced ids are hashes salted per plot)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.find("<svg"):].strip()
    return re.sub(r'id="([A-Za-z][\w.]*_\d+)"', rf'id="{prefix}-\1"', svg)


def num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _short_name(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def forest_svg(rows: list[dict[str, Any]], worst: str | None, wfe: float | None, title: str,
               placebo_rows: dict[str, dict[str, Any]] | None) -> str:
    """Per-form efficacy with its interval, worst form in red, the placebo's interval as a grey band."""
    import matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    n = max(len(rows), 1)
    with matplotlib.rc_context(_rc("forest")):
        fig = _figure(8.5, 1.5 + 0.36 * n)
        ax = fig.add_subplot()
        labels = []
        any_seen = False
        for y, r in enumerate(rows):
            form = str(r.get("form"))
            labels.append(form + ("  (worst)" if form == worst else ""))
            p = (placebo_rows or {}).get(form) or {}
            p_lo, p_hi, p_e = num(p.get("efficacy_ci_low")), num(p.get("efficacy_ci_high")), num(p.get("efficacy"))
            if p_lo is not None and p_hi is not None:
                ax.add_patch(Rectangle((p_lo, y - 0.36), max(p_hi - p_lo, 0.004), 0.72, facecolor=PLACEBO_BAND,
                                       edgecolor="none", zorder=1))
            if p_e is not None:
                ax.plot([p_e, p_e], [y - 0.36, y + 0.36], color=PLACEBO_POINT, linewidth=1.2, zorder=2)
            e, lo, hi = num(r.get("efficacy")), num(r.get("efficacy_ci_low")), num(r.get("efficacy_ci_high"))
            if e is None:
                reason = r.get("excluded") or "no efficacy"
                ax.text(0.01, y, _short_name(f"not measurable: {reason}", 80), va="center", ha="left", fontsize=7.5,
                        color="#6b7280", zorder=3, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})
                continue
            seen = r.get("in_headline") is False
            any_seen = any_seen or seen
            color = WORST if form == worst else SEEN if seen else MEASURED
            if lo is not None and hi is not None:
                ax.plot([lo, hi], [y, y], color=color, linewidth=2.0, solid_capstyle="butt", zorder=3)
                ax.plot([lo, hi], [y, y], linestyle="none", marker="|", markersize=8, color=color, zorder=3)
            ax.plot([e], [y], marker="o", markersize=7, color=color, markerfacecolor="white" if seen else color,
                    markeredgewidth=1.5, zorder=4)
            ax.text(1.04, y, f"{e:.2f}", va="center", ha="left", fontsize=8, color=color, zorder=4)
        if wfe is not None:
            ax.axvline(wfe, color=WORST, linestyle=":", linewidth=1.0, zorder=2)
        ax.set_yticks(range(len(rows)), labels=labels)
        for tick, r in zip(ax.get_yticklabels(), rows, strict=True):
            if str(r.get("form")) == worst:
                tick.set_color(WORST)
                tick.set_fontweight("bold")
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("forget efficacy E_f (↑: more forgotten)")
        ax.grid(axis="x", color="#e5e7eb", linewidth=0.6, zorder=0)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.set_title(_short_name(title, 110), fontsize=10, loc="left")
        handles = [Line2D([], [], color=MEASURED, marker="o", linewidth=2, label="efficacy, 95% interval"),
                   Line2D([], [], color=WORST, marker="o", linewidth=2, label="worst form (WFE, dotted)")]
        if any_seen:
            handles.append(Line2D([], [], color=SEEN, marker="o", markerfacecolor="white", linewidth=2,
                                  label="seen in training: not in WFE"))
        if placebo_rows:
            handles.append(Patch(facecolor=PLACEBO_BAND, edgecolor=PLACEBO_POINT, label="placebo, 95% interval"))
        height = 1.5 + 0.36 * n
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8)
        fig.tight_layout(rect=(0, 0.3 / height, 1, 1))
        return _svg(fig, "forest")


def gap_svg(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """Each run's form gap with its interval beside the noise-alone band (up to the 95th percentile)."""
    import matplotlib

    with matplotlib.rc_context(_rc("gap")):
        fig = _figure(8.5, 0.9 + 0.45 * len(rows))
        ax = fig.add_subplot()
        for y, (_, c) in enumerate(rows):
            noise = c.get("noise_gap") or {}
            q95, med = num(noise.get("gap_noise_q95")), num(noise.get("gap_noise_median"))
            if q95 is not None:
                ax.barh(y, q95, height=0.6, color=NOISE_BAND, zorder=1)
            if med is not None:
                ax.plot([med, med], [y - 0.3, y + 0.3], color="#b9770e", linewidth=1.5, zorder=2)
            g, lo, hi = num(c.get("form_gap")), num(c.get("form_gap_ci_low")), num(c.get("form_gap_ci_high"))
            if lo is not None and hi is not None:
                ax.plot([lo, hi], [y, y], color="#1d2330", linewidth=2.0, zorder=3)
            if g is not None:
                ax.plot([g], [y], marker="D", markersize=6, color="#1d2330", zorder=4)
                p = num(noise.get("p_value"))
                ax.text(1.04, y, f"{g:.2f}" + (f"  p={p:.3f}" if p is not None else ""), va="center", ha="left",
                        fontsize=8)
        ax.set_yticks(range(len(rows)), labels=[label for label, _ in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("form gap (↓); shaded: gaps noise alone gives (to the 95th percentile), tick: their median")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        fig.tight_layout()
        return _svg(fig, "gap")


def curves_svg(groups: list[AttackGroup], forms: list[str]) -> str:
    """Efficacy per form along each attack (one panel per attack), worst-form efficacy dashed black."""
    import matplotlib

    cols = min(len(groups), 3)
    rows = (len(groups) + cols - 1) // cols
    palette = matplotlib.colormaps["tab10" if len(forms) <= 10 else "tab20"]
    colour = {f: palette(i % palette.N) for i, f in enumerate(forms)}
    with matplotlib.rc_context(_rc("attacks")):
        fig = _figure(3.2 * cols + 1.8, 2.6 * rows + 0.4)
        axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
        for k, g in enumerate(groups):
            ax = axes[k // cols][k % cols]
            steps = list(g.points)
            for f in forms:
                ys = [num(form_row(raw, f).get("efficacy")) for _, raw in g.points.values()]
                pts = [(s, y) for s, y in zip(steps, ys, strict=True) if y is not None]
                if pts:
                    ax.plot([s for s, _ in pts], [y for _, y in pts], marker="o", markersize=4, linewidth=1.3,
                            color=colour[f], label=f)
            wfe = [(s, num(raw.get("worst_form_efficacy"))) for s, (_, raw) in g.points.items()]
            wfe = [(s, y) for s, y in wfe if y is not None]
            if wfe:
                ax.plot([s for s, _ in wfe], [y for _, y in wfe], color="black", linestyle="--", linewidth=2.0,
                        label="worst form")
            ax.set_title(_short_name(g.label, 48), fontsize=8.5)
            ax.set_xticks(steps)
            ax.set_xlabel("attack step")
            ax.set_ylim(-0.03, 1.03)
            ax.grid(color="#e5e7eb", linewidth=0.6)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        for k in range(len(groups), rows * cols):
            axes[k // cols][k % cols].set_visible(False)
        axes[0][0].set_ylabel("forget efficacy (↑)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center right", frameon=False, fontsize=8)
        fig.tight_layout(rect=(0, 0, 1 - 1.6 / (3.2 * cols + 1.8), 1))
        return _svg(fig, "attacks")
