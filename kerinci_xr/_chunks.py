"""Regions of a chunked array for tasks that need windows larger than, or across, its chunks.

Two ways, for two needs. :class:`BlockGrid` hands each task the *whole chunks* it needs as
``Delayed`` dependencies (of one ``to_delayed()`` call), so every chunk is read once per run and
shared by its tasks: right when the tasks are cheap next to the reads (cutting patches,
sampling). :class:`Regions` hands each task a small self-contained read that it does itself, so
no chunk waits in memory for the other tasks that share it: right when the tasks are long and
memory must not grow with the scene (whole-scene prediction), at the price of reading the
chunks under the overlaps more than once.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.local import get_sync
from dask.optimization import cull

__all__ = ["BlockGrid", "Region", "Regions", "assemble", "cut_windows"]


class _Grid:
    """Chunk bounds of a dask array over its last two (y, x) axes (one chunk along the others)."""

    def __init__(self, arr: da.Array) -> None:
        self.ybounds = np.cumsum((0, *arr.chunks[-2]))
        self.xbounds = np.cumsum((0, *arr.chunks[-1]))
        self.lead = (0,) * (arr.ndim - 2)

    def cells(self, ys: slice, xs: slice) -> list[list[tuple[tuple[int, ...], slice, slice]]]:
        """Block indices of the chunks covering rows ``ys`` and columns ``xs``, with the part to keep."""
        return [
            [((*self.lead, i, j), sy, sx) for j, sx in _cover(self.xbounds, xs)]
            for i, sy in _cover(self.ybounds, ys)
        ]


class BlockGrid(_Grid):
    """The chunks of a dask array over its last two (y, x) axes, as ``Delayed`` objects."""

    def __init__(self, arr: da.Array) -> None:
        arr = _one_chunk_before_yx(arr)
        super().__init__(arr)
        self.blocks = arr.to_delayed()

    def parts(self, ys: slice, xs: slice) -> list[list[tuple[Any, slice, slice]]]:
        """The chunks covering rows ``ys`` and columns ``xs``, with the part of each to keep."""
        return [[(self.blocks[idx], sy, sx) for idx, sy, sx in row] for row in self.cells(ys, xs)]


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


class Regions(_Grid):
    """Regions of a dask array as small self-contained reads, done inside the task that needs them.

    A task handed :class:`Region` objects (rather than the chunks themselves as dependencies)
    holds only its own data: no chunk stays in memory waiting for the neighbours that share it,
    so peak memory is set by the tasks running at once, not by the scene's width. The price is
    that chunks under the overlap of two regions are read (and decompressed) by both. The
    array's graph is optimised and materialised once; each region keeps only the few tasks its
    chunks need, so building N regions costs O(N), and a task ships only its own reads.
    """

    def __init__(self, arr: da.Array) -> None:
        (arr,) = dask.optimize(_one_chunk_before_yx(arr))
        super().__init__(arr)
        self.graph = dict(arr.__dask_graph__())
        self.name = arr.name

    def region(self, ys: slice, xs: slice) -> Region:
        """The read of rows ``ys`` and columns ``xs``, for a task to do."""
        parts = [[((self.name, *idx), sy, sx) for idx, sy, sx in row] for row in self.cells(ys, xs)]
        graph, _ = cull(self.graph, [k for row in parts for k, _, _ in row])
        return Region(graph, parts)


def _one_chunk_before_yx(arr: da.Array) -> da.Array:
    """``arr`` with a single chunk along every axis but the last two (y, x)."""
    if any(len(c) != 1 for c in arr.chunks[:-2]):
        arr = arr.rechunk({i: -1 for i in range(arr.ndim - 2)})
    return arr


def _cover(bounds: np.ndarray, want: slice) -> list[tuple[int, slice]]:
    """The chunks (index, part of the chunk to keep) that cover ``want`` along one axis."""
    first = int(np.searchsorted(bounds, want.start, "right")) - 1
    last = int(np.searchsorted(bounds, want.stop - 1, "right"))
    out = []
    for i in range(first, last):
        lo, hi = bounds[i], bounds[i + 1]
        out.append((i, slice(int(max(want.start, lo) - lo), int(min(want.stop, hi) - lo))))
    return out


class Region:
    """One region of a dask array: a culled graph of its chunk reads and the part of each to keep."""

    __slots__ = ("graph", "parts")

    def __init__(self, graph: dict, parts: list[list[tuple[Any, slice, slice]]]) -> None:
        self.graph = graph
        self.parts = parts

    def __dask_tokenize__(self) -> Any:
        return [[(k, (sy.start, sy.stop), (sx.start, sx.stop)) for k, sy, sx in row] for row in self.parts]

    def read(self) -> np.ndarray:
        """Inside a task: the region's values, its chunks read (synchronous scheduler) and copied
        into place one at a time, so that at most one decoded chunk is held beside the result."""
        heights = [sy.stop - sy.start for _, sy, _ in (row[0] for row in self.parts)]
        widths = [sx.stop - sx.start for _, _, sx in self.parts[0]]
        out: np.ndarray | None = None
        r = 0
        for row, hgt in zip(self.parts, heights, strict=True):
            c = 0
            for (key, sy, sx), wid in zip(row, widths, strict=True):
                (block,) = get_sync(self.graph, [key])
                piece = np.asarray(block)[..., sy, sx]
                if out is None:
                    out = np.empty((*piece.shape[:-2], sum(heights), sum(widths)), dtype=piece.dtype)
                out[..., r : r + hgt, c : c + wid] = piece
                del block, piece
                c += wid
            r += hgt
        assert out is not None  # a region covers at least one chunk
        return out
