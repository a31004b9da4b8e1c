"""Patch centres: N per class, away from borders and nodata, seeded; spatial train/val/test areas.

The draw is exactly uniform within a class and independent of chunking and scheduler: every
eligible pixel gets a random priority that is a pure function of (seed, split, class, row, col),
and the ``per_class`` pixels of lowest priority are chosen (a uniform random subset). Each chunk
returns only its own ``per_class`` best candidates and its eligible counts, so one streaming pass
over labels and the valid mask serves scenes far larger than memory.
"""

from __future__ import annotations

import io
import itertools
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ._chunks import BlockGrid, assemble
from ._hashing import hash_u64
from ._locations import as_location
from ._outputs import write_atomic
from ._products import Kind, product_bytes
from .cluster import compute
from .cube import cube_legend
from .errors import InvalidInputError, NoWindowError
from .legend import Legend

__all__ = [
    "SPLITS",
    "Draw",
    "SplitLayout",
    "assign_blocks",
    "block_label_counts",
    "draw_centres",
    "fold_layouts",
    "fold_layouts_of",
    "read_manifest",
    "sample_centres",
    "split_layout",
    "write_manifest",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Patch ids run tile by tile over tiles of this many pixels (see :func:`sample_centres`).
ORDER_TILE = 1024


@dataclass(frozen=True)
class SplitLayout:
    """Scene blocks assigned to splits: ``blocks[i, j]`` is the split index of block (i, j).

    Block ``i`` covers rows ``yedges[i]:yedges[i + 1]`` (likewise for columns): the scene is cut
    into equal blocks no larger than the requested size, so no sliver of a block is left at the
    edges.
    """

    blocks: np.ndarray  # (n_block_rows, n_block_cols) int8: 0 train, 1 val, 2 test
    yedges: np.ndarray
    xedges: np.ndarray

    def split_map(self, rows: slice, cols: slice) -> np.ndarray:
        """Split index of every pixel of a window (global pixel slices)."""
        r = np.searchsorted(self.yedges, np.arange(rows.start, rows.stop), side="right") - 1
        c = np.searchsorted(self.xedges, np.arange(cols.start, cols.stop), side="right") - 1
        return self.blocks[np.ix_(r, c)]

    def split_of(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Split index of scattered pixels (global row and column arrays)."""
        r = np.searchsorted(self.yedges, rows, side="right") - 1
        c = np.searchsorted(self.xedges, cols, side="right") - 1
        return self.blocks[r, c]

    def fractions(self) -> dict[str, float]:
        """Share of the scene's pixels in each split."""
        h = np.diff(self.yedges)[:, None] * np.diff(self.xedges)[None, :]
        share = np.bincount(self.blocks.ravel(), weights=h.ravel(), minlength=3) / h.sum()
        return dict(zip(SPLITS, share.tolist(), strict=True))


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or not all(np.isfinite(f)) or any(x < 0 for x in f) or abs(sum(f) - 1) > 1e-6 or f[0] == 0:
        raise InvalidInputError(
            f"fractions: expected three non-negative numbers (train, val, test) summing to 1 with "
            f"train > 0, found {list(fractions)}. Fix: e.g. 0.7,0.15,0.15."
        )
    return f  # type: ignore[return-value]


def _edges(shape: tuple[int, int], block: int) -> tuple[np.ndarray, np.ndarray]:
    if block < 1:
        raise InvalidInputError(f"block: expected a positive block size in pixels, found {block}.")
    nby, nbx = -(-shape[0] // block), -(-shape[1] // block)
    yedges = np.linspace(0, shape[0], nby + 1).round().astype(np.int64)
    xedges = np.linspace(0, shape[1], nbx + 1).round().astype(np.int64)
    return yedges, xedges


def _area_counts(f: Sequence[float], n: int) -> np.ndarray:
    """Blocks per group from the fractions (largest remainders; a requested group gets one)."""
    fa = np.asarray(f, dtype=float)
    counts = np.floor(fa * n).astype(int)
    for i in np.argsort(-(fa * n - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in range(1, len(fa)):  # a requested group gets a block if any can be spared
        if fa[i] > 0 and counts[i] == 0 and counts[0] > 1:
            counts[i], counts[0] = 1, counts[0] - 1
    return counts


def assign_blocks(
    counts: np.ndarray, fractions: Sequence[float], *, seed: int = 0, areas: np.ndarray | None = None
) -> np.ndarray:
    """Stratified assignment of blocks to groups (splits or folds) by their labelled pixels.

    ``counts[b, k]`` is the number of labelled, valid pixels of class ``k`` (column 0 ignored)
    in block ``b``. Blocks are placed one at a time, those holding the rarest classes first
    (ties broken by a seeded draw), each in the group where it most reduces the squared gap
    between every class's share and the group's fraction, with a bonus for giving a group a
    class it does not have yet. So every group receives every class that occurs in enough
    blocks, and each group's share of every class comes as close to its fraction as whole
    blocks allow. Blocks without labels fill the groups' areas in proportion.
    """
    f = np.asarray(fractions, dtype=float)
    c = np.asarray(counts, dtype=float)[:, 1:]
    nblock = len(c)
    total = c.sum(0)
    live = total > 0
    c, total = c[:, live], total[live]
    rng = np.random.default_rng([seed, 0x5B12])
    tie = rng.random(nblock)
    groups = np.full(nblock, -1, dtype=np.int64)
    target = f[:, None] * total[None, :]
    got = np.zeros_like(target)
    used = np.flatnonzero(f > 0)
    labelled = np.flatnonzero(c.sum(1) > 0)
    if labelled.size:
        holders = (c > 0).sum(0)  # blocks holding each class
        rarity = np.where(c[labelled] > 0, holders[None, :], np.iinfo(np.int64).max).min(1)
        share = (c[labelled] / total[None, :]).max(1)
        for b in labelled[np.lexsort((tie[labelled], -share, rarity))]:
            before = ((got[used] - target[used]) / total) ** 2
            after = ((got[used] + c[b] - target[used]) / total) ** 2
            new = ((got[used] == 0) & (c[b] > 0)).sum(1)
            cost = (after - before).sum(1) - new
            best = used[np.flatnonzero(cost <= cost.min() + 1e-12)]
            # ties: the group furthest below its share of all labelled pixels (the first of equals)
            g = best[0] if best.size == 1 else best[np.argmax(f[best] * total.sum() - got[best].sum(1))]
            groups[b] = g
            got[g] += c[b]
    area = np.ones(nblock) if areas is None else np.asarray(areas, dtype=float)
    empty = np.flatnonzero(groups < 0)
    have = np.bincount(groups[groups >= 0], weights=area[groups >= 0], minlength=len(f))
    for b in empty[np.argsort(tie[empty], kind="stable")]:
        deficit = f * area.sum() - have
        deficit[f == 0] = -np.inf
        g = int(np.argmax(deficit))
        groups[b] = g
        have[g] += area[b]
    return groups


def split_layout(
    shape: tuple[int, int],
    *,
    block: int,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    counts: np.ndarray | None = None,
) -> SplitLayout:
    """Assign blocks of at most ``block`` pixels to train/val/test in the given proportions.

    Without ``counts`` the number of blocks per split is rounded from the fractions (at least
    one block for every split with a non-zero fraction, when there are enough blocks), and
    which block goes where is a seeded random permutation. With ``counts`` (labelled pixels per
    block and class, :func:`block_label_counts`) the assignment is stratified by class
    (:func:`assign_blocks`): what sparse reference data needs.
    """
    f = _check_fractions(fractions)
    yedges, xedges = _edges(shape, block)
    nby, nbx = len(yedges) - 1, len(xedges) - 1
    if counts is not None:
        areas = (np.diff(yedges)[:, None] * np.diff(xedges)[None, :]).ravel()
        groups = assign_blocks(counts.reshape(nby * nbx, -1), f, seed=seed, areas=areas)
        return SplitLayout(blocks=groups.astype(np.int8).reshape(nby, nbx), yedges=yedges, xedges=xedges)
    labels = np.repeat(np.arange(3, dtype=np.int8), _area_counts(f, nby * nbx))
    rng = np.random.default_rng([seed, 0x5B11])
    return SplitLayout(blocks=rng.permutation(labels).reshape(nby, nbx), yedges=yedges, xedges=xedges)


def feature_fold_layouts(
    fid: np.ndarray,
    ref: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    shape: tuple[int, int],
    *,
    block: int,
    folds: int,
    n_classes: int,
    seed: int = 0,
) -> tuple[list[SplitLayout], np.ndarray]:
    """Spatial k-fold layouts for folds of whole reference features: each feature (``fid`` of
    every labelled pixel) counts in full for its home block, the block holding most of its
    pixels (ties: the first), and the home blocks are stratified into folds as
    :func:`fold_layouts` does; returns the layouts and the fold (0-based) of every pixel's
    feature: the fold whose test area holds its home block."""
    yedges, xedges = _edges(shape, block)
    nbx = len(xedges) - 1
    home_of_pixel = (np.searchsorted(yedges, rows, side="right") - 1) * nbx + (
        np.searchsorted(xedges, cols, side="right") - 1
    )
    table = pd.DataFrame({"fid": fid, "block": home_of_pixel})
    counts = table.groupby(["fid", "block"]).size().reset_index(name="n")
    home = counts.sort_values(["fid", "n", "block"], ascending=[True, False, True]).drop_duplicates("fid")
    home_block = home.set_index("fid")["block"].reindex(fid).to_numpy()
    per_block = np.zeros(((len(yedges) - 1) * nbx, n_classes + 1), dtype=np.int64)
    np.add.at(per_block, (home_block, ref.astype(np.int64)), 1)
    layouts = fold_layouts(per_block, shape, block=block, folds=folds, seed=seed)
    fold = np.zeros(fid.size, dtype=np.int64)
    for i, layout in enumerate(layouts):
        fold[layout.blocks.ravel()[home_block] == 2] = i
    return layouts, fold


def fold_layouts(
    counts: np.ndarray, shape: tuple[int, int], *, block: int, folds: int, seed: int = 0
) -> list[SplitLayout]:
    """Spatial k-fold cross-validation: ``folds`` layouts, fold ``i`` the test area of the i-th.

    Blocks are stratified into ``folds`` groups of equal share (:func:`assign_blocks`); in
    layout ``i`` group ``i`` is the test split, group ``i + 1`` (cyclically) the validation
    split and the others the training split, so every block is tested exactly once.
    """
    if not isinstance(folds, int) or folds < 3:
        raise InvalidInputError(
            f"folds: expected an integer >= 3 (train, validation and test), found {folds!r}."
        )
    yedges, xedges = _edges(shape, block)
    nby, nbx = len(yedges) - 1, len(xedges) - 1
    if nby * nbx < folds:
        raise InvalidInputError(
            f"folds: {folds} folds need at least {folds} blocks, the scene has {nby * nbx} of {block} "
            "pixels. Fix: a smaller --block or fewer --folds."
        )
    areas = (np.diff(yedges)[:, None] * np.diff(xedges)[None, :]).ravel()
    groups = assign_blocks(counts.reshape(nby * nbx, -1), [1 / folds] * folds, seed=seed, areas=areas)
    out = []
    for i in range(folds):
        role = np.zeros(folds, dtype=np.int8)
        role[i], role[(i + 1) % folds] = 2, 1
        out.append(SplitLayout(blocks=role[groups].reshape(nby, nbx), yedges=yedges, xedges=xedges))
    return out


def fold_layouts_of(
    cube: xr.Dataset, *, folds: int, block: int, patch: int, buffer: int = 0, seed: int = 0, n_classes: int
) -> list[SplitLayout]:
    """:func:`fold_layouts` for a cube: blocks stratified by the labelled pixels of its ``labels``."""
    shape = (cube.sizes["y"], cube.sizes["x"])
    yedges, xedges = _edges(shape, block)
    counts = block_label_counts(
        cube["labels"].data, cube["valid"].data, yedges, xedges, n_classes, margin=patch // 2 + buffer
    )
    return fold_layouts(_stratum_counts(counts), shape, block=block, folds=folds, seed=seed)


def _block_counts_chunk(
    labels: np.ndarray, valid: np.ndarray, rows, cols, yedges, xedges, nbins, margin
) -> np.ndarray:
    ry, rx = np.arange(rows[0], rows[1]), np.arange(cols[0], cols[1])
    by = np.searchsorted(yedges, ry, side="right") - 1
    bx = np.searchsorted(xedges, rx, side="right") - 1
    nbx = len(xedges) - 1
    block = (by[:, None] * nbx + bx[None, :]).ravel()
    core_y = (ry - yedges[by] >= margin) & (yedges[by + 1] - 1 - ry >= margin)
    core_x = (rx - xedges[bx] >= margin) & (xedges[bx + 1] - 1 - rx >= margin)
    lab = labels.ravel().astype(np.int64)
    ok = valid.ravel() & (lab < nbins)  # bin 0: valid pixels without a label
    core = (core_y[:, None] & core_x[None, :]).ravel()
    nblock = (len(yedges) - 1) * nbx
    size = nblock * nbins
    return np.stack(
        [
            np.bincount(block[ok] * nbins + lab[ok], minlength=size).reshape(nblock, nbins),
            np.bincount(block[ok & core] * nbins + lab[ok & core], minlength=size).reshape(nblock, nbins),
        ]
    )


def block_label_counts(
    labels: da.Array,
    valid: da.Array,
    yedges: np.ndarray,
    xedges: np.ndarray,
    n_classes: int,
    *,
    margin: int = 0,
) -> np.ndarray:
    """Valid pixels per block and class, ``(2, n_blocks, n_classes + 1)``, in one pass (column 0:
    valid but unlabelled): ``[0]`` all of them, ``[1]`` those at least ``margin`` pixels inside
    their block (a window around them fits in the block whatever split its neighbours get)."""
    valid = valid.rechunk(labels.chunks)
    tasks = []
    r0 = 0
    for i, ch in enumerate(labels.chunks[0]):
        c0 = 0
        for j, cw in enumerate(labels.chunks[1]):
            tasks.append(
                dask.delayed(_block_counts_chunk, pure=True)(
                    labels.blocks[i, j],
                    valid.blocks[i, j],
                    (r0, r0 + ch),
                    (c0, c0 + cw),
                    yedges,
                    xedges,
                    n_classes + 1,
                    margin,
                )
            )
            c0 += cw
        r0 += ch
    return sum(compute(*tasks))


SPARSE_SHARE = 0.5  # labels are sparse when under this share of the valid pixels is labelled


def _stratified(stratify: bool | None, counts: np.ndarray) -> bool:
    """``stratify``, or (``None``) whether under half of the valid pixels are labelled."""
    if stratify is not None:
        return stratify
    labelled, n_valid = int(counts[:, 1:].sum()), int(counts.sum())
    log.info("%d of %d valid pixels labelled", labelled, n_valid)
    return labelled < SPARSE_SHARE * n_valid


def _stratum_counts(counts: np.ndarray) -> np.ndarray:
    """Pixels to stratify by: the block cores', or all a class has where its cores hold none."""
    all_, core = counts
    return np.where(core.sum(0, keepdims=True) > 0, core, all_)


def _box_sum(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Sum over every ``size`` window of ``a`` (windows fully inside ``a``): shape shrinks."""
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(a, axis=0, dtype=np.int64), axis=1, out=s[1:, 1:])
    h, w = size
    return s[h:, w:] - s[:-h, w:] - s[h:, :-w] + s[:-h, :-w]


def _chunk_candidates(
    labels_parts: list,
    valid_parts: list,
    origin: tuple[int, int],
    core: tuple[int, int, int, int],
    *,
    patch: int,
    max_invalid: int,
    buffer: int,
    layout: SplitLayout,
    n_classes: int,
    per_class: int,
    seed: int,
) -> dict:
    """Eligible counts and the ``per_class`` lowest-priority centres of one chunk.

    ``labels``/``valid`` cover the chunk plus a halo of ``patch // 2 + buffer`` pixels (clipped at
    the scene border); ``origin`` is their top-left global pixel; ``core`` = (r0, r1, c0, c1) is
    the chunk itself in global pixels.
    """
    labels, valid = assemble(labels_parts), assemble(valid_parts)
    r0, r1, c0, c1 = core
    half = patch // 2
    oy, ox = origin
    h, w = labels.shape
    # candidate centres (global): the window rows [r - half, r - half + patch) must fit in the halo
    # region, which equals fitting in the scene where the halo is clipped by the border
    ys = np.arange(max(r0, oy + half + buffer), min(r1, oy + h - (patch - half) - buffer + 1))
    xs = np.arange(max(c0, ox + half + buffer), min(c1, ox + w - (patch - half) - buffer + 1))
    core_labels = labels[r0 - oy : r1 - oy, c0 - ox : c1 - ox].ravel()
    out: dict = {
        "counts": np.zeros((3, n_classes + 1), dtype=np.int64),
        "present": np.bincount(core_labels[core_labels <= n_classes], minlength=n_classes + 1),
        "cands": [],
    }
    if ys.size == 0 or xs.size == 0:
        return out
    invalid = _box_sum(~valid, (patch, patch))  # index [i, j] = window with top-left (oy+i, ox+j)
    inv = invalid[np.ix_(ys - half - oy, xs - half - ox)]
    lab = labels[np.ix_(ys - oy, xs - ox)].astype(np.int64)
    ok_valid = inv <= max_invalid
    # the window grown by the buffer must lie in blocks of a single split
    smap = layout.split_map(slice(oy, oy + h), slice(ox, ox + w))
    span = patch + 2 * buffer
    for s in range(3):
        inside = _box_sum(smap == s, (span, span)) == span * span
        ok = inside[np.ix_(ys - half - buffer - oy, xs - half - buffer - ox)] & ok_valid & (lab > 0)
        if not ok.any():
            continue
        ii, jj = np.nonzero(ok)
        cls = lab[ii, jj]
        out["counts"][s] += np.bincount(cls, minlength=n_classes + 1)
        gy, gx = ys[ii], xs[jj]
        for k in np.unique(cls):
            sel = cls == k
            keys = hash_u64(gy[sel], gx[sel], _key(seed, s, int(k)))
            order = np.lexsort((gx[sel], gy[sel], keys))[:per_class]
            out["cands"].append((s, int(k), keys[order], gy[sel][order], gx[sel][order]))
    return out


def _key(seed: int, split: int, class_id: int) -> int:
    return (seed * 1_000_003 + split * 1009 + class_id) * 0x2545F4914F6CDD1D


@dataclass(frozen=True)
class Draw:
    """What :func:`draw_centres` decided: the manifest, the split layout and the per-class table."""

    manifest: pd.DataFrame
    layout: SplitLayout
    table: pd.DataFrame


def sample_centres(cube: xr.Dataset, **kw) -> pd.DataFrame:
    """The manifest of :func:`draw_centres` (same parameters)."""
    return draw_centres(cube, **kw).manifest


def split_table(
    labelled: np.ndarray, patches: np.ndarray, legend: Legend, fractions: Sequence[float]
) -> pd.DataFrame:
    """Labelled pixels and patches per class and split, with a note where a class misses a split."""
    rows = []
    for k in np.flatnonzero(labelled.sum(0)[1:]) + 1:
        notes = []
        for s, split in enumerate(SPLITS):
            if fractions[s] == 0:
                continue
            if labelled[s, k] == 0:
                notes.append(f"no labelled pixel in the {split} area")
            elif patches[s, k] == 0:
                notes.append(
                    f"{split}: no window fits around its {labelled[s, k]} pixels (border, nodata, split edge)"
                )
        rows.append(
            {"class_id": int(k), "class": legend.name_of(int(k))}
            | {f"labelled_{sp}": int(labelled[s, k]) for s, sp in enumerate(SPLITS)}
            | {f"patches_{sp}": int(patches[s, k]) for s, sp in enumerate(SPLITS)}
            | {"note": "; ".join(notes)}
        )
    return pd.DataFrame(rows)


def format_split_table(table: pd.DataFrame) -> str:
    """The table as text: labelled pixels / patches per split, one line per class."""
    head = f"{'class':<28}" + "".join(f"{sp + ' pixels / patches':>26}" for sp in SPLITS)
    lines = [head + "  note"]
    for r in table.to_dict("records"):
        cells = "".join(f"{r['labelled_' + sp]:>16,} / {r['patches_' + sp]:<7}" for sp in SPLITS)
        lines.append(
            f"{r['class_id']:>2} {r['class'][:25]:<25}" + cells + (f"  {r['note']}" if r["note"] else "")
        )
    return "\n".join(lines)


def _check_window(cube: xr.Dataset, per_class: int, patch: int, max_nodata: float, buffer: int) -> None:
    if not isinstance(per_class, int) or per_class < 1:
        raise InvalidInputError(f"per_class: expected an integer >= 1, found {per_class!r}.")
    if not isinstance(patch, int) or patch < 2:
        raise InvalidInputError(f"patch: expected an integer >= 2, found {patch!r}.")
    if not 0 <= max_nodata <= 1:
        raise InvalidInputError(f"max_nodata: expected a fraction in [0, 1], found {max_nodata!r}.")
    if buffer < 0:
        raise InvalidInputError(f"buffer: expected >= 0 pixels, found {buffer}.")
    height, width = cube.sizes["y"], cube.sizes["x"]
    if patch + 2 * buffer > min(height, width):
        raise InvalidInputError(
            f"patch: a {patch} x {patch} window (plus buffer {buffer}) does not fit in the "
            f"{height} x {width} scene. Fix: use a smaller --patch."
        )


def _candidate_tasks(
    labels: da.Array,
    valid: da.Array,
    layout: SplitLayout,
    *,
    patch: int,
    max_nodata: float,
    buffer: int,
    n_classes: int,
    per_class: int,
    seed: int,
) -> list[Any]:
    """One task per chunk of the labels: the chunk's eligible centres (read with a halo)."""
    height, width = labels.shape
    grids = BlockGrid(labels), BlockGrid(valid)
    halo = patch // 2 + patch % 2 + buffer + 1
    max_invalid = int(np.floor(max_nodata * patch * patch + 1e-9))
    tasks = []
    for (r0, r1), (c0, c1) in itertools.product(*(_spans(c) for c in labels.chunks)):
        ya, yb = max(r0 - halo, 0), min(r1 + halo, height)
        xa, xb = max(c0 - halo, 0), min(c1 + halo, width)
        tasks.append(
            dask.delayed(_chunk_candidates, pure=True)(
                *[g.parts(slice(ya, yb), slice(xa, xb)) for g in grids],
                (ya, xa),
                (r0, r1, c0, c1),
                patch=patch,
                max_invalid=max_invalid,
                buffer=buffer,
                layout=layout,
                n_classes=n_classes,
                per_class=per_class,
                seed=seed,
            )
        )
    return tasks


def _spans(chunks: Sequence[int]) -> list[tuple[int, int]]:
    ends = np.cumsum([0, *chunks])
    return [(int(a), int(b)) for a, b in itertools.pairwise(ends)]


def _pick(
    results: Sequence[Mapping[str, Any]], legend: Legend, per_class: int, fr: Sequence[float]
) -> list[tuple]:
    """The ``per_class`` centres with the smallest keys per split and class (warning for a class
    with fewer eligible centres)."""
    counts = sum(r["counts"] for r in results)
    present = np.flatnonzero(sum(r["present"] for r in results)[1:]) + 1
    rows: list[tuple[str, int, int, int]] = []
    for s, split in enumerate(SPLITS):
        short = [(int(k), int(counts[s, k])) for k in present if counts[s, k] < per_class]
        if short and fr[s] > 0:
            warnings.warn(
                f"{split} split: fewer eligible centres than per_class={per_class} for "
                + ", ".join(f"class {k} '{legend.name_of(k)}' ({c})" for k, c in short)
                + "; all of them are used.",
                UserWarning,
                stacklevel=3,
            )
        for k in range(1, legend.n_classes + 1):
            cands = [c for r in results for c in r["cands"] if c[0] == s and c[1] == k]
            if not cands:
                continue
            keys, ys, xs = (np.concatenate([c[i] for c in cands]) for i in (2, 3, 4))
            order = np.lexsort((xs, ys, keys))[:per_class]
            rows.extend((split, k, int(y), int(x)) for y, x in zip(ys[order], xs[order], strict=True))
    if not rows:
        raise NoWindowError(
            "no eligible patch centre in any class: every window of this size crosses nodata, "
            "the scene border or a split boundary, or the labels hold no class. Fix: a smaller "
            "--patch, a larger --max-nodata or a larger split --block."
        )
    log.info("sampled %d centres for %d classes present", len(rows), len(present))
    return rows


def draw_centres(
    cube: xr.Dataset,
    *,
    per_class: int = 20,
    patch: int = 128,
    seed: int = 0,
    max_nodata: float = 0.0,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    block: int | None = None,
    buffer: int = 0,
    legend: Legend | None = None,
    stratify: bool | None = None,
    layout: SplitLayout | None = None,
) -> Draw:
    """Draw ``per_class`` patch centres for every class present, in each spatial split.

    Parameters
    ----------
    cube
        Dataset with ``labels`` (training ids) and ``valid`` on one grid (e.g. :func:`open_cube`).
    per_class
        Centres per class and split. A class with fewer eligible pixels in a split gets all of
        them, with a warning naming it and the count.
    patch
        Window edge in pixels; the window of centre (r, c) is rows ``r - patch // 2`` to
        ``r - patch // 2 + patch`` (likewise for columns) and must lie inside the scene.
    seed
        Seeds the split layout and the draw: same seed, same centres, whatever the chunking.
    max_nodata
        Largest allowed fraction of invalid pixels in a window (0 = none).
    fractions
        Train, validation and test shares of the scene's blocks.
    block
        Edge of the split blocks in pixels (default ``4 * patch``).
    stratify
        ``True``: assign blocks to splits by their labelled pixels per class
        (:func:`assign_blocks`), so that sparse labels still reach every split; ``False``: a
        random permutation of blocks in the area fractions (contiguous areas, what wall-to-wall
        labels need: fewer split edges, more windows fit); ``None`` (default): stratified when
        fewer than half of the valid pixels are labelled.
    layout
        Use this split layout (e.g. one fold of :func:`fold_layouts`) instead of making one.
    buffer
        Extra pixels around each window that must also lie in its split's area. Windows always
        lie wholly inside their split's area, so patches of different splits never share a pixel.

    Returns
    -------
    Draw
        The manifest (one row per patch), the layout, and the table of labelled pixels and
        patches per class and split (:func:`split_table`).
    """
    legend = legend or cube_legend(cube)
    _check_window(cube, per_class, patch, max_nodata, buffer)
    height, width = cube.sizes["y"], cube.sizes["x"]
    labels, valid = (
        a if isinstance(a, da.Array) else da.from_array(np.asarray(a), chunks=1024)
        for a in (cube["labels"].data, cube["valid"].data)
    )
    valid = valid.rechunk(labels.chunks)
    n = legend.n_classes
    if layout is None:
        yedges, xedges = _edges((height, width), 4 * patch if block is None else block)
        per_block = block_label_counts(labels, valid, yedges, xedges, n, margin=patch // 2 + buffer)
        layout = split_layout(
            (height, width),
            block=4 * patch if block is None else block,
            fractions=fractions,
            seed=seed,
            counts=_stratum_counts(per_block) if _stratified(stratify, per_block[0]) else None,
        )
    else:
        per_block = block_label_counts(labels, valid, layout.yedges, layout.xedges, n)
    labelled = np.zeros((3, n + 1), dtype=np.int64)
    np.add.at(labelled, layout.blocks.ravel(), per_block[0])
    tasks = _candidate_tasks(
        labels,
        valid,
        layout,
        patch=patch,
        max_nodata=max_nodata,
        buffer=buffer,
        n_classes=n,
        per_class=per_class,
        seed=seed,
    )
    fr = _check_fractions(fractions)
    rows = _pick(compute(*tasks), legend, per_class, fr)
    manifest = _manifest(rows, cube, legend, patch=patch, seed=seed)
    drawn = np.zeros((3, n + 1), dtype=np.int64)
    split_index = manifest["split"].map({s: i for i, s in enumerate(SPLITS)}).to_numpy()
    np.add.at(drawn, (split_index, manifest["class_id"].to_numpy()), 1)
    return Draw(manifest, layout, split_table(labelled, drawn, legend, fr))


def _manifest(rows, cube: xr.Dataset, legend: Legend, *, patch: int, seed: int) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["split", "class_id", "row", "col"])
    df["split"] = pd.Categorical(df["split"], categories=list(SPLITS))
    # patch ids follow fixed 1024-pixel tiles, so that neighbouring patches get neighbouring ids
    # (the patch store then writes runs of them at once), whatever the cube's chunking
    df["tile_y"], df["tile_x"] = df["row"] // ORDER_TILE, df["col"] // ORDER_TILE
    df = df.sort_values(["split", "tile_y", "tile_x", "row", "col"], kind="stable").reset_index(drop=True)
    df["split"] = df["split"].astype(str)
    tr = cube.rio.transform()
    half = patch // 2
    out = pd.DataFrame(
        {
            "patch_id": np.arange(len(df), dtype=np.int64),
            "split": df["split"],
            "class_id": df["class_id"].astype(np.int64),
            "class_name": [legend.name_of(k) for k in df["class_id"]],
            "code": [legend.values[k - 1] for k in df["class_id"]],
            "row": df["row"],
            "col": df["col"],
            "x": tr.c + (df["col"] + 0.5) * tr.a,
            "y": tr.f + (df["row"] + 0.5) * tr.e,
            "row_start": df["row"] - half,
            "row_stop": df["row"] - half + patch,
            "col_start": df["col"] - half,
            "col_stop": df["col"] - half + patch,
            "seed": seed,
        }
    )
    return out


def write_manifest(manifest: pd.DataFrame, path: str | Path) -> Any:
    """Save a manifest as CSV, or Parquet when the path ends in ``.parquet``; atomically."""
    target = as_location(path)
    if target.suffix == ".parquet":
        return write_atomic(target, lambda tmp: manifest.to_parquet(tmp, index=False))
    return write_atomic(target, lambda tmp: manifest.to_csv(tmp, index=False, float_format="%.10g"))


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest`."""
    data = io.BytesIO(product_bytes(path, Kind.MANIFEST))
    return pd.read_parquet(data) if as_location(path).suffix == ".parquet" else pd.read_csv(data)
