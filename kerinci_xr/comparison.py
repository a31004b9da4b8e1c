"""Models compared on identical folds: fold flags, means with intervals, pooled figures, and the
paired difference between two models with a bootstrap interval over the test samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .legend import Legend
from .metrics import accuracy_report, confusion_matrix

__all__ = ["fold_flags", "mean_interval", "paired_difference", "pooled_report", "recommend"]


def fold_flags(ref: np.ndarray, present: Sequence[int], min_samples: int) -> list[str]:
    """Why a fold's scores are not comparable with the others: a class of the data missing from
    its test area, or fewer than ``min_samples`` test samples of one."""
    counts = np.bincount(ref, minlength=max([*present, 0]) + 1)
    flags = [f"class {k} not in the test area" for k in present if counts[k] == 0]
    flags += [
        f"class {k}: {int(counts[k])} test samples (< {min_samples})"
        for k in present
        if 0 < counts[k] < min_samples
    ]
    return flags


def mean_interval(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean over folds with a 95 % t-interval and the sample standard deviation (undefined
    values left out; the interval needs two folds or more)."""
    from scipy import stats

    v = np.array([x for x in values if x is not None], dtype=float)
    out: dict[str, Any] = {"mean": None, "std": None, "ci95": None, "folds": int(v.size)}
    if v.size:
        out["mean"] = round(float(v.mean()), 6)
    if v.size > 1:
        sd = float(v.std(ddof=1))
        half = float(stats.t.ppf(0.975, v.size - 1) * sd / np.sqrt(v.size))  # a float, not np.float64
        out |= {"std": round(sd, 6), "ci95": [round(out["mean"] - half, 6), round(out["mean"] + half, 6)]}
    return out


POOLED_METRICS = ("overall_accuracy", "kappa", "macro_f1", "mean_iou")


def pooled_report(
    refs: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    legend: Legend,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy over every fold's test samples at once (each sample once): the confusion matrix
    a reviewer can recompute, with OA, kappa, macro F1 and mean IoU, and (``ci95``) each one's
    95 % percentile interval from a bootstrap that resamples the test samples within each fold."""
    cm = confusion_matrix(np.concatenate(refs), np.concatenate(preds), legend.n_classes)
    report = accuracy_report(cm, legend)
    pairs = [(np.asarray(r), np.asarray(p)) for r, p in zip(refs, preds, strict=True) if len(r)]
    if not pairs or n_boot < 1:
        return report | {"ci95": {}}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in POOLED_METRICS}
    for _ in range(n_boot):
        idx = [rng.integers(0, r.size, r.size) for r, _ in pairs]
        ref = np.concatenate([r[i] for (r, _), i in zip(pairs, idx, strict=True)])
        pred = np.concatenate([p[i] for (_, p), i in zip(pairs, idx, strict=True)])
        rep = accuracy_report(confusion_matrix(ref, pred, legend.n_classes), legend)
        for m in POOLED_METRICS:
            if rep[m] is not None:
                draws[m].append(rep[m])
    report["ci95"] = {
        m: [round(float(v), 6) for v in np.percentile(d, [2.5, 97.5])] if d else None
        for m, d in draws.items()
    }
    return report


def paired_difference(
    refs: Sequence[np.ndarray],
    a: Sequence[np.ndarray],
    b: Sequence[np.ndarray],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Overall accuracy of ``a`` minus that of ``b`` over the pooled test samples, with a 95 %
    percentile interval from a bootstrap that resamples the samples within each fold (the
    same resample for both models: a paired comparison)."""
    hits = [
        (np.asarray(pa) == r).astype(np.int64) - (np.asarray(pb) == r)
        for r, pa, pb in zip(refs, a, b, strict=True)
    ]
    total = sum(h.size for h in hits)
    estimate = sum(int(h.sum()) for h in hits) / total
    rng = np.random.default_rng(seed)
    boot = np.zeros(n_boot)
    for h in hits:  # per fold: the sum of the resampled paired hits
        boot += np.array([h[rng.integers(0, h.size, h.size)].sum() for _ in range(n_boot)])
    boot /= total
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {
        "estimate": round(estimate, 6),
        "ci95": [round(float(lo), 6), round(float(hi), 6)],
        "samples": total,
    }


def recommend(
    pooled: Mapping[str, Mapping[str, Any]], differences: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """The model to use: the most accurate on the pooled test samples, unless it is the U-Net and
    its advantage over the best per-pixel model is not clear (the interval of the difference
    reaches 0), when the per-pixel model is as good and far cheaper to train (not always to run:
    at 300 rounds of many classes LightGBM maps a scene slower than the U-Net on a CPU; see
    benchmarks/README.md)."""
    best = max(pooled, key=lambda m: pooled[m]["overall_accuracy"] or 0.0)
    trees = [m for m in pooled if m != "unet"]
    why = f"highest overall accuracy on the pooled test samples ({pooled[best]['overall_accuracy']:.3f})"
    if best == "unet" and trees:
        tree = max(trees, key=lambda m: pooled[m]["overall_accuracy"] or 0.0)
        d = next((x for x in differences if x["a"] == "unet" and x["b"] == tree), None)
        if d is not None and d["ci95"][0] <= 0:
            return {
                "model": tree,
                "why": f"the U-Net's advantage over {tree} ({d['estimate']:+.3f} overall accuracy, 95 % "
                f"interval {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}) is not clear on these folds, "
                f"and {tree} trains in a fraction of the U-Net's time",
            }
    return {"model": best, "why": why}
