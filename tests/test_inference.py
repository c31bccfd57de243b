"""Benchmark v3 inference (ort_bench.scoring.inference): statistics by hand, intervals, form tests, ranks."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ort_bench.scoring import inference as inf
from ort_bench.scoring.inference import (
    intervals,
    noise_gap_test,
    paired_form_test,
    rank_intervals,
    sign_flip_p,
    t_ppf,
    v3_statistics,
)

ROOT = Path(__file__).resolve().parents[1]


def _rows(cluster: str, adjs: list[float], form: str | None = None, ref: float = 1.0) -> list[dict]:
    return [{"form": form, "cluster": cluster, "adj": a, "adj_ref": ref} for a in adjs]


def _tiny() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    forget = pd.DataFrame(
        _rows("A", [1, 0], "x") + _rows("B", [1], "x")  # x: cluster means .5, 1 -> S = .75
        + _rows("A", [0], "y") + _rows("B", [0, 1, 1, 1], "y")  # y: cluster means 0, .75 -> S = .375
        + [{"form": "x", "cluster": "A", "adj": 0.0, "adj_ref": 0.0, "known": False}]  # not known: dropped
    )
    forget["known"] = forget["known"].fillna(True).astype(bool)
    neighbour = pd.DataFrame(_rows("A", [1, 0]) + _rows("B", [1]))  # .5, 1 -> .75 (pooled would be 2/3)
    general = pd.DataFrame(_rows("g1", [1, 1]) + _rows("g2", [0]) + _rows("g3", [1, 0, 1, 0]))  # 1, 0, .5 -> .5
    return forget, neighbour, general


def _synthetic(n_targets: int = 12, effs: tuple[float, ...] = (0.6, 0.6, 0.6, 0.6), seed: int = 0,
               items: int = 6) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows, nrows = [], []
    for t in range(n_targets):
        u = rng.normal(0, 0.5)
        for i, e in enumerate(effs):
            p = 1 / (1 + np.exp(-(math.log((1 - e) / e) + u)))
            rows += _rows(f"t{t}", list((rng.random(items) < p).astype(float)), f"f{i}")
        nrows += _rows(f"t{t}", list((rng.random(5) < 0.85).astype(float)))
    grows = sum((_rows(f"h{h}", list((rng.random(3) < 0.9).astype(float))) for h in range(40)), [])
    return pd.DataFrame(rows), pd.DataFrame(nrows), pd.DataFrame(grows)


FORMS4 = ("f0", "f1", "f2", "f3")

# ---------------------------------------------------------------------------------------------- statistics


def test_v3_statistics_by_hand():
    forget, neighbour, general = _tiny()
    s = v3_statistics(forget, neighbour, general, ["x", "y", "absent"])
    assert s["E:x"] == pytest.approx(0.25)  # 1 - .75
    assert s["E:y"] == pytest.approx(0.625)  # 1 - .375
    assert math.isnan(s["E:absent"])  # no items: undefined, left out of WFE and gap
    assert s["wfe"] == pytest.approx(0.25)
    assert s["gap"] == pytest.approx(0.375)
    assert s["neighbour_retention"] == pytest.approx(0.75)
    assert s["general_retention"] == pytest.approx(0.5)  # per fact, not pooled (4/7)
    assert s["utility"] == pytest.approx(0.625)
    assert s["ort"] == pytest.approx(2 * 0.25 * 0.625 / 0.875)


def test_v3_statistics_clips_and_handles_missing_splits():
    forget = pd.DataFrame(_rows("A", [1.0], "z", ref=0.5) + _rows("A", [-1 / 3], "w"))
    s = v3_statistics(forget, pd.DataFrame(columns=["cluster", "adj", "adj_ref"]),
                      pd.DataFrame(_rows("g", [1.0])), ["z", "w"])
    assert s["E:z"] == 0.0  # R = 1 / .5 = 2: efficacy clipped at 0
    assert s["E:w"] == 1.0  # below chance: max(S, 0) = 0
    assert math.isnan(s["neighbour_retention"])
    assert s["utility"] == 1.0  # the mean of the defined retentions: general alone
    assert s["ort"] == 0.0  # WFE 0


# ---------------------------------------------------------------------------------------------- intervals


def test_t_quantiles_without_scipy(monkeypatch):
    monkeypatch.setattr(inf, "_scipy_stats", None)
    inf._t_ppf_cached.cache_clear()
    try:
        assert t_ppf(0.975, 1) == pytest.approx(12.7062047, abs=1e-5)
        assert t_ppf(0.975, 3) == pytest.approx(3.1824463, abs=1e-6)
        assert t_ppf(0.975, 9) == pytest.approx(2.2621572, abs=1e-6)
        assert t_ppf(0.025, 19) == pytest.approx(-2.0930241, abs=1e-6)
    finally:
        inf._t_ppf_cached.cache_clear()


@pytest.mark.parametrize("method", inf.METHODS)
def test_intervals_deterministic_and_contain_point(method):
    data = _synthetic(effs=(0.8, 0.6, 0.5, 0.45))
    a = intervals(*data, FORMS4, method=method, n_boot=300, seed=3)
    b = intervals(*data, FORMS4, method=method, n_boot=300, seed=3)
    assert a == b
    points = v3_statistics(*data, FORMS4)
    assert set(a) == set(points)
    for k, (p, lo, hi) in a.items():
        assert p == pytest.approx(points[k])
        assert 0.0 <= lo <= hi <= 1.0
        if method in ("jackknife", "jackknife-band"):
            assert lo - 1e-12 <= p <= hi + 1e-12, k
    if method in ("percentile", "bca"):
        assert intervals(*data, FORMS4, method=method, n_boot=300, seed=4) != a


def test_jackknife_e_is_the_t_interval_of_cluster_means():
    forget, neighbour, general = _synthetic(n_targets=7, effs=(0.6,))
    means = 1 - forget.groupby("cluster")["adj"].mean().to_numpy()
    half = t_ppf(0.975, 6) * means.std(ddof=1) / math.sqrt(7)
    p, lo, hi = intervals(forget, neighbour, general, ["f0"])["E:f0"]
    assert p == pytest.approx(means.mean())
    assert (lo, hi) == pytest.approx((means.mean() - half, means.mean() + half))


def test_band_wfe_interval_reaches_above_the_plain_min():
    data = _synthetic(effs=(0.6,) * 4, seed=5)
    band = intervals(*data, FORMS4)["wfe"]
    jack = intervals(*data, FORMS4, method="jackknife")["wfe"]
    assert not math.isnan(band[0]) and band[2] > jack[2]  # the upper bound allows for the min's downward bias
    assert band[1] <= band[0] <= band[2]


def test_forms_on_few_clusters_and_many_small_clusters():
    forget, neighbour, general = _synthetic()
    extra = pd.DataFrame(_rows("t0", [0.0], "lone") + _rows("t0", [0.0], "pair") + _rows("t1", [1.0, 0.0], "pair"))
    forms = (*FORMS4, "lone", "pair")
    res = intervals(pd.concat([forget, extra]), neighbour, general, forms)
    assert res["E:lone"] == (1.0, 0.0, 1.0)  # one cluster: no between-cluster information
    assert res["E:pair"][0] == pytest.approx(0.75) and res["E:pair"][1] <= 0.75 <= res["E:pair"][2]
    assert res["wfe"][1] == 0.0  # "lone" could be the worst form
    # fewer than 3 targets: the caller clusters by fact; many small clusters just work
    by_fact = forget.assign(cluster=[f"fact{i // 3}" for i in range(len(forget))])
    res = intervals(by_fact, neighbour, general, FORMS4)
    assert all(lo <= p <= hi for p, lo, hi in res.values())


def test_intervals_empty_is_nan():
    forget, neighbour, general = _synthetic()
    res = intervals(forget.iloc[:0], neighbour.iloc[:0], general.iloc[:0], FORMS4)
    assert all(math.isnan(x) for v in res.values() for x in v)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown interval method"):
        intervals(*_synthetic(), FORMS4, method="magic")


# ---------------------------------------------------------------------------------------------- form tests


def test_noise_gap_test_equal_forms_large_p():
    forget, _, _ = _synthetic(n_targets=15, effs=(0.6,) * 4, seed=11)
    res = noise_gap_test(forget, FORMS4, n_perm=999, seed=0)
    assert res["p_value"] > 0.2
    assert res["gap_observed"] < res["gap_noise_q95"]
    assert res["n_clusters"] == 15 and res["forms"] == list(FORMS4)
    assert noise_gap_test(forget, FORMS4, n_perm=999, seed=0) == res  # deterministic


def test_noise_gap_test_form_dependent_small_p():
    forget, _, _ = _synthetic(n_targets=15, effs=(0.95, 0.9, 0.3, 0.2), seed=11)
    res = noise_gap_test(forget, FORMS4, n_perm=999, seed=0)
    assert res["p_value"] == pytest.approx(1 / 1000)  # no permutation reaches the observed gap
    assert res["gap_observed"] > res["gap_noise_q95"] > res["gap_noise_median"] > 0


def test_noise_gap_test_identical_forms_p_one():
    rows = sum((_rows(f"t{t}", [1, 0, 1], f) for t in range(4) for f in ("a", "b")), [])
    res = noise_gap_test(pd.DataFrame(rows), ["a", "b"], n_perm=99)
    assert res["gap_observed"] == 0.0 and res["p_value"] == 1.0


def test_paired_form_test_exact_sign_flip():
    rows = (_rows("c1", [1.0], "a") + _rows("c1", [0.0], "t")  # d = 1
            + _rows("c2", [1.0, 0.0], "a") + _rows("c2", [0.0], "t")  # d = .5
            + _rows("c3", [1.0, 0.0, 0.0, 0.0], "a") + _rows("c3", [0.0], "t")  # d = .25
            + _rows("c4", [1.0], "a"))  # no train-form items: left out
    res = paired_form_test(pd.DataFrame(rows), "a", "t")
    assert res["n_clusters"] == 3
    assert res["mean_difference"] == pytest.approx(1.75 / 3)
    # |sum| over the 8 sign vectors: 1.75 twice, 1.25, .75, .25 twice each -> P(|S| >= 1.75) = 2/8
    assert res["p_value"] == pytest.approx(0.25) and res["exact"]
    assert res["differences"] == pytest.approx({"c1": 1.0, "c2": 0.5, "c3": 0.25})


def test_sign_flip_matches_brute_force():
    d = np.random.default_rng(2).normal(0.3, 1.0, 9)
    brute = np.mean([abs(np.dot(s, d)) >= abs(d.sum()) - 1e-12 for s in itertools.product([-1, 1], repeat=9)])
    assert sign_flip_p(d) == (pytest.approx(brute), True)
    p, exact = sign_flip_p(np.full(50, 0.1))
    assert not exact and p < 1e-4


# ---------------------------------------------------------------------------------------------- ranks


def test_rank_intervals_orders_clear_winner_first():
    forget, neighbour, general = _synthetic(n_targets=10, effs=(0.6,) * 4, seed=1)
    good = forget.assign(adj=forget["adj"] * 0.1)  # forgets far more, same utility
    empty = forget.iloc[:0]
    res = rank_intervals({"base": (forget, neighbour, general), "good": (good, neighbour, general),
                          "none": (empty, neighbour, general)}, FORMS4, n_boot=300)
    assert res["good"] == (1, 1, 1)
    assert res["base"] == (2, 2, 2)
    assert res["none"] == (3, 3, 3)  # NaN key ranks last
    assert rank_intervals({"base": (forget, neighbour, general), "good": (good, neighbour, general)},
                          FORMS4, key="E:f0", n_boot=300)["good"][0] == 1


def test_rank_intervals_close_entries_overlap():
    a = _synthetic(n_targets=6, seed=1)
    b = (_synthetic(n_targets=6, seed=2)[0], a[1], a[2])
    res = rank_intervals({"a": a, "b": b}, FORMS4, n_boot=500)
    assert res["a"][1] == 1 and res["a"][2] == 2 and res["b"][1] == 1 and res["b"][2] == 2


# ---------------------------------------------------------------------------------------------- simulation


def test_coverage_sim_quick_runs():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "coverage_sim.py"), "--quick", "--reps", "3"],
                         capture_output=True, text=True, check=True, timeout=300, cwd=ROOT).stdout
    assert "| jackknife-band (default) | 4 |" in out
    assert "| percentile bootstrap (v2) | 10 |" in out
    rows = [line for line in out.splitlines() if line.startswith("| jackknife-band")]
    assert len(rows) == 4  # two scenarios x two target counts
    cov = [float(x) for x in rows[0].strip("|").split("|")[2:7]]
    assert all(0.0 <= c <= 1.0 for c in cov)
