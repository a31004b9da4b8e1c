"""Regions of a chunked array as task arguments, so that every chunk is computed once per run.

Slicing a dask array per task lets dask push the slice into the read, and then a chunk that
several regions overlap is read by each of them. Handing each task the *whole chunks* it needs
(as ``Delayed`` objects of one ``to_delayed()`` call) shares every chunk between its tasks.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np

__all__ = ["BlockGrid", "Region", "assemble", "cut_windows"]


class BlockGrid:
    """The chunks of a dask array over its last two (y, x) axes, as ``Delayed`` objects."""

    def __init__(self, arr: da.Array) -> None:
        if any(len(c) != 1 for c in arr.chunks[:-2]):
            arr = arr.rechunk({i: -1 for i in range(arr.ndim - 2)})
        self.blocks = arr.to_delayed()
        self.ybounds = np.cumsum((0, *arr.chunks[-2]))
        self.xbounds = np.cumsum((0, *arr.chunks[-1]))
        self.lead = (0,) * (arr.ndim - 2)

    def parts(self, ys: slice, xs: slice) -> list[list[tuple[Any, slice, slice]]]:
        """The chunks covering rows ``ys`` and columns ``xs``, with the part of each to keep."""
        rows = []
        iy = range(
            np.searchsorted(self.ybounds, ys.start, "right") - 1,
            np.searchsorted(self.ybounds, ys.stop - 1, "right"),
        )
        ix = range(
            np.searchsorted(self.xbounds, xs.start, "right") - 1,
            np.searchsorted(self.xbounds, xs.stop - 1, "right"),
        )
        for i in iy:
            y0, y1 = self.ybounds[i], self.ybounds[i + 1]
            sy = slice(int(max(ys.start, y0) - y0), int(min(ys.stop, y1) - y0))
            row = []
            for j in ix:
                x0, x1 = self.xbounds[j], self.xbounds[j + 1]
                sx = slice(int(max(xs.start, x0) - x0), int(min(xs.stop, x1) - x0))
                row.append((self.blocks[(*self.lead, i, j)], sy, sx))
            rows.append(row)
        return rows


def assemble(parts: list[list[tuple[np.ndarray, slice, slice]]]) -> np.ndarray:
    """Inside a task: join the kept parts of the chunks into one region array."""
    return np.block([[b[..., sy, sx] for b, sy, sx in row] for row in parts])


def cut_windows(
    parts: list[list[tuple[np.ndarray, slice, slice]]], starts: np.ndarray, size: int
) -> np.ndarray:
    """Inside a task: copy ``size`` x ``size`` windows straight from the chunk parts.

    ``starts`` holds each window's top-left (row, col) relative to the region the parts cover.
    Each window is copied once from the chunks it overlaps, without joining the region first.
    """
    heights = [sy.stop - sy.start for _, sy, _ in (row[0] for row in parts)]
    widths = [sx.stop - sx.start for _, _, sx in parts[0]]
    ys = np.cumsum([0, *heights])
    xs = np.cumsum([0, *widths])
    first = parts[0][0][0]
    out = np.empty((len(starts), *first.shape[:-2], size, size), dtype=first.dtype)
    for k, (r0, c0) in enumerate(starts):
        for i in range(np.searchsorted(ys, r0, "right") - 1, np.searchsorted(ys, r0 + size - 1, "right")):
            for j in range(np.searchsorted(xs, c0, "right") - 1, np.searchsorted(xs, c0 + size - 1, "right")):
                block, sy, sx = parts[i][j]
                a, b = max(r0, ys[i]), min(r0 + size, ys[i + 1])
                c, d = max(c0, xs[j]), min(c0 + size, xs[j + 1])
                out[k, ..., a - r0 : b - r0, c - c0 : d - c0] = block[
                    ...,
                    sy.start + a - ys[i] : sy.start + b - ys[i],
                    sx.start + c - xs[j] : sx.start + d - xs[j],
                ]
    return out


class Region:
    """One region of a dask array, read inside the task that needs it, not as a graph dependency.

    A task handed :class:`Region` objects holds only its own data: no chunk stays in memory
    waiting for the neighbours that share it, so peak memory is set by the tasks running at
    once, not by the scene's width. The price is that chunks under the overlap of two regions
    are read (and decompressed) by both. The region's graph is culled when it is built, so a
    task ships only the few reads it makes.
    """

    __slots__ = ("array",)

    def __init__(self, arr: Any, ys: slice, xs: slice) -> None:
        region = arr[..., ys, xs]
        if isinstance(region, da.Array):
            (region,) = dask.optimize(region)
        self.array = region

    def __dask_tokenize__(self) -> Any:
        arr = self.array
        return arr.name if isinstance(arr, da.Array) else dask.base.tokenize(arr)

    def read(self) -> np.ndarray:
        """Inside a task: the region's values (read with the synchronous scheduler)."""
        arr = self.array
        return np.asarray(arr.compute(scheduler="sync") if isinstance(arr, da.Array) else arr)
