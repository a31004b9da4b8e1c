"""Regions of a chunked array as task arguments, so that every chunk is computed once per run.

Slicing a dask array per task lets dask push the slice into the read, and then a chunk that
several regions overlap is read by each of them. Handing each task the *whole chunks* it needs
(as ``Delayed`` objects of one ``to_delayed()`` call) shares every chunk between its tasks.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

__all__ = ["BlockGrid", "assemble"]


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
