"""Benchmark v3 inference: point statistics over clusters, intervals with measured coverage, form tests.

Inputs are per-item frames of KNOWN items (a boolean `known` column, if present, keeps only its true
rows) with columns `form`, `cluster`, `adj` (the model's item score above chance, (s - c) / (1 - c))
and `adj_ref` (the reference's). Forget and neighbour items cluster by target (the same targets: one
index for both), general (utility) items by fact.

Statistics (`v3_statistics`): S_f = mean over clusters of the cluster's mean adj over its items of
form f (adj_ref for the reference); R_f = max(S_f(M), 0) / S_f(M0); E_f = clip(1 - R_f, 0, 1);
WFE = min over the forms with a defined E_f; gap = max - min (two forms or more); neighbour and general
retention clip(max(S(M), 0) / S(M0), 0, 1); utility = mean of the defined retentions; ORT score =
harmonic mean of WFE and utility.

Intervals (`intervals`, default method "jackknife-band"; `scripts/coverage_sim.py` and
docs/coverage_sim.md measure every method):

- Smooth statistics (E_f, retentions, utility): delete-one-cluster jackknife with a t interval. Only
  the clusters a statistic depends on count (a form seen in m of the G targets: m clusters, m - 1
  degrees of freedom); statistics over both cluster sets (targets and facts) add the two jackknife
  variances (multi-sample jackknife) with Welch-Satterthwaite degrees of freedom. A statistic that
  depends on a single cluster of a set has no between-cluster information: its interval is the
  whole range [0, 1].
- Minima and maxima (WFE, ORT, gap) are not smooth: a jackknife or bootstrap of a min of noisy
  forms is biased down and undercovers when forms are close. WFE = min_f E_f is bounded instead:
  the lower bound is min_f (E_f - t se_f) (it fails only if the true worst form's bound fails);
  the upper bound is min_f (E_f + c_f se_f) over the forms within kappa standard errors of the
  minimum (generalised moment selection, kappa = sqrt(ln G)), with c_f simultaneous one-sided
  critical values over those forms (a Gaussian multiplier on the jackknife deviations, so their
  correlation across forms counts, sets one pointwise level for all; each form then takes the t
  quantile of that level at its own dof). ORT = min_f H(E_f, utility) (H, the harmonic mean,
  increases in each argument) gets the same construction; gap = max over ordered pairs of
  E_f - E_f', mirrored (upper bound pointwise, lower bound simultaneous over all pairs, clipped at
  0). All come from one set of jackknife replicates; every interval contains its point. The point
  WFE itself (a plain min) stays biased down (docs/coverage_sim.md gives the size).
- "jackknife" (t interval on every statistic), "jackknife-bc" (centred on the bias-corrected
  jackknife estimate), "percentile" (v2's percentile cluster bootstrap) and "bca" (bias-corrected and
  accelerated bootstrap, acceleration from the jackknife) are kept for comparison.

Form tests: `noise_gap_test` (is the form gap larger than item noise explains? permutation of form
labels within clusters) and `paired_form_test` (one form against the training form, per cluster,
exact sign-flip test). `rank_intervals` ranks leaderboard entries scored on the same targets.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from ort_bench.scoring.metrics import _efficacy, _quantiles

try:  # optional: exact t quantiles; a continued-fraction fallback below gives the same numbers
    from scipy import stats as _scipy_stats
except ImportError:  # pragma: no cover - depends on the environment
    _scipy_stats = None

METHODS = ("jackknife-band", "jackknife", "jackknife-bc", "percentile", "bca")
DEFAULT_METHOD = "jackknife-band"
N_MULTIPLIER = 4000  # Gaussian multiplier draws for the simultaneous critical values
_NORMAL = NormalDist()


# --------------------------------------------------------------------------------------------------
# Distributions (no scipy needed)
# --------------------------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=4096)
def _t_ppf_cached(p: float, df: float) -> float:
    if _scipy_stats is not None:
        return float(_scipy_stats.t.ppf(p, df))
    if df > 1e6:
        return _NORMAL.inv_cdf(p)
    lo, hi = -1.0, 1.0
    while _t_cdf(lo, df) > p:
        lo *= 2.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t with `df` (real, > 0) degrees of freedom."""
    if not df > 0:
        return float("inf")
    return _t_ppf_cached(round(float(p), 12), round(float(df), 3))


# --------------------------------------------------------------------------------------------------
# Cluster means: the sufficient summary of the frames
# --------------------------------------------------------------------------------------------------


def _known(df: pd.DataFrame, name: str, cols: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}")
    if "known" in df.columns:
        df = df[df["known"].astype(bool)]
    vals = df[["adj", "adj_ref"]].to_numpy(float)
    if not np.isfinite(vals).all():
        raise ValueError(f"{name}: adj and adj_ref must be finite")
    return df


def _sums(codes: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(codes, weights=values, minlength=size).astype(float)


@dataclass
class ClusterMeans:
    """Per-cluster means of adj (model) and adj_ref (reference): forget per form (F x G), neighbour
    (G, the same target index) and general (H facts); `*a` marks the clusters that have items."""

    forms: tuple[str, ...]
    targets: np.ndarray
    facts: np.ndarray
    fm: np.ndarray
    fr: np.ndarray
    fa: np.ndarray
    nm: np.ndarray
    nr: np.ndarray
    na: np.ndarray
    gm: np.ndarray
    gr: np.ndarray
    ga: np.ndarray

    @classmethod
    def from_frames(cls, forget: pd.DataFrame, neighbour: pd.DataFrame, general: pd.DataFrame,
                    forms: Sequence[str], targets: Sequence[Any] | None = None,
                    facts: Sequence[Any] | None = None) -> ClusterMeans:
        forms = tuple(forms)
        if len(set(forms)) != len(forms):
            raise ValueError("forms must be distinct")
        fk = _known(forget, "forget", ("form", "cluster", "adj", "adj_ref"))
        fk = fk[fk["form"].isin(forms)]
        nk = _known(neighbour, "neighbour", ("cluster", "adj", "adj_ref"))
        gk = _known(general, "general", ("cluster", "adj", "adj_ref"))
        if targets is None:
            targets = sorted(set(fk["cluster"]) | set(nk["cluster"]), key=str)
        if facts is None:
            facts = sorted(set(gk["cluster"]), key=str)
        t_index = {c: i for i, c in enumerate(targets)}
        h_index = {c: i for i, c in enumerate(facts)}
        G, H, F = len(t_index), len(h_index), len(forms)
        if not set(fk["cluster"]) | set(nk["cluster"]) <= t_index.keys() or not set(gk["cluster"]) <= h_index.keys():
            raise ValueError("a cluster is missing from the given targets/facts")
        f_index = {f: i for i, f in enumerate(forms)}

        def means(df: pd.DataFrame, codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            n = _sums(codes, np.ones(len(codes)), size)
            sm = _sums(codes, df["adj"].to_numpy(float), size)
            sr = _sums(codes, df["adj_ref"].to_numpy(float), size)
            has = n > 0
            safe = np.where(has, n, 1.0)
            return np.where(has, sm / safe, 0.0), np.where(has, sr / safe, 0.0), has

        fcodes = (np.array([f_index[f] for f in fk["form"]], dtype=np.int64) * G
                  + np.array([t_index[c] for c in fk["cluster"]], dtype=np.int64))
        fm, fr, fa = (x.reshape(F, G) for x in means(fk, fcodes, F * G))
        nm, nr, na = means(nk, np.array([t_index[c] for c in nk["cluster"]], dtype=np.int64), G)
        gm, gr, ga = means(gk, np.array([h_index[c] for c in gk["cluster"]], dtype=np.int64), H)
        return cls(forms, np.array(list(targets), dtype=object), np.array(list(facts), dtype=object),
                   fm, fr, fa, nm, nr, na, gm, gr, ga)

    @property
    def G(self) -> int:
        return len(self.targets)

    @property
    def H(self) -> int:
        return len(self.facts)

    def base(self, wt: np.ndarray, wg: np.ndarray) -> dict[str, np.ndarray]:
        """E per form (K x F) and the two retentions (K) under cluster weights wt (K x G), wg (K x H)."""
        def wmean(w: np.ndarray, vals: np.ndarray, mask: np.ndarray) -> np.ndarray:
            m = mask.astype(float)
            num, den = w @ (vals * m).T, w @ m.T
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)

        def ratio(sm: np.ndarray, sr: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(sr > 0, np.maximum(sm, 0.0) / np.where(sr > 0, sr, 1.0), np.nan)

        r_f = ratio(wmean(wt, self.fm, self.fa), wmean(wt, self.fr, self.fa))
        e = np.where(np.isnan(r_f), np.nan, _efficacy(np.nan_to_num(r_f)))
        ret = []
        for w, m, r, a in ((wt, self.nm, self.nr, self.na), (wg, self.gm, self.gr, self.ga)):
            rr = ratio(wmean(w, m[None], a[None]), wmean(w, r[None], a[None]))[:, 0]
            ret.append(np.where(np.isnan(rr), np.nan, np.clip(rr, 0.0, 1.0)))
        return {"E": e, "ret_n": ret[0], "ret_g": ret[1]}


def _harmonic(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where((a == 0) | (b == 0), 0.0, 2 * a * b / (a + b))
    return np.where(np.isnan(a) | np.isnan(b), np.nan, h)


@dataclass
class _Layout:
    """Which statistics are defined at the point estimate (fixed for every replicate)."""

    scored: np.ndarray  # indices of forms with a defined E_f
    avail: tuple[bool, bool]  # neighbour, general retention defined


def _layout(point: dict[str, np.ndarray]) -> _Layout:
    e = point["E"][0]
    return _Layout(np.flatnonzero(~np.isnan(e)),
                   (bool(~np.isnan(point["ret_n"][0])), bool(~np.isnan(point["ret_g"][0]))))


def _utility(base: dict[str, np.ndarray], lay: _Layout) -> np.ndarray:
    cols = [base[k] for k, ok in zip(("ret_n", "ret_g"), lay.avail, strict=True) if ok]
    if not cols:
        return np.full(base["E"].shape[0], np.nan)
    return np.mean(np.vstack(cols), axis=0)


def _derive(base: dict[str, np.ndarray], lay: _Layout, forms: Sequence[str]) -> dict[str, np.ndarray]:
    """Every reported statistic (K replicates each) from the base quantities."""
    e, k = base["E"], base["E"].shape[0]
    out = {f"E:{f}": e[:, i] for i, f in enumerate(forms)}
    wfe, gap = np.full(k, np.nan), np.full(k, np.nan)
    if lay.scored.size:
        sub = e[:, lay.scored]
        ok = ~np.isnan(sub).all(axis=1)
        with np.errstate(all="ignore"):
            wfe[ok] = np.nanmin(sub[ok], axis=1)
            if lay.scored.size >= 2:
                gap[ok] = np.nanmax(sub[ok], axis=1) - wfe[ok]
    util = _utility(base, lay)
    out.update({"wfe": wfe, "gap": gap, "neighbour_retention": base["ret_n"], "general_retention": base["ret_g"],
                "utility": util, "ort": _harmonic(wfe, util)})
    return out


def _keys(forms: Sequence[str]) -> list[str]:
    return [f"E:{f}" for f in forms] + ["wfe", "gap", "neighbour_retention", "general_retention", "utility", "ort"]


def _ones(k: int, n: int) -> np.ndarray:
    return np.ones((k, n))


def _point(cm: ClusterMeans) -> dict[str, np.ndarray]:
    return cm.base(_ones(1, cm.G), _ones(1, cm.H))


def v3_statistics(forget: pd.DataFrame, neighbour: pd.DataFrame, general: pd.DataFrame,
                  forms: Sequence[str]) -> dict[str, float]:
    """The point statistics of the module docstring, from known items: `E:<form>` for each form, `wfe`,
    `gap`, `neighbour_retention`, `general_retention`, `utility`, `ort` (NaN where undefined)."""
    cm = ClusterMeans.from_frames(forget, neighbour, general, forms)
    return _statistics_of(cm)


def _statistics_of(cm: ClusterMeans) -> dict[str, float]:
    base = _point(cm)
    stats = _derive(base, _layout(base), cm.forms)
    return {k: float(stats[k][0]) for k in _keys(cm.forms)}


# --------------------------------------------------------------------------------------------------
# Jackknife
# --------------------------------------------------------------------------------------------------


@dataclass
class _Jack:
    """Delete-one-cluster jackknife of one statistic: se, degrees of freedom, bias estimate and the
    scaled deviations (one per jackknife row, 0 where the cluster does not count; var = sum dev**2)."""

    point: float
    se: float
    dof: float
    bias: float
    dev: np.ndarray


class _Jackknife:
    """Rows: 0 = all clusters, 1..G = delete one target, G+1..G+H = delete one fact."""

    def __init__(self, cm: ClusterMeans):
        self.cm = cm
        G, H = cm.G, cm.H
        wt, wg = _ones(1 + G + H, G), _ones(1 + G + H, H)
        wt[1 + np.arange(G), np.arange(G)] = 0.0
        wg[1 + G + np.arange(H), np.arange(H)] = 0.0
        self.base = cm.base(wt, wg)
        self.lay = _layout({k: v[:1] for k, v in self.base.items()})
        self.stats = _derive(self.base, self.lay, cm.forms)
        self.t_rows = slice(1, 1 + G)
        self.h_rows = slice(1 + G, 1 + G + H)
        none_t, none_h = np.zeros(G, bool), np.zeros(H, bool)
        util_t = cm.na if self.lay.avail[0] else none_t
        util_h = cm.ga if self.lay.avail[1] else none_h
        self.util_masks = (util_t, util_h)
        scored_t = cm.fa[self.lay.scored].any(axis=0) if self.lay.scored.size else none_t
        self.masks: dict[str, tuple[np.ndarray, np.ndarray]] = {
            **{f"E:{f}": (cm.fa[i], none_h) for i, f in enumerate(cm.forms)},
            "wfe": (scored_t, none_h), "gap": (scored_t, none_h),
            "neighbour_retention": (cm.na, none_h), "general_retention": (none_t, cm.ga),
            "utility": self.util_masks, "ort": (scored_t | util_t, util_h),
        }

    def jack(self, q: np.ndarray, masks: tuple[np.ndarray, np.ndarray]) -> _Jack:
        point = float(q[0])
        dev = np.zeros(q.shape[0] - 1)
        if math.isnan(point):
            return _Jack(point, float("nan"), float("nan"), 0.0, dev)
        parts, bias = [], 0.0
        for rows, mask in ((self.t_rows, masks[0]), (self.h_rows, masks[1])):
            m_struct = int(mask.sum())
            if m_struct == 0:
                continue
            if m_struct == 1:
                return _Jack(point, float("inf"), 1.0, 0.0, dev)
            reps = q[rows]
            if np.isnan(reps[mask]).any():  # deleting one cluster leaves a part undefined: it rests on one cluster
                return _Jack(point, float("inf"), 1.0, 0.0, dev)
            m = m_struct
            mean = float(reps[mask].mean())
            scaled = np.zeros(len(reps))
            scaled[mask] = math.sqrt((m - 1) / m) * (reps[mask] - mean)
            dev[rows.start - 1:rows.stop - 1] = scaled
            parts.append((float((scaled ** 2).sum()), m))
            bias += (m - 1) * (mean - point)
        if not parts:
            return _Jack(point, 0.0, float("inf"), 0.0, dev)
        var = sum(v for v, _ in parts)
        if var > 0:
            dof = var ** 2 / sum(v ** 2 / (m - 1) for v, m in parts)
        else:
            dof = float(min(m - 1 for _, m in parts))
        return _Jack(point, math.sqrt(var), dof, bias, dev)

    def of_key(self, key: str) -> _Jack:
        return self.jack(self.stats[key], self.masks[key])


def _clip01(x: float) -> float:
    return float(min(max(x, 0.0), 1.0))


def _t_interval(j: _Jack, alpha: float, centre: float | None = None) -> tuple[float, float]:
    if math.isnan(j.point):
        return (float("nan"), float("nan"))
    c = j.point if centre is None else centre
    if math.isinf(j.se):
        return (0.0, 1.0)
    half = t_ppf(1 - alpha / 2, j.dof) * j.se
    return (_clip01(c - half), _clip01(c + half))


class _Multiplier:
    """Gaussian multiplier draws (one per jackknife row), shared by WFE, ORT and gap."""

    def __init__(self, n_rows: int, seed: int):
        self.n_rows, self.seed = n_rows, seed
        self._g: np.ndarray | None = None

    def levels(self, jacks: list[_Jack], alpha: float) -> list[float]:
        """Critical values c_j such that P(for all j: (stat_j - true_j) / se_j <= c_j) is about 1 - alpha/2
        (one-sided, simultaneous). The Gaussian multiplier Z_j = (g . dev_j) / se_j has the jackknife
        correlation across statistics; q = Phi(the (1 - alpha/2) quantile of max_j Z_j) is the pointwise
        level that makes the band simultaneous, and c_j = the t quantile of q at statistic j's own dof
        (small-sample widening per statistic). With one statistic c = the t quantile of 1 - alpha/2."""
        fin = [k for k, j in enumerate(jacks) if j.se > 0 and math.isfinite(j.se)]
        q = 1 - alpha / 2
        if len(fin) > 1:
            if self._g is None:
                rng = np.random.default_rng([int(self.seed), zlib.crc32(b"band")])
                self._g = rng.standard_normal((N_MULTIPLIER, self.n_rows))
            dmat = np.vstack([jacks[k].dev / jacks[k].se for k in fin]).T  # rows x J
            rows = np.flatnonzero(np.any(dmat != 0, axis=1))
            z_max = (self._g[:, rows] @ dmat[rows]).max(axis=1)
            q = max(q, _NORMAL.cdf(float(np.quantile(z_max, 1 - alpha / 2))))
        return [t_ppf(q, j.dof) if math.isfinite(j.se) else math.inf for j in jacks]


def _lower(j: _Jack, c: float) -> float:
    return j.point - c * j.se if math.isfinite(j.se) else -math.inf


def _upper(j: _Jack, c: float) -> float:
    return j.point + c * j.se if math.isfinite(j.se) else math.inf


def _band(jk: _Jackknife, alpha: float, seed: int, kappa: float | None) -> dict[str, tuple[float, float]]:
    """WFE, ORT and gap intervals from per-form jackknife bounds (module docstring)."""
    cm, lay = jk.cm, jk.lay
    mult = _Multiplier(cm.G + cm.H, seed)
    nan2 = (float("nan"), float("nan"))
    out = {"wfe": nan2, "ort": nan2, "gap": nan2}
    if not lay.scored.size:
        return out
    if kappa is None:
        kappa = math.sqrt(math.log(max(int(cm.fa.any(axis=0).sum()), 3)))
    e, no_facts = jk.base["E"], np.zeros(cm.H, bool)
    scored = [int(i) for i in lay.scored]
    fj = {i: jk.jack(e[:, i], (cm.fa[i], no_facts)) for i in scored}
    dj = {(a, b): jk.jack(e[:, a] - e[:, b], (cm.fa[a] | cm.fa[b], no_facts))
          for a in scored for b in scored if a != b}
    worst = min(scored, key=lambda i: (fj[i].point, i))
    # forms near the minimum (generalised moment selection): only these can be the true worst form
    sel = [i for i in scored if i == worst or math.isinf(kappa)
           or fj[i].point - fj[worst].point <= kappa * dj[(i, worst)].se]

    def min_bounds(js: dict[int, _Jack]) -> tuple[float, float]:
        low = min(_lower(js[i], t_ppf(1 - alpha / 2, js[i].dof)) for i in scored)  # pointwise suffices
        cs = mult.levels([js[i] for i in sel], alpha)
        high = min(_upper(js[i], c) for i, c in zip(sel, cs, strict=True))
        return _clip01(low), _clip01(high)

    out["wfe"] = min_bounds(fj)
    util = _utility(jk.base, lay)
    if not math.isnan(util[0]):
        pj = {i: jk.jack(_harmonic(e[:, i], util), (cm.fa[i] | jk.util_masks[0], jk.util_masks[1]))
              for i in scored}
        out["ort"] = min_bounds(pj)  # H(., U) increases in E: the same forms are near the minimum
    if len(scored) >= 2:
        pairs = list(dj)  # every ordered pair: selecting the pairs near the maximum undercovered (coverage_sim)
        high = max(_upper(dj[p], t_ppf(1 - alpha / 2, dj[p].dof)) for p in pairs)  # pointwise suffices
        cs = mult.levels([dj[p] for p in pairs], alpha)
        low = max(_lower(dj[p], c) for p, c in zip(pairs, cs, strict=True))
        out["gap"] = (_clip01(low), _clip01(high))
    return out


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------


def _boot_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    if n == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def _boot_stats(cm: ClusterMeans, lay: _Layout, n_boot: int, seed: int,
                wt: np.ndarray | None = None, wg: np.ndarray | None = None) -> dict[str, np.ndarray]:
    if wt is None:
        wt = _boot_weights(cm.G, n_boot, np.random.default_rng([int(seed), zlib.crc32(b"targets")]))
    if wg is None:
        wg = _boot_weights(cm.H, n_boot, np.random.default_rng([int(seed), zlib.crc32(b"facts")]))
    return _derive(cm.base(wt, wg), lay, cm.forms)


def _bca(point: float, reps: np.ndarray, j: _Jack, alpha: float) -> tuple[float, float]:
    reps = reps[~np.isnan(reps)]
    if math.isnan(point) or reps.size == 0:
        return (float("nan"), float("nan"))
    b = reps.size
    prop = (np.sum(reps < point) + 0.5 * np.sum(reps == point)) / b
    prop = min(max(prop, 1 / (2 * b)), 1 - 1 / (2 * b))
    z0 = _NORMAL.inv_cdf(prop)
    d = j.dev[j.dev != 0]
    den = float((d ** 2).sum())
    # acceleration from the jackknife deviations (empirical influence = -(m-1) x deviation)
    acc = float(-(d ** 3).sum() / (6 * den ** 1.5)) if den > 0 else 0.0
    qs = []
    for z in (_NORMAL.inv_cdf(alpha / 2), _NORMAL.inv_cdf(1 - alpha / 2)):
        w = z0 + (z0 + z) / (1 - acc * (z0 + z))
        qs.append(min(max(_NORMAL.cdf(w), 0.0), 1.0))
    lo, hi = np.quantile(reps, qs)
    return (float(lo), float(hi))


# --------------------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------------------

SMOOTH = ("neighbour_retention", "general_retention", "utility")


def intervals_of(cm: ClusterMeans, *, alpha: float = 0.05, n_boot: int = 1000, seed: int = 0,
                 methods: Sequence[str] = (DEFAULT_METHOD,), kappa: float | None = None,
                 ) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Intervals of every statistic by each of `methods` (one jackknife and one bootstrap shared)."""
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        raise ValueError(f"unknown interval method(s) {bad}; choose from {METHODS}")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    keys = _keys(cm.forms)
    jk = _Jackknife(cm)
    points = {k: float(jk.stats[k][0]) for k in keys}
    jacks = {k: jk.of_key(k) for k in keys}
    boot = _boot_stats(cm, jk.lay, n_boot, seed) if {"percentile", "bca"} & set(methods) else None
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for method in methods:
        res = {}
        if method == "jackknife-band":
            band = _band(jk, alpha, seed, kappa)
        for k in keys:
            p = points[k]
            if method in ("jackknife", "jackknife-band"):
                lo, hi = _t_interval(jacks[k], alpha)
                if method == "jackknife-band" and k in band:
                    lo, hi = band[k]
            elif method == "jackknife-bc":
                lo, hi = _t_interval(jacks[k], alpha, centre=p - jacks[k].bias)
            elif method == "percentile":
                lo, hi = _quantiles(boot[k], alpha)
            else:
                lo, hi = _bca(p, boot[k], jacks[k], alpha)
            if math.isnan(p):
                lo = hi = float("nan")
            res[k] = (p, float(lo), float(hi))
        out[method] = res
    return out


def intervals(forget: pd.DataFrame, neighbour: pd.DataFrame, general: pd.DataFrame, forms: Sequence[str], *,
              alpha: float = 0.05, n_boot: int = 1000, seed: int = 0,
              method: str = DEFAULT_METHOD) -> dict[str, tuple[float, float, float]]:
    """(point, low, high) of every key of `v3_statistics` at level 1 - alpha, deterministic for a seed.
    Targets (forget and neighbour) and facts (general) are resampled or deleted independently; the
    joint statistics use the same replicates as the forms. `n_boot` serves the bootstrap methods."""
    cm = ClusterMeans.from_frames(forget, neighbour, general, forms)
    return intervals_of(cm, alpha=alpha, n_boot=n_boot, seed=seed, methods=(method,))[method]


# --------------------------------------------------------------------------------------------------
# Form tests
# --------------------------------------------------------------------------------------------------


def _gap_of(e: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.nanmax(e, axis=-1) - np.nanmin(e, axis=-1)


def gap_permutation(cluster: np.ndarray, form: np.ndarray, adj: np.ndarray, adj_ref: np.ndarray, n_forms: int,
                    n_perm: int, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """Observed gap and its permutation null (form labels shuffled among the items of each cluster).
    `cluster` and `form` are integer codes; every form code below n_forms counts (forms without a defined
    E in the observed data must be left out by the caller)."""
    order = np.argsort(cluster, kind="stable")
    cl, fo, a, r = cluster[order], form[order], adj[order], adj_ref[order]
    n_items = len(cl)
    G = int(cl.max()) + 1 if n_items else 0
    cells = n_forms * G
    counts = np.bincount(fo * G + cl, minlength=cells).reshape(n_forms, G).astype(float)
    has = counts > 0
    safe = np.where(has, counts, 1.0)
    n_cl = has.sum(axis=1)

    def efficacy(sum_m: np.ndarray, sum_r: np.ndarray) -> np.ndarray:
        s_m = np.where(has, sum_m / safe, 0.0).sum(axis=-1) / n_cl
        s_r = np.where(has, sum_r / safe, 0.0).sum(axis=-1) / n_cl
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(s_r > 0, np.maximum(s_m, 0.0) / np.where(s_r > 0, s_r, 1.0), np.nan)
        return np.where(np.isnan(ratio), np.nan, _efficacy(np.nan_to_num(ratio)))

    obs_idx = fo * G + cl
    e_obs = efficacy(np.bincount(obs_idx, a, cells).reshape(n_forms, G), np.bincount(obs_idx, r, cells).reshape(
        n_forms, G))
    gap_obs = float(_gap_of(e_obs))
    null = np.empty(n_perm)
    chunk = max(1, 2_000_000 // max(n_items, 1))
    for start in range(0, n_perm, chunk):
        p = min(chunk, n_perm - start)
        keys = cl[None, :] + rng.random((p, n_items))  # items stay inside their (sorted, contiguous) cluster
        idx = np.argsort(keys, axis=1)
        labels = fo[idx]  # item i takes the form label of another item of its cluster
        flat = (np.arange(p)[:, None] * cells + labels * G + cl[None, :]).ravel()
        sm = np.bincount(flat, np.tile(a, p), p * cells).reshape(p, n_forms, G)
        sr = np.bincount(flat, np.tile(r, p), p * cells).reshape(p, n_forms, G)
        null[start:start + p] = _gap_of(efficacy(sm, sr))
    return gap_obs, null


def noise_gap_test(forget: pd.DataFrame, forms: Sequence[str], *, n_perm: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Is the form gap larger than item noise explains? Null: every form has one efficacy within each
    cluster, so form labels are exchangeable among a cluster's known items; they are permuted within
    each cluster (each cluster keeps its per-form item counts; an item's adj and adj_ref move together)
    and the gap is recomputed over the same forms (those with a defined E_f). adj is already on the
    common above-chance scale, so items of forms with different chance levels have the same expected
    adj under the null (their spread differs, so the test is approximate there). One-sided p-value
    (1 + #{gap_null >= gap_observed}) / (n_perm + 1). The null is conditional on the targets: a
    target-specific form effect that averages out over targets still counts as form dependence."""
    fk = _known(forget, "forget", ("form", "cluster", "adj", "adj_ref"))
    fk = fk[fk["form"].isin(list(forms))]
    base = ClusterMeans.from_frames(fk, fk.iloc[:0], fk.iloc[:0], forms)
    e = _point(base)["E"][0]
    defined = [f for f, v in zip(base.forms, e, strict=True) if not math.isnan(v)]
    nan = float("nan")
    res: dict[str, Any] = {"gap_observed": nan, "gap_noise_median": nan, "gap_noise_q95": nan, "p_value": nan,
                           "n_perm": int(n_perm), "forms": defined, "n_items": 0, "n_clusters": 0}
    fk = fk[fk["form"].isin(defined)]
    if len(defined) < 2:
        res["note"] = "fewer than two forms with a defined efficacy: no gap"
        return res
    f_index = {f: i for i, f in enumerate(defined)}
    cl_codes, _ = pd.factorize(fk["cluster"], sort=True)
    rng = np.random.default_rng([int(seed), zlib.crc32(b"noise_gap")])
    gap_obs, null = gap_permutation(cl_codes.astype(np.int64), np.array([f_index[f] for f in fk["form"]], np.int64),
                                    fk["adj"].to_numpy(float), fk["adj_ref"].to_numpy(float), len(defined),
                                    int(n_perm), rng)
    null_ok = null[~np.isnan(null)]
    tol = 1e-12 * max(1.0, abs(gap_obs))
    res.update({
        "gap_observed": gap_obs,
        "gap_noise_median": float(np.median(null_ok)) if null_ok.size else nan,
        "gap_noise_q95": float(np.quantile(null_ok, 0.95)) if null_ok.size else nan,
        "p_value": float((1 + np.sum(null_ok >= gap_obs - tol)) / (null_ok.size + 1)),
        "n_items": int(len(fk)), "n_clusters": int(fk["cluster"].nunique()),
    })
    return res


EXACT_SIGN_FLIP_MAX = 40  # clusters: exact enumeration (meet in the middle) up to here, Monte Carlo beyond


def _half_sums(d: np.ndarray) -> np.ndarray:
    sums = np.zeros(1)
    for x in d:
        sums = np.concatenate([sums + x, sums - x])
    return sums


def sign_flip_p(d: Sequence[float], *, n_mc: int = 200_000, seed: int = 0) -> tuple[float, bool]:
    """Two-sided sign-flip p-value of the mean of `d`: P(|sum s_i d_i| >= |sum d_i|) over the 2^n sign
    vectors (the identity included), exact up to EXACT_SIGN_FLIP_MAX values; (p, exact)."""
    d = np.asarray(d, float)
    n = d.size
    if n == 0:
        return float("nan"), True
    t_obs = abs(float(d.sum()))
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    if n <= EXACT_SIGN_FLIP_MAX:
        a = _half_sums(d[: n // 2])
        b = np.sort(_half_sums(d[n // 2:]))
        # count pairs with a + b >= t - tol or a + b <= -(t - tol)
        thr = t_obs - tol
        if thr <= 0:
            return 1.0, True
        hi = b.size - np.searchsorted(b, thr - a, side="left")  # a + b >= thr
        lo = np.searchsorted(b, -thr - a, side="right")  # a + b <= -thr (disjoint from the above)
        return float(np.sum(hi + lo)) / (a.size * b.size), True
    rng = np.random.default_rng([int(seed), zlib.crc32(b"sign_flip")])
    s = rng.choice([-1.0, 1.0], size=(n_mc, n))
    stat = np.abs(s @ d)
    return float((1 + np.sum(stat >= t_obs - tol)) / (n_mc + 1)), False


def _per_cluster_retained(fk: pd.DataFrame, form: str) -> pd.Series:
    g = fk[fk["form"] == form].groupby("cluster")[["adj", "adj_ref"]].mean()
    g = g[g["adj_ref"] > 0]
    return np.maximum(g["adj"], 0.0) / g["adj_ref"]


def paired_form_test(forget: pd.DataFrame, form: str, train_form: str) -> dict[str, Any]:
    """`form` against `train_form` cluster by cluster: retained score max(S_{f,t}(M), 0) / S_{f,t}(M0) of
    each cluster t that has known items of both forms (and a positive reference score), difference
    form - train_form, its mean, and the exact two-sided sign-flip p-value (a positive mean: `form`
    retains more, i.e. forgets less, than the training form)."""
    fk = _known(forget, "forget", ("form", "cluster", "adj", "adj_ref"))
    a, b = _per_cluster_retained(fk, form), _per_cluster_retained(fk, train_form)
    both = a.index.intersection(b.index)
    d = (a.loc[both] - b.loc[both]).sort_index()
    p, exact = sign_flip_p(d.to_numpy(float))
    return {"form": form, "train_form": train_form, "n_clusters": int(len(d)),
            "mean_difference": float(d.mean()) if len(d) else float("nan"), "p_value": p, "exact": exact,
            "differences": {str(k): float(v) for k, v in d.items()}}


# --------------------------------------------------------------------------------------------------
# Ranks
# --------------------------------------------------------------------------------------------------


def _ranks(vals: np.ndarray) -> np.ndarray:
    """Competition ranks along the last axis (1 = highest; ties share the best rank; NaN last)."""
    v = np.where(np.isnan(vals), -np.inf, vals)
    better = (v[..., None, :] > v[..., :, None]).sum(axis=-1)
    n_valid = (~np.isnan(vals)).sum(axis=-1, keepdims=True)
    return np.where(np.isnan(vals), n_valid + 1, better + 1)


def rank_intervals(entries: dict[str, tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]], forms: Sequence[str], *,
                   key: str = "ort", alpha: float = 0.05, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, tuple[int, int, int]]:
    """(rank, low, high) of each entry by `key` (higher is better, rank 1 best, NaN last): the targets
    (and the general facts) are resampled jointly across entries, the same resample for every entry,
    each entry's `key` recomputed and ranked per replicate; percentile interval of each rank."""
    names = list(entries)
    if not names:
        return {}
    fk = [_known(f, "forget", ("form", "cluster", "adj", "adj_ref")) for f, _, _ in entries.values()]
    nk = [_known(n, "neighbour", ("cluster", "adj", "adj_ref")) for _, n, _ in entries.values()]
    gk = [_known(g, "general", ("cluster", "adj", "adj_ref")) for _, _, g in entries.values()]
    targets = sorted(set().union(*(set(f["cluster"]) | set(n["cluster"]) for f, n in zip(fk, nk, strict=True))),
                     key=str)
    facts = sorted(set().union(*(set(g["cluster"]) for g in gk)), key=str)
    cms = [ClusterMeans.from_frames(f, n, g, forms, targets=targets, facts=facts)
           for f, n, g in zip(fk, nk, gk, strict=True)]
    if key not in _keys(tuple(forms)):
        raise ValueError(f"unknown key {key!r}")
    wt = _boot_weights(len(targets), n_boot, np.random.default_rng([int(seed), zlib.crc32(b"rank-targets")]))
    wg = _boot_weights(len(facts), n_boot, np.random.default_rng([int(seed), zlib.crc32(b"rank-facts")]))
    point = np.empty(len(cms))
    reps = np.empty((n_boot, len(cms)))
    for j, cm in enumerate(cms):
        base = _point(cm)
        lay = _layout(base)
        point[j] = _derive(base, lay, cm.forms)[key][0]
        reps[:, j] = _boot_stats(cm, lay, n_boot, seed, wt=wt, wg=wg)[key]
    r_point, r_reps = _ranks(point), _ranks(reps)
    out = {}
    for j, name in enumerate(names):
        lo = np.quantile(r_reps[:, j], alpha / 2, method="lower")
        hi = np.quantile(r_reps[:, j], 1 - alpha / 2, method="higher")
        out[name] = (int(r_point[j]), int(lo), int(hi))
    return out
