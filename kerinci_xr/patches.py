"""The patch store: windows cut from a cube into Zarr, one patch per chunk, with the manifest.

Patches are grouped by the cube chunk that holds their centre, and every group is one dask
task that cuts all its windows from one read of its region, so a cube chunk is read once per
run however many patches it feeds. Tasks write their patches straight into the store, which
is built in a temporary sibling and renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ._chunks import BlockGrid, cut_windows
from ._locations import Location, as_location
from ._outputs import atomic_store
from ._products import Kind
from .cluster import compute
from .cube import open_store
from .errors import InvalidInputError, RasterReadError
from .sampling import SPLITS, SplitLayout, split_layout

__all__ = ["band_stats", "manifest_of", "open_patches", "stored_layout", "window_pixels", "write_patches"]

#: Patches per chunk of ``labels`` and ``valid`` (the image has one patch per chunk).
LABEL_CHUNK = 64
MANIFEST_VARS = ("split", "class_id", "code", "row", "col", "x", "y", "row_start", "col_start", "seed")


def _cut_group(
    image_parts: list,
    labels_parts: list,
    valid_parts: list,
    origin: tuple[int, int],
    items: np.ndarray,
    store: Any,
    patch: int,
) -> tuple:
    """Cut the windows of one group from its chunks and write them; return per-split stats (and
    an Icechunk store's fork session, holding what this task wrote, for the client to merge)."""
    import zarr

    oy, ox = origin
    starts = items[:, 1:3] - np.array([oy, ox])
    wins = cut_windows(image_parts, starts, patch)
    labs = cut_windows(labels_parts, starts, patch)
    oks = cut_windows(valid_parts, starts, patch)
    zi = zarr.open_group(store, mode="r+")["image"]
    n, nb = len(items), wins.shape[1]
    stats = np.zeros((3, 3, nb), dtype=np.float64)  # split, (count, sum, sumsq), band
    for i, split in enumerate(items[:, 3]):
        vals = wins[i][:, oks[i]]
        stats[split, 0] += vals.shape[1]
        stats[split, 1] += vals.sum(axis=1, dtype=np.float64)
        stats[split, 2] += np.square(vals, dtype=np.float64).sum(axis=1)
    # one zarr call per run of consecutive patch ids (ids follow space, see sampling.ORDER_TILE)
    ids = items[:, 0]
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    for a, b in zip(np.r_[0, breaks], np.r_[breaks, n], strict=True):
        zi[int(ids[a]) : int(ids[b - 1]) + 1] = wins[a:b]
    # labels and valid are 1/32 of the image's bytes: they go back to the caller, which writes
    # them in large chunks (per-patch chunks of 16 KiB cost as much to write as the image)
    return stats, ids, labs, oks, getattr(store, "session", None)


def band_stats(stats: np.ndarray, split: int = 0) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation from accumulated (count, sum, sumsq)."""
    n, s, ss = stats[split]
    if not (n > 0).all():
        raise InvalidInputError(
            f"no valid pixel in the {SPLITS[split]} split's patches: band statistics are undefined."
        )
    mean = s / n
    std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
    return mean.tolist(), np.where(std > 0, std, 1.0).tolist()


def write_patches(
    cube: xr.Dataset,
    manifest: pd.DataFrame,
    path: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = False,
    attrs: dict[str, Any] | None = None,
) -> Location:
    """Extract the manifest's windows from the cube into a Zarr patch store.

    The store has ``image`` (patch, band, y, x) float32, ``labels`` (patch, y, x) uint8 and
    ``valid`` (patch, y, x) bool, one patch per chunk, the manifest columns as ``patch``
    variables, and in attrs the legend, the patch size, the seed and the per-band mean and
    standard deviation of the training split's valid pixels (``band_mean``, ``band_std``).
    """
    import zarr
    from zarr.codecs import BloscCodec

    if len(manifest) == 0:
        raise InvalidInputError("the manifest is empty: there are no patches to extract.")
    sizes = (manifest["row_stop"] - manifest["row_start"]).unique()
    if len(sizes) != 1:
        raise InvalidInputError(f"the manifest mixes window sizes {sorted(sizes)}; expected one.")
    patch = int(sizes[0])
    h, w = cube.sizes["y"], cube.sizes["x"]
    if (
        manifest["row_start"].min() < 0
        or manifest["col_start"].min() < 0
        or manifest["row_stop"].max() > h
        or manifest["col_stop"].max() > w
    ):
        raise InvalidInputError(f"the manifest has windows outside the {h} x {w} cube.")
    n, nb = len(manifest), cube.sizes["band"]
    image, labels, valid = cube["image"].data, cube["labels"].data, cube["valid"].data
    image = image if isinstance(image, da.Array) else da.from_array(image, chunks=(-1, 1024, 1024))
    labels = labels if isinstance(labels, da.Array) else da.from_array(labels, chunks=image.chunks[1:])
    valid = valid if isinstance(valid, da.Array) else da.from_array(valid, chunks=image.chunks[1:])
    # template: metadata and the manifest variables now, the patches by the tasks below
    ids = manifest["patch_id"].to_numpy()
    if not np.array_equal(ids, np.arange(n)):
        raise InvalidInputError("manifest patch_id must be 0..n-1 in order (as sample_centres writes).")
    data_vars: dict[str, Any] = {
        "image": (
            ("patch", "band", "y", "x"),
            da.zeros((n, nb, patch, patch), chunks=(1, nb, patch, patch), dtype=np.float32),
        ),
        "labels": (
            ("patch", "y", "x"),
            da.zeros((n, patch, patch), chunks=(LABEL_CHUNK, patch, patch), dtype=np.uint8),
        ),
        "valid": (
            ("patch", "y", "x"),
            da.zeros((n, patch, patch), chunks=(LABEL_CHUNK, patch, patch), dtype=bool),
        ),
    }
    for col in MANIFEST_VARS:
        values = manifest[col].to_numpy()
        data_vars[col] = ("patch", values.astype(object) if col == "split" else values)
    data_vars["class_name"] = ("patch", manifest["class_name"].to_numpy().astype(object))
    template = xr.Dataset(
        data_vars,
        coords={"patch": ids, "band": np.array([str(b) for b in cube["band"].values], dtype=object)},
    )
    template.attrs = {
        "title": "kerinci_xr patch store",
        "legend": cube.attrs.get("legend", ""),
        "band_roles": cube.attrs.get("band_roles", "{}"),
        "patch": patch,
        "seed": int(manifest["seed"].iloc[0]),
        "crs_wkt": cube.rio.crs.to_wkt() if cube.rio.crs else "",
        "transform": list(cube.rio.transform())[:6],
        **(attrs or {}),
    }
    # lz4: the store is a training cache, read every epoch; it decodes 1.5x and encodes 1.7x
    # faster than zstd for about 7 % more bytes
    blosc = (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)
    enc = {v: {"compressors": blosc} for v in ("image", "labels", "valid")}
    split_idx = manifest["split"].map({s: i for i, s in enumerate(SPLITS)}).to_numpy()
    items = np.stack(
        [ids, manifest["row_start"].to_numpy(), manifest["col_start"].to_numpy(), split_idx], axis=1
    ).astype(np.int64)
    # group by the cube chunk that holds the centre
    ybounds = np.cumsum((0, *image.chunks[1]))
    xbounds = np.cumsum((0, *image.chunks[2]))
    gy = np.searchsorted(ybounds, manifest["row"].to_numpy(), side="right") - 1
    gx = np.searchsorted(xbounds, manifest["col"].to_numpy(), side="right") - 1
    with atomic_store(path, overwrite=overwrite) as target:
        local = isinstance(target, Path)
        if local:
            store: Any = str(target)
            template.to_zarr(
                target, mode="w-", zarr_format=3, consolidated=False, compute=False, encoding=enc
            )
        else:  # an Icechunk repository: the metadata first, then each task writes into a fork
            session = target.session()
            template.to_zarr(
                session.store, mode="w", zarr_format=3, consolidated=False, compute=False, encoding=enc
            )
            target.commit(session, "metadata")
            session, fork = target.forked()
            store = fork.store
        grids = [BlockGrid(a) for a in (image, labels, valid)]
        tasks = []
        for key in sorted(set(zip(gy.tolist(), gx.tolist(), strict=True))):
            sel = (gy == key[0]) & (gx == key[1])
            its = items[sel]
            its = its[np.argsort(its[:, 0], kind="stable")]
            y0, y1 = its[:, 1].min(), its[:, 1].max() + patch
            x0, x1 = its[:, 2].min(), its[:, 2].max() + patch
            region = (slice(int(y0), int(y1)), slice(int(x0), int(x1)))
            tasks.append(
                dask.delayed(_cut_group, pure=True)(
                    *[g.parts(*region) for g in grids], (int(y0), int(x0)), its, store, patch
                )
            )
        results = compute(*tasks, progress=progress)
        if not local:
            target.merge(session, [r[4] for r in results], "patches")
            session = target.session()
        group = zarr.open_group(str(target) if local else session.store, mode="r+")
        order = np.concatenate([r[1] for r in results])
        labs = np.empty((n, patch, patch), dtype=np.uint8)
        oks = np.empty((n, patch, patch), dtype=bool)
        labs[order] = np.concatenate([r[2] for r in results])
        oks[order] = np.concatenate([r[3] for r in results])
        group["labels"][:] = labs
        group["valid"][:] = oks
        stats = sum(r[0] for r in results)
        attrs_update: dict[str, Any] = {"n_patches": n}
        if stats[0, 0].sum() > 0:
            mean, std = band_stats(stats, 0)
            attrs_update |= {"band_mean": mean, "band_std": std, "band_stats_split": "train"}
        attrs_update["split_counts"] = {s: int((split_idx == i).sum()) for i, s in enumerate(SPLITS)}
        group.attrs.update(attrs_update)
        if not local:
            target.commit(session, "labels and statistics")
    return as_location(path)


def open_patches(path: str | os.PathLike) -> xr.Dataset:
    """Open a patch store lazily (one dask chunk per patch)."""
    ds = open_store(path, Kind.PATCHES, require="image")
    if "patch" not in ds.attrs:
        raise RasterReadError(f"{path}: expected a patch store written by kerinci-xr sample.")
    return ds


def manifest_of(ds: xr.Dataset) -> pd.DataFrame:
    """The manifest stored in a patch store (one row per patch)."""
    cols = {c: ds[c].values for c in (*MANIFEST_VARS, "class_name")}
    df = pd.DataFrame({"patch_id": ds["patch"].values, **cols})
    p = int(ds.attrs["patch"])
    df["row_stop"] = df["row_start"] + p
    df["col_stop"] = df["col_start"] + p
    return df


def stored_layout(patches: str | Path | xr.Dataset, shape: tuple[int, int]) -> SplitLayout:
    """The split layout a patch store was sampled with (to evaluate a scene per split area)."""
    ds = patches if isinstance(patches, xr.Dataset) else open_patches(patches)
    split = ds.attrs.get("split")
    if not split:
        raise InvalidInputError(f"{patches}: the patch store records no split layout.")
    if "blocks" in split:  # as drawn (a stratified layout depends on the labels)
        layout = SplitLayout(
            blocks=np.asarray(split["blocks"], dtype=np.int8),
            yedges=np.asarray(split["yedges"], dtype=np.int64),
            xedges=np.asarray(split["xedges"], dtype=np.int64),
        )
        if (int(layout.yedges[-1]), int(layout.xedges[-1])) != tuple(shape):
            raise InvalidInputError(
                f"{patches}: the store was sampled from a {int(layout.yedges[-1])} x "
                f"{int(layout.xedges[-1])} scene, not this {shape[0]} x {shape[1]} one. "
                "Fix: pass the patch store of this cube."
            )
        return layout
    return split_layout(
        shape, block=int(split["block"]), fractions=split["fractions"], seed=int(split["seed"])
    )


def window_pixels(store: xr.Dataset, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labelled, valid pixels of a patch store's ``split`` patches, each scene pixel once:
    global rows, columns and reference training ids (the pixels the U-Net is scored on)."""
    pick = np.flatnonzero(np.array([str(s) for s in store["split"].values]) == split)
    if pick.size == 0:
        raise InvalidInputError(f"the patch store has no {split} patches.")
    labels = store["labels"].values[pick]
    valid = store["valid"].values[pick]
    r0 = store["row_start"].values[pick].astype(np.int64)
    c0 = store["col_start"].values[pick].astype(np.int64)
    k, r, c = np.nonzero((labels > 0) & valid)
    rows, cols = r + r0[k], c + c0[k]
    key = (rows << 32) | cols
    _, first = np.unique(key, return_index=True)
    return rows[first], cols[first], labels[k, r, c][first]
