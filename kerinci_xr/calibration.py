"""How sure a map is: temperature scaling, reliability and the expected calibration error, and
the uncertainty layers a prediction stores (confidence, margin, entropy).

A model whose winning probability is 0.9 should be right on 90 % of such pixels. Networks
trained with cross-entropy are usually over-confident, and tree ensembles under- or
over-confident; both are corrected here by one number fitted on the validation pixels, a
temperature ``T`` that divides the log-probabilities before the softmax (Guo et al. 2017, "On
calibration of modern neural networks", ICML). For a U-Net the log-probabilities are its logits;
for LightGBM and its random forest they are the logarithms of the class probabilities it
predicts, so one method serves every model kind. Dividing by ``T`` never changes which class
wins: the map stays the same, only its probabilities change.

The expected calibration error (ECE) is the pixel-weighted mean gap between accuracy and mean
confidence over equal-width confidence bins (15 by default, as Guo et al.).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidInputError

__all__ = [
    "BINS",
    "EPS",
    "LAYER_NAMES",
    "MAP_LAYERS",
    "calibration_record",
    "columns_of",
    "fill_layers",
    "fit_temperature",
    "log_probabilities",
    "reliability",
    "softmax",
    "uncertainty",
]

#: Equal-width confidence bins of the reliability diagram and the ECE.
BINS = 15

#: The smallest probability whose logarithm a tree model's output is given (0 has none).
EPS = 1e-7

#: The layers of a map, in the order a prediction computes them (probabilities follow).
MAP_LAYERS = ("classes", "confidence", "margin", "entropy")

#: What each uncertainty layer holds (its long_name).
LAYER_NAMES = {
    "confidence": "probability of the predicted class (calibrated when the model has a temperature)",
    "margin": "probability of the predicted class minus that of the second (0: a tie, 1: certain)",
    "entropy": "entropy of the class probabilities divided by ln K (0: certain, 1: all K classes equal)",
}

#: Bounds of the fitted temperature: beyond them the validation pixels say something is wrong.
T_RANGE = (0.05, 20.0)


def softmax(logits: np.ndarray, temperature: float = 1.0, axis: int = -1) -> np.ndarray:
    """Probabilities from log-probabilities divided by ``temperature`` (float64 inside)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def log_probabilities(p: np.ndarray) -> np.ndarray:
    """The logarithm of a model's class probabilities, floored at :data:`EPS`: the
    "logits" of a tree model that temperature scaling divides."""
    return np.log(np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0))


def _nll(logits: np.ndarray, target: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    top = z.max(axis=1)
    lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return float(np.mean(lse - z[np.arange(z.shape[0]), target]))


def columns_of(ref: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The column of each reference training id among a model's output ``ids`` (-1 for a class
    the model does not know: such a pixel is always wrong, and has no likelihood to fit)."""
    lookup = np.full(max(int(np.max(ids, initial=0)), int(np.max(ref, initial=0))) + 1, -1, np.int64)
    lookup[np.asarray(ids, np.int64)] = np.arange(len(ids))
    return lookup[np.asarray(ref, np.int64)]


def fit_temperature(logits: np.ndarray, target: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``target`` (column indices
    into ``logits``, shape ``(pixel, class)``; -1: left out) on these pixels; 1.0 where there are
    none."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target, dtype=np.int64)
    if z.ndim != 2 or t.shape != (z.shape[0],):
        raise InvalidInputError(
            f"fit_temperature: expected logits (pixel, class) and one target per pixel, found {z.shape} "
            f"and {t.shape}."
        )
    z, t = z[t >= 0], t[t >= 0]
    if t.size == 0:
        return 1.0
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    res = minimize_scalar(
        lambda u: _nll(z, t, float(np.exp(u))), bounds=(lo, hi), method="bounded", options={"xatol": 1e-5}
    )
    return float(np.exp(res.x))


def reliability(confidence: np.ndarray, correct: np.ndarray, *, bins: int = BINS) -> dict[str, Any]:
    """The reliability diagram's bins and the expected calibration error.

    ``confidence``: the winning class's probability of each pixel; ``correct``: whether that
    class is the reference. Bins are ``(k/bins, (k+1)/bins]`` (a confidence of 0 falls in the
    first). Returns ``ece``, ``pixels`` and per bin ``lower``, ``upper``, ``count``,
    ``confidence`` (mean) and ``accuracy`` (``None`` for an empty bin).
    """
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=bool).ravel()
    if conf.shape != ok.shape:
        raise InvalidInputError(f"reliability: {conf.size} confidences for {ok.size} outcomes.")
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=bins)
    sum_ok = np.bincount(idx, weights=ok.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, acc = sum_conf / count, sum_ok / count
    n = int(conf.size)
    ece = float(np.sum(np.abs(sum_ok - sum_conf)) / n) if n else None

    def num(v: float) -> float | None:
        return float(v) if np.isfinite(v) else None

    return {
        "ece": ece,
        "pixels": n,
        "accuracy": float(ok.mean()) if n else None,
        "mean_confidence": float(conf.mean()) if n else None,
        "bins": [
            {
                "lower": k / bins,
                "upper": (k + 1) / bins,
                "count": int(count[k]),
                "confidence": num(mean_conf[k]),
                "accuracy": num(acc[k]),
            }
            for k in range(bins)
        ],
    }


def calibration_record(
    logits: np.ndarray, target: np.ndarray, *, temperature: float | None = None, fitted_on: str = "val"
) -> dict[str, Any]:
    """Fit (or take) a temperature and measure the reliability before and after it on these
    pixels (``target``: column indices, -1 for a class the model lacks, always wrong): what a
    checkpoint stores as ``calibration`` and what ``evaluate`` reports."""
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target, dtype=np.int64)
    temp = fit_temperature(z, t) if temperature is None else float(temperature)
    out: dict[str, Any] = {"method": "temperature", "temperature": temp, "fitted_on": fitted_on}
    for name, value in (("before", 1.0), ("after", temp)):
        p = softmax(z, value) if z.size else np.zeros((0, max(z.shape[-1], 1)))
        best = p.argmax(axis=1) if p.size else np.zeros(0, np.int64)
        conf = p[np.arange(p.shape[0]), best] if p.size else np.zeros(0)
        out[name] = reliability(conf, best == t)
        known = t >= 0
        out[name]["nll"] = _nll(z[known], t[known], value) if known.any() else None
    return out


def uncertainty(prob: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence (the top probability), margin (top minus second) and entropy divided by
    ``ln K`` (0: certain, 1: every class equally likely) of probabilities along ``axis``."""
    p = np.asarray(prob, dtype=np.float32)
    k = p.shape[axis]
    top2 = -np.partition(-p, 1, axis=axis) if k > 1 else np.concatenate([p, np.zeros_like(p)], axis=axis)
    first = np.take(top2, 0, axis=axis)
    second = np.take(top2, 1, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    ent = -plogp.sum(axis=axis) / np.float32(np.log(k)) if k > 1 else np.zeros_like(first)
    return first, (first - second).astype(np.float32), np.clip(ent, 0.0, 1.0).astype(np.float32)


def fill_layers(
    out: np.ndarray, at: tuple[Any, ...], prob: np.ndarray, ids: np.ndarray, probabilities: bool
) -> None:
    """Write one piece's map layers (:data:`MAP_LAYERS`) into ``out`` at ``at`` from ``prob``
    (class, ...): the training id (``ids``, one per row of ``prob``) of the top probability,
    confidence, margin, entropy and, when asked, the probabilities in legend order (0 for the
    classes ``ids`` lacks)."""
    n = len(MAP_LAYERS)
    conf, margin, entropy = uncertainty(prob, axis=0)
    out[(0, *at)] = np.asarray(ids)[prob.argmax(0)]
    out[(1, *at)], out[(2, *at)], out[(3, *at)] = conf, margin, entropy
    if probabilities:
        out[(slice(n, None), *at)] = 0
        out[(n - 1 + np.asarray(ids), *at)] = prob
