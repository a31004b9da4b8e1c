"""What to label next: points where the map is least sure, spread over its classes and apart.

Active learning for an interpreter: the pixels whose class probabilities are the most uncertain
(entropy, or the smallest margin between the two best classes) teach a model the most per label,
but the most uncertain pixels of a map cluster along a few boundaries and in one or two confused
classes. :func:`suggest_points` therefore takes the most uncertain pixels of every map class in
turn (the map's classes are the strata) and keeps a point only if it lies at least
``min_distance`` pixels from every point already kept and from every existing label.

One streaming pass over the map keeps, per chunk and class, only its best candidates (the same
candidates whatever the chunking: ties are broken by a hash of the position); the spacing is then
decided on those few thousand candidates in memory.
"""

from __future__ import annotations

from typing import Literal

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ._hashing import hash_u64, hash_uniform
from .cluster import compute
from .errors import InvalidInputError

__all__ = ["Uncertainty", "candidates", "spread", "suggest_points", "uncertainty_score"]

Uncertainty = Literal["entropy", "margin", "random"]

#: Candidates kept per class and chunk, per point the class may get (more when too few fit apart).
OVERSAMPLE = 25
#: At most this many candidates per class and chunk.
MAX_PER_CLASS = 100_000


def uncertainty_score(prediction: xr.Dataset, by: Uncertainty, seed: int = 0) -> xr.DataArray:
    """How uncertain each pixel is (higher: more), by ``entropy``, ``margin`` (1 - margin) or a
    seeded uniform ``random`` score (a stratified random choice, the baseline)."""
    if by == "random":
        h, w = prediction.sizes["y"], prediction.sizes["x"]
        chunks = prediction["classes"].chunks or ((h,), (w,))
        rows = da.arange(h, chunks=chunks[0])[:, None]
        cols = da.arange(w, chunks=chunks[1])[None, :]
        score = da.map_blocks(lambda r, c: hash_uniform(r, c, seed), rows, cols, dtype=np.float64)
        return prediction["classes"].copy(data=score)
    if by not in ("entropy", "margin"):
        raise InvalidInputError(f"by: expected 'entropy', 'margin' or 'random', found {by!r}.")
    if by not in prediction:
        raise InvalidInputError(
            f"the prediction has no {by} layer (written by kerinci-xr predict since calibration came in). "
            "Fix: predict again with this version."
        )
    layer = prediction[by]
    return layer if by == "entropy" else 1.0 - layer


def _block_best(score: np.ndarray, classes: np.ndarray, r0: int, c0: int, per_class: int, seed: int):
    rows, cols = np.nonzero(classes > 0)
    if rows.size == 0:
        return []
    s = score[rows, cols].astype(np.float64)
    k = classes[rows, cols]
    gy, gx = rows + r0, cols + c0
    tie = hash_u64(gy, gx, seed)
    order = np.lexsort((tie, -s, k))  # by class, most uncertain first, ties by hash
    k, s, gy, gx = k[order], s[order], gy[order], gx[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    rank = np.arange(k.size) - np.repeat(starts, np.diff(np.r_[starts, k.size]))
    keep = rank < per_class
    return [(gy[keep], gx[keep], k[keep], s[keep], tie[keep])]


def candidates(score: xr.DataArray, classes: xr.DataArray, per_class: int, *, seed: int = 0) -> pd.DataFrame:
    """The ``per_class`` most uncertain pixels of each map class (one pass, one task per chunk):
    ``row``, ``col``, ``class_id``, ``score``, most uncertain first within each class."""
    data = classes.data if isinstance(classes.data, da.Array) else da.from_array(np.asarray(classes.data))
    sdata = score.data if isinstance(score.data, da.Array) else da.from_array(np.asarray(score.data))
    sdata = sdata.rechunk(data.chunks)
    ybounds, xbounds = np.cumsum((0, *data.chunks[0])), np.cumsum((0, *data.chunks[1]))
    cb, sb = data.to_delayed(), sdata.to_delayed()
    tasks = [
        dask.delayed(_block_best, pure=True)(
            sb[i, j], cb[i, j], int(ybounds[i]), int(xbounds[j]), per_class, seed
        )
        for i in range(cb.shape[0])
        for j in range(cb.shape[1])
    ]
    parts = [p for block in compute(*tasks) for p in block]
    if not parts:
        return pd.DataFrame({"row": [], "col": [], "class_id": [], "score": []}).astype(
            {"row": np.int64, "col": np.int64, "class_id": np.int64, "score": np.float64}
        )
    gy, gx, k, s, tie = (np.concatenate([p[i] for p in parts]) for i in range(5))
    order = np.lexsort((tie, -s, k))
    out = pd.DataFrame(
        {"row": gy[order], "col": gx[order], "class_id": k[order].astype(np.int64), "score": s[order]}
    )
    return out.groupby("class_id", sort=True).head(per_class).reset_index(drop=True)


class _Grid:
    """Points in square cells of the minimum distance: a neighbour check looks at 3 x 3 cells."""

    def __init__(self, distance: float) -> None:
        self.d2 = float(distance) ** 2
        self.size = max(float(distance), 1.0)
        self.cells: dict[tuple[int, int], list[tuple[float, float]]] = {}

    def _cell(self, r: float, c: float) -> tuple[int, int]:
        return int(r // self.size), int(c // self.size)

    def free(self, r: float, c: float) -> bool:
        if self.d2 <= 0:
            return True
        cy, cx = self._cell(r, c)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for pr, pc in self.cells.get((cy + dy, cx + dx), ()):
                    if (pr - r) ** 2 + (pc - c) ** 2 < self.d2:
                        return False
        return True

    def add(self, r: float, c: float) -> None:
        self.cells.setdefault(self._cell(r, c), []).append((r, c))


def spread(
    cands: pd.DataFrame,
    n: int,
    *,
    min_distance: float,
    taken: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Choose ``n`` of the candidates: the map classes take turns (the class with the most
    uncertain candidate first), each giving its most uncertain candidate that lies at least
    ``min_distance`` pixels from every chosen point and every ``taken`` (row, col) label; a class
    whose candidates run out drops out, so the others fill its share."""
    grid = _Grid(min_distance)
    if taken is not None:
        for r, c in zip(*taken, strict=True):
            grid.add(float(r), float(c))
    rows, cols = cands["row"].to_numpy(), cands["col"].to_numpy()
    kind, score = cands["class_id"].to_numpy(), cands["score"].to_numpy()
    queues = {int(k): np.flatnonzero(kind == k) for k in np.unique(kind)}  # most uncertain first
    turn = sorted(queues, key=lambda k: -float(score[queues[k][0]]))
    pos = dict.fromkeys(turn, 0)
    chosen: list[int] = []
    while len(chosen) < n and turn:
        for k in list(turn):
            if len(chosen) >= n:
                break
            q = queues[k]
            while pos[k] < q.size:
                i = int(q[pos[k]])
                pos[k] += 1
                if grid.free(float(rows[i]), float(cols[i])):
                    grid.add(float(rows[i]), float(cols[i]))
                    chosen.append(i)
                    break
            else:
                turn.remove(k)
    return cands.iloc[chosen].reset_index(drop=True)


def suggest_points(
    prediction: xr.Dataset,
    n: int,
    *,
    by: Uncertainty = "entropy",
    min_distance: float = 10.0,
    taken: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """``n`` pixels to label next (:mod:`module docs <kerinci_xr.active>`): ``row``, ``col``,
    ``class_id`` (the map's class), ``score`` (the uncertainty they were chosen by) and the
    prediction's ``confidence``, ``margin`` and ``entropy`` there, in the order they were chosen."""
    if n < 1:
        raise InvalidInputError(f"n: expected 1 or more points, found {n}.")
    classes = prediction["classes"]
    score = uncertainty_score(prediction, by, seed)
    n_classes = max(int(np.asarray(prediction["classes"].attrs.get("flag_values", [0, 1])).max()), 1)
    per_class = max(OVERSAMPLE * -(-n // n_classes), OVERSAMPLE)
    while True:  # the most uncertain pixels cluster: more candidates until n fit apart, or none are left
        cands = candidates(score, classes, per_class, seed=seed)
        picked = spread(cands, n, min_distance=min_distance, taken=taken)
        exhausted = (cands.groupby("class_id").size() < per_class).all()
        if len(picked) >= n or exhausted or per_class >= MAX_PER_CLASS:
            break
        per_class *= 4
    names = [name for name in ("confidence", "margin", "entropy") if name in prediction]
    if names and len(picked):  # the layers at the points, read in one pass over their chunks
        rows, cols = picked["row"].to_numpy(), picked["col"].to_numpy()
        values = compute(*(da.asarray(prediction[name].data).vindex[rows, cols] for name in names))
        for name, v in zip(names, values, strict=True):
            picked[name] = np.asarray(v)
    return picked
