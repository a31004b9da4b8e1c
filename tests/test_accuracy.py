"""Stratified accuracy and area estimators against the published worked example and by simulation."""

import dask.array as da
import distributed
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from kerinci_xr.accuracy import (
    allocate,
    draw_stratified,
    sample_size_for_overall_accuracy,
    stratified_estimates,
)
from kerinci_xr.errors import InvalidInputError

# Olofsson et al. (2014), Remote Sensing of Environment 148: 42-57, section 5: a change map of
# 30 m pixels (0.09 ha) with four classes, its stratified sample counts (rows: map, columns:
# reference) and mapped areas in pixels.
COUNTS = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
MAPPED_PX = [200_000, 150_000, 3_200_000, 6_450_000]
NAMES = ["deforestation", "forest gain", "stable forest", "stable non-forest"]


def _half(e):
    return e["ci95"][1] - e["estimate"]


def test_stratified_estimates__olofsson_2014_worked_example():
    res = stratified_estimates(COUNTS, [a * 0.09 for a in MAPPED_PX], names=NAMES)
    by = {c["name"]: c for c in res["classes"]}
    # error-adjusted areas in hectares with their 95 % intervals, to the published digits
    published = {
        "deforestation": (21_158, 6_158),
        "forest gain": (11_686, 3_756),
        "stable forest": (285_770, 15_510),
        "stable non-forest": (581_386, 16_282),
    }
    for name, (area, half) in published.items():
        assert round(by[name]["area"]["estimate"]) == area
        assert round(_half(by[name]["area"])) == half
    # user's accuracies +- 95 % CI, producer's accuracies, overall accuracy
    for name, ua, ua_half in [
        ("deforestation", 0.88, 0.07),
        ("forest gain", 0.73, 0.10),
        ("stable forest", 0.93, 0.04),
        ("stable non-forest", 0.96, 0.02),
    ]:
        assert round(by[name]["users_accuracy"]["estimate"], 2) == ua
        assert round(_half(by[name]["users_accuracy"]), 2) == ua_half
    for name, pa in [
        ("deforestation", 0.75),
        ("forest gain", 0.85),
        ("stable forest", 0.93),
        ("stable non-forest", 0.96),
    ]:
        assert round(by[name]["producers_accuracy"]["estimate"], 2) == pa
    assert round(_half(by["deforestation"]["producers_accuracy"]), 2) == 0.21
    assert round(res["overall_accuracy"]["estimate"], 2) == 0.95
    assert round(_half(res["overall_accuracy"]), 2) == 0.02
    assert res["sample_size"] == 640
    assert res["error_matrix_proportions"]["rows"] == "map"
    # the section's sample size: target SE 0.01 of overall accuracy, expected UA 0.7, 0.6, 0.9, 0.95
    assert sample_size_for_overall_accuracy(MAPPED_PX, [0.7, 0.6, 0.9, 0.95], target_se=0.01) == 641


def test_stratified_estimates__unbiased_with_95_percent_coverage_by_simulation():
    """A population whose truth is known: 300 stratified samples, area estimates vs the true areas."""
    rng = np.random.default_rng(0)
    k, size = 3, 200_000
    truth = rng.choice(k, size=size, p=[0.6, 0.3, 0.1])
    confuse = np.array([[0.9, 0.07, 0.03], [0.15, 0.8, 0.05], [0.1, 0.2, 0.7]])
    u = rng.random(size)
    mapped = (u[:, None] > np.cumsum(confuse, axis=1)[truth]).sum(axis=1)  # a map with these errors
    strata = [np.flatnonzero(mapped == i) for i in range(k)]
    true_area = np.bincount(truth, minlength=k)
    estimates, covered = [], np.zeros(k)
    for _ in range(300):
        counts = np.zeros((k, k))
        for i, members in enumerate(strata):
            pick = rng.choice(members, size=100, replace=False)
            counts[i] = np.bincount(truth[pick], minlength=k)
        res = stratified_estimates(counts, [len(m) for m in strata])
        est = [c["area"] for c in res["classes"]]
        estimates.append([e["estimate"] for e in est])
        covered += [e["ci95"][0] <= t <= e["ci95"][1] for e, t in zip(est, true_area, strict=True)]
    mean = np.mean(estimates, axis=0)
    np.testing.assert_allclose(mean, true_area, rtol=0.02)
    assert ((covered / 300 >= 0.92) & (covered / 300 <= 0.98)).all(), covered / 300


def test_stratified_estimates__bad_input_and_tiny_strata():
    with pytest.raises(InvalidInputError, match="square count matrix"):
        stratified_estimates([[1, 2, 3]], [10])
    with pytest.raises(InvalidInputError, match="non-negative"):
        stratified_estimates([[1, 0], [0, -1]], [5, 5])
    res = stratified_estimates([[5, 1], [0, 1]], [90, 10], names=["a", "b"])
    assert "fewer than 2 sample units" in res["warnings"][0]
    assert "'b'" in res["warnings"][0]
    assert res["classes"][1]["users_accuracy"]["se"] is None
    assert "10 % of the mapped area" in res["warnings"][0]
    # stratum a alone: W = 0.9, UA = 5/6, V(O) = W^2 UA (1 - UA) / (n - 1)
    assert res["overall_accuracy"]["se"] == pytest.approx(np.sqrt(0.81 * (5 / 6) * (1 / 6) / 5))
    with pytest.raises(InvalidInputError, match="user's accuracy"):
        sample_size_for_overall_accuracy([1, 2], [0.5, 1.5])


# ---- the design ------------------------------------------------------------------------------
def test_allocate__proportional_with_minimum_equal_and_neyman():
    size = np.array([600_000, 300_000, 90_000, 9_000, 30, 0])
    a = allocate(size, 600, min_per_class=50)
    assert a.sum() == 600
    assert a[5] == 0
    assert a[4] == 30
    assert a[3] == 50
    assert a[2] == 50
    rest = 600 - 130  # the two largest share what the minimums leave, in proportion 2:1
    assert abs(a[0] - rest * 2 / 3) <= 1
    assert abs(a[1] - rest / 3) <= 1
    e = allocate(size, 100, method="equal", min_per_class=0)
    assert e.sum() == 100
    assert e[5] == 0
    assert e[4] == 20
    assert set(e[:4]) == {20}
    ua = [0.95, 0.8, 0.6, 0.9, 0.9, 0.9]
    n = allocate(size, 500, method="neyman", expected_users_accuracy=ua, min_per_class=0)
    ws = size * np.sqrt(np.array(ua) * (1 - np.array(ua)))
    assert n.sum() == 500
    assert np.all(np.abs(n - 500 * ws / ws.sum()) <= 1)
    assert allocate([10, 10], 600, min_per_class=50).tolist() == [10, 10]  # never more than a stratum has


def _classes(chunks, seed=5, shape=(120, 90), k=4):
    """A map of ``k`` classes in blobs, as a chunked DataArray."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    arr = ((np.sin(yy / 9.0) + np.cos(xx / 7.0) + rng.random(shape) * 0.3) * 1.3 + 2.6).astype(int).clip(1, k)
    arr[:5, :5] = 0  # nodata, never a stratum
    return xr.DataArray(da.from_array(arr.astype(np.uint8), chunks=chunks), dims=("y", "x"))


@pytest.mark.xdist_group("cluster")
def test_draw_stratified__exact_counts_in_their_strata_and_chunk_independent(cluster):
    units = [0, 30, 20, 25, 10]
    a = draw_stratified(_classes(40), units, seed=3)
    b = draw_stratified(_classes((33, 50)), units, seed=3)
    pd.testing.assert_frame_equal(a, b)
    values = _classes(40).values
    assert np.bincount(a["stratum"], minlength=5).tolist() == units
    assert (values[a["row"], a["col"]] == a["stratum"]).all()
    assert not a.duplicated(["row", "col"]).any()
    with distributed.Client(cluster):
        c = draw_stratified(_classes((25, 70)), units, seed=3)
    pd.testing.assert_frame_equal(a, c)
    assert not draw_stratified(_classes(40), units, seed=4).equals(a)


def test_draw_stratified__uniform_within_a_stratum_chi_square():
    from scipy.stats import chisquare

    classes = _classes(32, shape=(40, 40), k=2)
    members = np.flatnonzero(classes.values.ravel() == 2)
    hits = np.zeros(classes.size, dtype=np.int64)
    for seed in range(400):
        pts = draw_stratified(classes, [0, 0, 10], seed=seed)
        hits[pts["row"].to_numpy() * 40 + pts["col"].to_numpy()] += 1
    assert hits[members].sum() == 4000
    assert hits.sum() == 4000
    assert chisquare(hits[members]).pvalue > 0.01


@pytest.mark.slow  # a statistical or quality check; the module is covered end to end without it
def test_design_and_estimation__unbiased_with_95_percent_coverage_on_a_generated_scene(small_scene):
    """Design + simulated reference + estimation, 300 times, on a Kerinci-like scene's labels."""
    from kerinci_xr.io import open_raster
    from kerinci_xr.legend import read_legend
    from kerinci_xr.preprocess import remap_labels

    legend = read_legend(small_scene.legend)
    truth = remap_labels(open_raster(small_scene.labels).isel(band=0, drop=True), legend).values
    rng = np.random.default_rng(1)
    mapped = np.roll(truth, 2, axis=1)  # boundary errors: the map is two pixels off
    swap = (rng.random(truth.shape) < 0.1) & (truth > 0)  # and 10 % of pixels in a random class
    present = np.unique(truth[truth > 0])
    mapped = np.where(swap, rng.choice(present, size=truth.shape), mapped)
    mapped = np.where(truth > 0, mapped, 0).astype(np.uint8)
    classes = xr.DataArray(da.from_array(mapped, chunks=160), dims=("y", "x"))
    k = legend.n_classes
    size = np.bincount(mapped.ravel(), minlength=k + 1)
    units = np.r_[0, allocate(size[1:], 600, min_per_class=30)]
    true_area = np.bincount(truth[mapped > 0], minlength=k + 1)[1:]
    big = true_area >= 0.05 * true_area.sum()
    est, covered = [], np.zeros(k)
    reps = 300
    for seed in range(reps):
        pts = draw_stratified(classes, units, seed=seed)
        counts = np.zeros((k, k))
        np.add.at(counts, (pts["stratum"] - 1, truth[pts["row"], pts["col"]] - 1), 1)
        res = stratified_estimates(counts, size[1:])
        areas = [c["area"] for c in res["classes"]]
        est.append([a["estimate"] for a in areas])
        covered += [
            a["ci95"] is not None and a["ci95"][0] <= t <= a["ci95"][1]
            for a, t in zip(areas, true_area, strict=True)
        ]
    mean = np.mean(est, axis=0)
    assert big.sum() >= 3
    np.testing.assert_allclose(mean[big], true_area[big], rtol=0.02)
    rate = covered[big] / reps
    assert ((rate >= 0.92) & (rate <= 0.98)).all(), rate


def test_stratified_estimates__a_class_mapped_nowhere_keeps_the_others_defined():
    """A reference class absent from the map (area 0, no units) leaves every other SE defined."""
    counts = np.array([*COUNTS, [0, 0, 0, 0]], dtype=float)
    counts = np.c_[counts, [0, 0, 2, 0, 0]]  # two stable-forest units are, in truth, a fifth class
    res = stratified_estimates(counts, [*(a * 0.09 for a in MAPPED_PX), 0.0], names=[*NAMES, "other"])
    for c in res["classes"][:4]:
        assert c["producers_accuracy"]["se"] is not None
        assert c["area"]["se"] is not None
    assert res["classes"][4]["users_accuracy"]["estimate"] is None
    assert res["classes"][4]["area"]["estimate"] > 0
    assert "warnings" not in res


def test_draw_stratified__allocation_from_the_same_single_pass():
    from .conftest import raise_if_dask_computes

    classes = _classes(40)
    with raise_if_dask_computes(max_computes=1):  # counts and candidates in one pass over the map
        pts = draw_stratified(
            classes, lambda size: np.r_[0, allocate(size[1:5], 60, min_per_class=8)], max_units=60
        )
    size = np.bincount(classes.values.ravel(), minlength=5)
    units = np.r_[0, allocate(size[1:], 60, min_per_class=8)]
    assert pts.attrs["stratum_sizes"][:5].tolist() == size.tolist()
    assert pts.attrs["units"][:5].tolist() == units.tolist()
    pd.testing.assert_frame_equal(pts, draw_stratified(classes, units))


# ---- strata that are not the map's classes (Stehman 2014) ---------------------------------------
#: Stehman (2014), Table 2: 40 units, 10 in each of strata 1-4 (N_h = 40,000, 30,000, 20,000,
#: 10,000), each with its map class and reference class (A-D = 1-4).
ST_STRATA = [1] * 10 + [2] * 10 + [3] * 10 + [4] * 10
ST_MAP = "AAAAAAABBBABBBBBBBBBBBCCCCCCBBDDDDDDDDDD"
ST_REF = "AAAAACBABCABBBBBAABBCCCCCDDBBADDDDDDDCCB"
ST_SIZES = {1: 40_000, 2: 30_000, 3: 20_000, 4: 10_000}


def _stehman_example():
    from kerinci_xr.accuracy import strata_estimates

    ids = ["ABCD".index(c) + 1 for c in ST_MAP], ["ABCD".index(c) + 1 for c in ST_REF]
    return strata_estimates(ST_STRATA, ids[0], ids[1], ST_SIZES, n_classes=4, names=list("ABCD"))


def test_strata_estimates__stehman_2014_numerical_example_to_its_printed_digits():
    est = _stehman_example()
    a, b, c = est["classes"][0], est["classes"][1], est["classes"][2]
    printed = [  # (value, the paper's figure, its digits), pp. 4932-4936
        (a["area_proportion"]["estimate"], 0.35, 2),
        (c["area_proportion"]["estimate"], 0.20, 2),
        (est["overall_accuracy"]["estimate"], 0.63, 2),
        (b["users_accuracy"]["estimate"], 0.574, 3),
        (b["producers_accuracy"]["estimate"], 0.794, 3),
        (est["error_matrix_proportions"]["values"][1][2], 0.08, 2),
        (a["area_proportion"]["se"], 0.082, 3),
        (c["area_proportion"]["se"], 0.064, 3),
        (est["overall_accuracy"]["se"], 0.085, 3),
        (b["users_accuracy"]["se"], 0.125, 3),
    ]
    for value, paper, digits in printed:
        assert round(value, digits) == paper
    # SE of PA(B): the paper prints 0.114, from s2_x of stratum 4 taken as 0 where its Table 3 has
    # 0.1 (one of stratum 4's ten units is reference B). Recomputed here by eq. 28 both ways.
    ref_b = np.array([c == "B" for c in ST_REF], float)
    agree_b = np.array([m == r == "B" for m, r in zip(ST_MAP, ST_REF, strict=True)], float)
    strata = np.array(ST_STRATA)
    n_h = np.array([ST_SIZES[h] for h in (1, 2, 3, 4)], float)
    x_hat = sum(n_h[h - 1] * ref_b[strata == h].mean() for h in (1, 2, 3, 4))
    r = sum(n_h[h - 1] * agree_b[strata == h].mean() for h in (1, 2, 3, 4)) / x_hat

    def se(zero_x_var_in_4: bool) -> float:
        v = 0.0
        for h in (1, 2, 3, 4):
            y, x = agree_b[strata == h], ref_b[strata == h]
            s2x = 0.0 if (zero_x_var_in_4 and h == 4) else x.var(ddof=1)
            cov = np.cov(y, x, ddof=1)[0, 1]
            v += n_h[h - 1] ** 2 * (1 - 10 / n_h[h - 1]) * (y.var(ddof=1) + r**2 * s2x - 2 * r * cov) / 10
        return float(np.sqrt(v) / x_hat)

    assert round(se(True), 3) == 0.114  # the printed figure, with the paper's slip
    assert b["producers_accuracy"]["se"] == pytest.approx(se(False), rel=1e-12)
    assert round(b["producers_accuracy"]["se"], 3) == 0.117


def test_strata_estimates__strata_equal_to_map_classes_give_olofsson():
    from kerinci_xr.accuracy import strata_estimates, stratified_estimates

    rng = np.random.default_rng(4)
    k, sizes = 4, np.array([50_000.0, 30_000.0, 15_000.0, 5_000.0])
    mapped = np.repeat(np.arange(1, k + 1), [40, 30, 30, 25])
    ref = np.where(rng.random(mapped.size) < 0.8, mapped, rng.integers(1, k + 1, mapped.size))
    counts = np.zeros((k, k))
    np.add.at(counts, (mapped - 1, ref - 1), 1)
    old = stratified_estimates(counts, sizes)
    # no finite population correction in Olofsson's formulas: stratum pixels taken as unbounded
    new = strata_estimates(
        mapped,
        mapped,
        ref,
        dict(enumerate(sizes, 1)),
        n_classes=k,
        stratum_pixels=dict.fromkeys(range(1, 5), 1e18),
    )
    assert new["overall_accuracy"]["estimate"] == pytest.approx(old["overall_accuracy"]["estimate"])
    assert new["overall_accuracy"]["se"] == pytest.approx(old["overall_accuracy"]["se"])
    for a, b in zip(new["classes"], old["classes"], strict=True):
        for key in ("users_accuracy", "producers_accuracy", "area_proportion"):
            assert a[key]["estimate"] == pytest.approx(b[key]["estimate"]), key
            assert a[key]["se"] == pytest.approx(b[key]["se"], rel=1e-9), key


def test_strata_estimates__unbiased_with_95pc_coverage_when_strata_come_from_another_map(small_scene):
    """Simulation on the generated scene: strata from one map, a second map assessed. Every
    population value is known (the scene's labels are the truth everywhere), so the bias of the
    estimates and the coverage of their 95 % intervals are measured over repeated samples."""
    import rasterio

    from kerinci_xr.legend import read_legend
    from kerinci_xr.testing import strata_simulation, with_errors

    legend = read_legend(small_scene.legend)
    with rasterio.open(small_scene.labels) as src:
        codes = src.read(1)
    lut = {c: i + 1 for i, c in enumerate(legend.values)}
    truth = np.vectorize(lambda c: lut.get(int(c), 0))(codes).ravel()
    truth = truth[truth > 0]
    rng = np.random.default_rng(0)
    map1, map2 = (
        with_errors(truth, 0.3, rng),
        with_errors(truth, 0.15, rng),
    )  # strata from map1; map2 assessed
    reps = 300
    sim = strata_simulation(truth, map1, map2, n_classes=legend.n_classes, units=200, reps=reps)
    assert len(sim) >= 7  # OA and at least two classes' area, UA and PA
    for key, r in sim.items():
        mc_se = r["estimates"].std(ddof=1) / np.sqrt(reps)
        assert abs(r["estimates"].mean() - r["true"]) < 4 * mc_se + 0.005, key  # unbiased
    # intervals rest on a normal approximation of ratio estimators: at 50 units per stratum the
    # user's accuracies of small classes were covered 81-88 % of the time (units of the class in
    # other classes' strata are rare and carry large weights); at 200, 93-97 % (measured)
    coverage = {key: r["covered"].mean() for key, r in sim.items()}
    assert 0.925 <= np.mean(list(coverage.values())) <= 0.975, coverage
    assert min(coverage.values()) >= 0.88, coverage
