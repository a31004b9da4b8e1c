"""Good-practice accuracy and area estimation from a stratified sample (Olofsson et al. 2014).

A map's pixel counts are biased by its errors; a probability sample labelled with reference data
gives unbiased estimates of accuracy and of each class's area, with standard errors. Here the
strata are the map's classes (stratified random sampling, Olofsson et al. 2014, Remote Sensing of
Environment 148: 42-57, eqs. 2-10), and every estimate is reported as
``{"estimate": x, "se": s, "ci95": [x - 1.96 s, x + 1.96 s]}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InvalidInputError

__all__ = ["Z95", "estimate", "sample_size_for_overall_accuracy", "stratified_estimates"]

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

    A stratum with fewer than 2 sample units has no variance estimate: its figures get ``se``
    ``None`` and the result lists it under ``warnings``.
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
        var_p = (w[:, None] ** 2 * cell_var).sum(axis=0)  # eq. 10
        n_hat = (area / n_i)[:, None] * n  # estimated reference totals per cell (in area units)
        n_j = n_hat.sum(axis=0)
        var_pa = np.empty(k)
        for j in range(k):  # eq. 7
            others = [i for i in range(k) if i != j]
            term1 = area[j] ** 2 * (1 - pa[j]) ** 2 * ua[j] * (1 - ua[j]) / dof[j]
            term2 = pa[j] ** 2 * sum(area[i] ** 2 * cell_var[i, j] for i in others)
            var_pa[j] = (term1 + term2) / n_j[j] ** 2
    few = [names[i] for i in range(k) if n_i[i] < 2]
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
        "overall_accuracy": estimate(oa, np.sqrt(var_oa) if not few else np.nan),
        "classes": classes,
        "error_matrix_proportions": {"rows": "map", "columns": "reference", "values": p.tolist()},
        "sample_size": int(n.sum()),
    }
    if few:
        out["warnings"] = [
            f"strata {few} have fewer than 2 sample units: their variance cannot be estimated "
            "(standard errors undefined). Fix: sample at least 2 units (better 50) per class."
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
