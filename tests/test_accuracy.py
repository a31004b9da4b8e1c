"""Stratified accuracy and area estimators against the published worked example and by simulation."""

import numpy as np
import pytest

from kerinci_xr.accuracy import sample_size_for_overall_accuracy, stratified_estimates
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
    assert (
        round(res["overall_accuracy"]["estimate"], 2) == 0.95
        and round(_half(res["overall_accuracy"]), 2) == 0.02
    )
    assert res["sample_size"] == 640 and res["error_matrix_proportions"]["rows"] == "map"
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
    assert "fewer than 2 sample units" in res["warnings"][0] and "'b'" in res["warnings"][0]
    assert res["classes"][1]["users_accuracy"]["se"] is None and res["overall_accuracy"]["se"] is None
    with pytest.raises(InvalidInputError, match="user's accuracy"):
        sample_size_for_overall_accuracy([1, 2], [0.5, 1.5])
