"""Good-practice sample design, accuracy and area estimation (Olofsson et al. 2014).

A map's pixel counts are biased by its errors; a probability sample labelled with reference data
gives unbiased estimates of accuracy and of each class's area, with standard errors. Here the
strata are the map's classes (stratified random sampling, Olofsson et al. 2014, Remote Sensing of
Environment 148: 42-57, eqs. 2-10), and every estimate is reported as
``{"estimate": x, "se": s, "ci95": [x - 1.96 s, x + 1.96 s]}``. The sample itself is drawn by
:func:`allocate` (how many units per stratum) and :func:`draw_stratified` (which pixels: exactly
that many per stratum, uniformly at random, in one streaming pass, the same for any chunking).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import ArrayLike

from ._hashing import hash_u64
from .cluster import compute
from .errors import InvalidInputError

__all__ = [
    "MIN_PER_CLASS",
    "Z95",
    "Allocation",
    "allocate",
    "draw_stratified",
    "estimate",
    "sample_size_for_overall_accuracy",
    "strata_estimates",
    "stratified_estimates",
    "stratified_ratio",
]

#: Sample units every mapped class gets at least (Olofsson et al. 2014 suggest 50 to 100).
MIN_PER_CLASS = 50

Allocation = Literal["proportional", "equal", "neyman"]

#: The standard normal quantile of a two-sided 95 % interval.
Z95 = 1.96


def estimate(value: float, se: float) -> dict[str, Any]:
    """``{"estimate", "se", "ci95"}``, the form every estimate takes (``None`` where undefined)."""
    if not np.isfinite(value):
        return {"estimate": None, "se": None, "ci95": None}
    se_ok = bool(np.isfinite(se))
    return {
        "estimate": float(value),
        "se": float(se) if se_ok else None,
        "ci95": [float(value - Z95 * se), float(value + Z95 * se)] if se_ok else None,
    }


def stratified_estimates(
    counts: Any, mapped_area: Sequence[float], *, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy and area estimates from a stratified random sample whose strata are the map classes.

    Parameters
    ----------
    counts
        ``(k, k)`` sample counts ``n_ij``: rows the map class (stratum) ``i``, columns the reference
        class ``j``, in the same class order.
    mapped_area
        The map's area of each class (pixels, hectares: any unit; the areas come out in it).
    names
        Class names for the result.

    Returns
    -------
    dict
        ``overall_accuracy``; per class in ``classes``: ``name``, ``map_area``, ``sample_size``,
        ``users_accuracy``, ``producers_accuracy``, ``area_proportion`` and ``area`` (each an
        :func:`estimate`); ``error_matrix_proportions`` (rows map, columns reference), and
        ``sample_size`` (the number of independent sample units).

    A stratum with fewer than 2 sample units has no variance estimate: its contribution is left
    out of the standard errors, its user's accuracy gets ``se`` ``None``, and the result lists it
    (with its share of the mapped area) under ``warnings``.
    """
    n = np.asarray(counts, dtype=np.float64)
    area = np.asarray(mapped_area, dtype=np.float64)
    k = n.shape[0]
    if n.ndim != 2 or n.shape != (k, k) or area.shape != (k,):
        raise InvalidInputError(
            f"stratified estimates: expected a square count matrix and one mapped area per class, "
            f"found counts {n.shape} and {area.shape[0] if area.ndim else 0} areas."
        )
    if (n < 0).any() or (area < 0).any() or area.sum() <= 0:
        raise InvalidInputError("stratified estimates: counts and mapped areas must be non-negative.")
    names = list(names) if names is not None else [str(i + 1) for i in range(k)]
    total = area.sum()
    w = area / total  # W_i, the stratum weights
    n_i = n.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(n_i[:, None] > 0, n / n_i[:, None], 0.0)  # n_ij / n_i.
        dof = np.where(n_i > 1, n_i - 1, np.nan)  # n_i. - 1: no variance from fewer than 2 units
        p = w[:, None] * q  # eq. 4: estimated area proportions
        ua = np.diag(q)  # eq. 2 (as n_ii / n_i.)
        col = p.sum(axis=0)  # p_.j, eq. 9
        pa = np.diag(p) / col  # eq. 3
        oa = np.trace(p)  # eq. 1
        var_ua = ua * (1 - ua) / dof  # eq. 6
        var_oa = np.nansum(w**2 * ua * (1 - ua) / dof)  # eq. 5
        cell_var = q * (1 - q) / dof[:, None]  # the (n_ij/n_i.)(1 - n_ij/n_i.)/(n_i. - 1) terms
        var_p = np.nansum(w[:, None] ** 2 * cell_var, axis=0)  # eq. 10
        n_hat = np.where(n_i[:, None] > 0, area[:, None] * q, 0.0)  # estimated totals per cell (area units)
        n_j = n_hat.sum(axis=0)
        var_pa = np.empty(k)
        for j in range(k):  # eq. 7
            others = [i for i in range(k) if i != j]
            term1 = area[j] ** 2 * (1 - pa[j]) ** 2 * ua[j] * (1 - ua[j]) / dof[j]
            term2 = pa[j] ** 2 * np.nansum([area[i] ** 2 * cell_var[i, j] for i in others])
            var_pa[j] = (np.nan_to_num(term1) + term2) / n_j[j] ** 2 if n_i[j] else np.nan
    few = [names[i] for i in range(k) if n_i[i] < 2 and area[i] > 0]
    classes = [
        {
            "name": names[i],
            "map_area": float(area[i]),
            "sample_size": int(n_i[i]),
            "users_accuracy": estimate(ua[i] if n_i[i] else np.nan, np.sqrt(var_ua[i])),
            "producers_accuracy": estimate(pa[i], np.sqrt(var_pa[i])),
            "area_proportion": estimate(col[i], np.sqrt(var_p[i])),
            "area": estimate(col[i] * total, np.sqrt(var_p[i]) * total),
        }
        for i in range(k)
    ]
    out: dict[str, Any] = {
        "estimator": "stratified (strata = map classes), Olofsson et al. 2014",
        "overall_accuracy": estimate(oa, np.sqrt(var_oa)),
        "classes": classes,
        "error_matrix_proportions": {"rows": "map", "columns": "reference", "values": p.tolist()},
        "sample_size": int(n.sum()),
    }
    if few:
        share = float(w[[names.index(f) for f in few]].sum())
        out["warnings"] = [
            f"strata {few} have fewer than 2 sample units: their variance cannot be estimated, so it is "
            f"left out of the standard errors (they hold {100 * share:.3g} % of the mapped area) and their "
            "user's accuracy has none. Fix: sample at least 2 units (better 50) per class."
        ]
    return out


def sample_size_for_overall_accuracy(
    mapped_area: Sequence[float], expected_users_accuracy: Sequence[float], *, target_se: float = 0.01
) -> int:
    """Total sample size for a target standard error of overall accuracy (Olofsson 2014, eq. 13).

    ``n = (sum_i W_i S_i / S(O))^2`` with ``S_i = sqrt(U_i (1 - U_i))`` from the expected user's
    accuracies ``U_i`` (Cochran 1977), rounded up.
    """
    area = np.asarray(mapped_area, dtype=np.float64)
    u = np.asarray(expected_users_accuracy, dtype=np.float64)
    if area.shape != u.shape or not ((u >= 0) & (u <= 1)).all() or target_se <= 0:
        raise InvalidInputError(
            "sample size: expected one user's accuracy in [0, 1] per class and a positive target SE, "
            f"found {u.size} accuracies for {area.size} classes and SE {target_se}."
        )
    w = area / area.sum()
    return int(np.ceil((np.sum(w * np.sqrt(u * (1 - u))) / target_se) ** 2))


def _largest_remainder(share: np.ndarray, total: int) -> np.ndarray:
    """Integers proportional to ``share`` that add up to ``total`` exactly."""
    if share.sum() <= 0 or total <= 0:
        return np.zeros(share.size, dtype=np.int64)
    exact = share / share.sum() * total
    out = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - out), kind="stable")[: total - out.sum()]:
        out[i] += 1
    return out


def allocate(
    stratum_sizes: Sequence[int],
    n: int,
    *,
    min_per_class: int = MIN_PER_CLASS,
    method: Allocation = "proportional",
    expected_users_accuracy: Sequence[float] | None = None,
) -> np.ndarray:
    """Sample units per stratum: exact integers, at least ``min_per_class`` where a stratum has
    that many pixels, never more than a stratum has.

    ``"proportional"`` follows the mapped area, ``"equal"`` gives every stratum the same,
    ``"neyman"`` follows ``W_h S_h`` with ``S_h = sqrt(U_h (1 - U_h))`` from the expected user's
    accuracies (Olofsson et al. 2014, section 4.3: the minimum then protects rare classes). Empty
    strata get none. Strata raised to the minimum are taken out and the rest of ``n`` shared among
    the others, so the total is ``n`` unless the minimums alone exceed it.
    """
    size = np.asarray(stratum_sizes, dtype=np.int64)
    if n < 1 or min_per_class < 0:
        raise InvalidInputError(
            f"sample size: expected n >= 1 and min_per_class >= 0, found {n}, {min_per_class}."
        )
    if method == "proportional":
        weight = size.astype(np.float64)
    elif method == "equal":
        weight = (size > 0).astype(np.float64)
    elif method == "neyman":
        if expected_users_accuracy is None or len(expected_users_accuracy) != size.size:
            raise InvalidInputError("neyman allocation: expected one expected user's accuracy per class.")
        u = np.clip(np.asarray(expected_users_accuracy, dtype=np.float64), 0, 1)
        weight = size * np.sqrt(u * (1 - u))
        weight = np.where((size > 0) & (weight == 0), 1e-12 * size, weight)  # U = 1: a token share
    else:
        raise InvalidInputError(f"allocation: expected proportional, equal or neyman, found {method!r}.")
    floor = np.minimum(min_per_class, size)
    fixed = np.zeros(size.size, dtype=bool)
    while True:  # strata whose share falls under the minimum get the minimum, the rest shares the remainder
        rest = max(n - int(floor[fixed].sum()), 0)
        share = _largest_remainder(np.where(fixed, 0.0, weight), rest)
        low = ~fixed & (share < floor)
        if not low.any():
            break
        fixed |= low
    out = np.where(fixed, floor, share)
    return np.minimum(out, size)


def _stratum_key(seed: int, stratum: int) -> int:
    return (seed * 1_000_003 + stratum * 7919 + 0x51A7) * 0x2545F4914F6CDD1D


def _block_candidates(block: np.ndarray, r0: int, c0: int, caps: np.ndarray, seed: int):
    """Pixels per stratum of one chunk, and the ``caps[k]`` lowest-priority pixels of each stratum."""
    sizes = np.bincount(block.ravel(), minlength=caps.size)[: caps.size]
    out = []
    for k in np.flatnonzero((sizes > 0) & (caps > 0)):
        rr, cc = np.nonzero(block == k)
        gy, gx = rr + r0, cc + c0
        keys = hash_u64(gy, gx, _stratum_key(seed, int(k)))
        keep = np.lexsort((gx, gy, keys))[: caps[k]]
        out.append((int(k), keys[keep], gy[keep], gx[keep]))
    return sizes, out


def draw_stratified(
    classes: xr.DataArray,
    per_stratum: ArrayLike | Callable[[np.ndarray], ArrayLike],
    *,
    seed: int = 0,
    max_units: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """``per_stratum[k]`` pixels of class ``k``, uniformly at random without replacement.

    Every pixel gets a random priority that is a pure function of (seed, stratum, row, col) and
    each stratum keeps its lowest: one streaming pass (each chunk returns its pixel counts and
    only its own best candidates), the same pixels whatever the chunking or the scheduler.
    ``per_stratum`` may be a function of the strata's pixel counts (index = class id), such as
    an :func:`allocate`; then ``max_units`` bounds the units of any stratum, and the same pass
    serves to count and to draw. Returns ``row``, ``col`` and ``stratum``, ordered by stratum then
    draw order; ``attrs`` hold ``stratum_sizes`` and ``units``.
    """
    data = classes.data if isinstance(classes.data, da.Array) else da.from_array(np.asarray(classes.data))
    n_strata = int(np.iinfo(data.dtype).max) + 1 if np.issubdtype(data.dtype, np.integer) else 256
    if callable(per_stratum):
        if max_units is None:
            raise InvalidInputError("draw_stratified: an allocation function needs max_units.")
        caps = np.full(min(n_strata, 256), max_units, dtype=np.int64)
    else:
        caps = np.asarray(per_stratum, dtype=np.int64)
    ybounds, xbounds = np.cumsum((0, *data.chunks[0])), np.cumsum((0, *data.chunks[1]))
    blocks = data.to_delayed()
    tasks = [
        dask.delayed(_block_candidates, pure=True)(blocks[i, j], int(ybounds[i]), int(xbounds[j]), caps, seed)
        for i in range(blocks.shape[0])
        for j in range(blocks.shape[1])
    ]
    found: dict[int, list] = {}
    sizes = np.zeros(caps.size, dtype=np.int64)
    for block_sizes, part in compute(*tasks, progress=progress):
        sizes += block_sizes
        for k, keys, gy, gx in part:
            found.setdefault(k, []).append((keys, gy, gx))
    units = np.asarray(per_stratum(sizes) if callable(per_stratum) else caps, dtype=np.int64)
    units = np.pad(units, (0, max(caps.size - units.size, 0)))
    short = [k for k in range(units.size) if units[k] > min(sizes[k], caps[k])]
    if short:
        raise InvalidInputError(
            f"strata {short} have fewer pixels ({sizes[short].tolist()}) than the units allocated to them "
            f"({units[short].tolist()})."
        )
    rows = [pd.DataFrame(columns=["row", "col", "stratum"], dtype=np.int64)]
    for k in sorted(found):
        keys, gy, gx = (np.concatenate([p[i] for p in found[k]]) for i in range(3))
        order = np.lexsort((gx, gy, keys))[: units[k]]
        rows.append(pd.DataFrame({"row": gy[order], "col": gx[order], "stratum": np.full(order.size, k)}))
    points = pd.concat(rows, ignore_index=True).astype(np.int64)
    points.attrs = {"stratum_sizes": sizes, "units": units}
    return points


def _stratum_moments(idx: np.ndarray, y: np.ndarray, x: np.ndarray, n_strata: int):
    """Per stratum (``idx``: each unit's stratum index): sample size, means of y and x, their
    variances and covariance (``n_h - 1`` divisors; 0 for a stratum of fewer than 2 units)."""
    n = np.bincount(idx, minlength=n_strata).astype(np.float64)
    sy, sx = np.bincount(idx, y, n_strata), np.bincount(idx, x, n_strata)
    syy, sxx, sxy = (
        np.bincount(idx, y * y, n_strata),
        np.bincount(idx, x * x, n_strata),
        np.bincount(idx, x * y, n_strata),
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        my, mx = np.where(n > 0, sy / n, 0.0), np.where(n > 0, sx / n, 0.0)
        d = np.where(n > 1, n - 1, np.inf)
        vy, vx, cxy = (syy - n * my**2) / d, (sxx - n * mx**2) / d, (sxy - n * mx * my) / d
    return n, my, mx, vy, vx, cxy


def stratified_ratio(
    strata: np.ndarray,
    y: np.ndarray,
    x: np.ndarray | None,
    weights: np.ndarray,
    keys: np.ndarray,
    pixels: np.ndarray | None = None,
) -> tuple[float, float]:
    """Stehman (2014) eqs. 25-28: the stratified estimate of ``sum(y) / sum(x)`` over the
    population (``x`` ``None``: of the mean of ``y``, a proportion), and its standard error.

    ``weights[i]`` is the size of stratum ``keys[i]`` (pixels or hectares: the weights);
    ``pixels`` its size in pixels for the finite population correction ``1 - n_h / N_h``
    (default: the weights). A stratum with fewer than 2 sample units adds no variance.
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.ones_like(y) if x is None else np.asarray(x, dtype=np.float64)
    idx = np.searchsorted(keys, np.asarray(strata))
    n, my, mx, vy, vx, cxy = _stratum_moments(idx, y, x, len(keys))
    w = np.asarray(weights, dtype=np.float64)
    fpc = 1.0 - n / np.asarray(pixels if pixels is not None else weights, dtype=np.float64)
    x_hat = float(np.sum(w * mx))
    if x_hat <= 0:
        return float("nan"), float("nan")
    r = float(np.sum(w * my)) / x_hat
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(n > 1, w**2 * fpc * (vy + r**2 * vx - 2 * r * cxy) / n, 0.0)
    return r, float(np.sqrt(max(terms.sum(), 0.0)) / x_hat)


def strata_estimates(
    strata: ArrayLike,
    mapped: ArrayLike,
    reference: ArrayLike,
    stratum_sizes: dict[int, float],
    *,
    n_classes: int,
    names: Sequence[str] | None = None,
    stratum_pixels: dict[int, float] | None = None,
) -> dict[str, Any]:
    """Accuracy and area estimates from a stratified random sample whose strata are not the
    assessed map's classes (Stehman 2014, Int. J. Remote Sens. 35: 4923-4939).

    Each sample unit carries its stratum, the class of the map being assessed there (training
    id; 0 where that map has no class) and the reference class (1..``n_classes``). Every
    parameter is a ratio of two population totals, each estimated stratum by stratum:
    class area proportions (y: reference is k), overall accuracy (y: map = reference; x: the map
    has a class), user's accuracy (y: map = reference = k; x: map is k), producer's accuracy
    (y: the same; x: reference is k) and the error matrix cells. ``stratum_sizes`` maps each
    stratum to its size (the weights: hectares or pixels); ``stratum_pixels`` to its pixel count
    for the finite population correction (default: the sizes). When the strata are the map's
    classes this gives Olofsson et al.'s estimates.

    Returns the form of :func:`stratified_estimates` (areas in the unit of ``stratum_sizes``).
    """
    s = np.asarray(strata, dtype=np.int64)
    m = np.asarray(mapped, dtype=np.int64)
    r = np.asarray(reference, dtype=np.int64)
    if not (s.shape == m.shape == r.shape) or s.ndim != 1:
        raise InvalidInputError(
            f"strata estimates: expected one stratum, map class and reference class per unit, found "
            f"{s.shape}, {m.shape} and {r.shape}."
        )
    keys = np.array(sorted(stratum_sizes), dtype=np.int64)
    unknown = sorted(set(np.unique(s).tolist()) - set(keys.tolist()))
    if unknown:
        raise InvalidInputError(f"strata estimates: units of strata {unknown} whose size is not given.")
    w = np.array([stratum_sizes[int(h)] for h in keys], dtype=np.float64)
    px = (
        None if stratum_pixels is None else np.array([stratum_pixels[int(h)] for h in keys], dtype=np.float64)
    )
    if (w <= 0).any() or not np.isfinite(w).all():
        raise InvalidInputError("strata estimates: every stratum size must be finite and > 0.")
    k = n_classes
    names = list(names) if names is not None else [str(i + 1) for i in range(k)]
    total = float(w.sum())

    def est(y, x=None):
        return stratified_ratio(s, y, x, w, keys, px)

    agree = (m == r) & (m > 0)
    oa = est(agree, m > 0)
    cells = np.zeros((k, k))
    for i, j in {(int(a), int(b)) for a, b in zip(m, r, strict=True) if a > 0 and b > 0}:
        cells[i - 1, j - 1] = est((m == i) & (r == j))[0]
    classes = []
    for c in range(1, k + 1):
        if not ((m == c).any() or (r == c).any()):  # in no unit: nothing to estimate but zeros
            zero = estimate(0.0, 0.0)
            none = estimate(np.nan, np.nan)
            classes.append(
                {
                    "name": names[c - 1],
                    "map_area": float("nan"),
                    "sample_size": 0,
                    "reference_sample_size": 0,
                    "users_accuracy": none,
                    "producers_accuracy": none,
                    "area_proportion": zero,
                    "area": zero,
                }
            )
            continue
        prop, prop_se = est(r == c)
        ua = est(agree & (m == c), m == c)
        pa = est(agree & (r == c), r == c)
        classes.append(
            {
                "name": names[c - 1],
                "map_area": float("nan"),
                "sample_size": int((m == c).sum()),
                "reference_sample_size": int((r == c).sum()),
                "users_accuracy": estimate(*ua),
                "producers_accuracy": estimate(*pa),
                "area_proportion": estimate(prop, prop_se),
                "area": estimate(prop * total, prop_se * total),
            }
        )
    n_h = {int(h): int((s == h).sum()) for h in keys}
    few = [h for h, v in n_h.items() if v < 2]
    out: dict[str, Any] = {
        "estimator": "stratified, strata differ from the map's classes (Stehman 2014)",
        "overall_accuracy": estimate(*oa),
        "classes": classes,
        "error_matrix_proportions": {"rows": "map", "columns": "reference", "values": cells.tolist()},
        "sample_size": int(s.size),
        "strata": {"sizes": {int(h): float(v) for h, v in zip(keys, w, strict=True)}, "units": n_h},
    }
    if few:
        out["warnings"] = [
            f"strata {few} have fewer than 2 sample units: their variance cannot be estimated and is left "
            "out of the standard errors. Fix: at least 2 units (better 50) per stratum."
        ]
    return out
