"""From patch stores and cubes to tensors: xbatcher generators and the fast patch loader.

:class:`PatchDataset` is a ``torch.utils.data.Dataset`` of TorchGeo-style samples
(``{"image", "mask", "bounds", "crs"}``) that works with a plain ``DataLoader``; :func:`make_loader`
is the fast path over the same dataset: it reads a whole batch with one zarr call (no dask graph
per patch), normalises it with :func:`kerinci_xr.checkpoint.normalize` and applies seeded
dihedral augmentation (flips and 90-degree rotations) to image and mask together.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, Dataset

from ._hashing import hash_u64
from ._products import zarr_store
from .checkpoint import normalize
from .errors import InvalidInputError, RasterReadError
from .patches import open_patches
from .sampling import SPLITS

__all__ = [
    "EpochSampler",
    "GlobalBatches",
    "PatchDataset",
    "Sample",
    "dihedral",
    "grid_batches",
    "make_loader",
    "patch_batches",
]


def patch_batches(store: str | Path | xr.Dataset, *, split: str = "train", batch_size: int = 16):
    """An ``xbatcher.BatchGenerator`` over one split of a patch store (lazy, one batch at a time)."""
    import xbatcher

    ds = open_patches(store) if not isinstance(store, xr.Dataset) else store
    ds = ds[["image", "labels", "valid"]].isel(patch=np.flatnonzero(ds["split"].values == split))
    p = int(ds.sizes["y"])
    return xbatcher.BatchGenerator(
        ds,
        input_dims={"band": ds.sizes["band"], "y": p, "x": p},
        batch_dims={"patch": batch_size},
        preload_batch=False,
    )


def grid_batches(cube: xr.Dataset | xr.DataArray, *, patch: int = 128, overlap: int = 0):
    """An ``xbatcher.BatchGenerator`` of exhaustive ``patch`` x ``patch`` tiles over a cube."""
    import xbatcher

    if not 0 <= overlap < patch:
        raise InvalidInputError(f"overlap: expected 0 <= overlap < patch ({patch}), found {overlap}.")
    obj = cube[["image", "valid"]] if isinstance(cube, xr.Dataset) else cube
    dims = {"band": obj.sizes["band"]} if "band" in obj.dims else {}
    return xbatcher.BatchGenerator(
        obj,
        input_dims={**dims, "y": patch, "x": patch},
        input_overlap={"y": overlap, "x": overlap},
        preload_batch=False,
    )


def dihedral(x: np.ndarray, t: int) -> np.ndarray:
    """Element ``t`` (0..7) of the dihedral group on the last two axes: ``t % 4`` quarter turns,
    then a left-right flip if ``t >= 4``."""
    out = np.rot90(x, t % 4, axes=(-2, -1))
    return out[..., ::-1] if t >= 4 else out


def _dihedral_t(x, t: int):
    """:func:`dihedral` for torch tensors (returns a strided view where it can)."""
    out = torch.rot90(x, t % 4, dims=(-2, -1))
    return out.flip(-1) if t >= 4 else out


class EpochSampler:
    """Yields patch indices for one epoch, tagged with the epoch (``epoch * n + index``).

    Shuffling is a seeded permutation per epoch, so the order, and the augmentation that
    :class:`PatchDataset` derives from the tag, are the same whatever ``num_workers``.
    """

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0) -> None:
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            if self.shuffle
            else np.arange(self.n)
        )
        return iter((self.epoch * self.n + order).tolist())


class GlobalBatches:
    """The patches of one process for an epoch, batch after batch: the epoch's seeded permutation
    cut into global batches of ``batch_size``, each split evenly across the ``world`` processes
    (``rank``'s part; a ``DataLoader`` with ``batch_size // world`` groups them back into parts).

    Every process draws the same permutation, so in each epoch the processes' parts are disjoint
    and together hold every patch once; the number of steps, and so the learning-rate schedule,
    is that of one process with the same global batch. Indices carry the epoch tag of
    :class:`EpochSampler` (``epoch * n + index``: the augmentation follows the patch, not the
    process). With ``drop_small``, a last global batch that would leave some process fewer than 2
    patches is dropped by all (batch norm cannot normalise one value per channel).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        drop_small: bool = False,
    ) -> None:
        if batch_size < 1 or world < 1 or not 0 <= rank < world:
            raise InvalidInputError(
                f"batches: expected a batch >= 1 and 0 <= rank < world, found {batch_size}, {rank}, {world}."
            )
        if batch_size % world:
            raise InvalidInputError(
                f"--batch-size {batch_size} is the global batch and must divide evenly among the {world} "
                f"processes. Fix: a multiple of {world} (e.g. {batch_size + world - batch_size % world})."
            )
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world, self.drop_small, self.epoch = rank, world, drop_small, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[np.ndarray]:
        """The epoch's global batches (split indices), the same in every process."""
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            if self.shuffle
            else np.arange(self.n)
        )
        out = [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        if self.drop_small and out and len(out[-1]) < 2 * self.world and self.n > 1:
            out.pop()
        return out

    def parts(self) -> list[np.ndarray]:
        """This process's part of each global batch."""
        return [np.array_split(b, self.world)[self.rank] for b in self.batches()]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts())

    def __iter__(self) -> Iterator[int]:
        for part in self.parts():
            yield from (self.epoch * self.n + part).tolist()


Sample = dict[str, Any]
"""A TorchGeo-style sample: ``image`` float32 ``[band, y, x]`` (a batch adds a leading dim),
``mask`` int64 ``[y, x]``, ``bounds`` float64 ``[4]`` (minx, miny, maxx, maxy in the CRS) and
``crs`` (WKT)."""


class PatchDataset(Dataset):
    """A ``torch.utils.data.Dataset`` over one split of a patch store.

    Items are TorchGeo-style dicts (:data:`Sample`): ``image`` float32 ``(band, y, x)``
    normalised with the training statistics (invalid pixels 0), ``mask`` int64 ``(y, x)``
    training ids (0 where invalid, ignored by the loss), the window's ``bounds`` and ``crs``.
    It works with a plain ``DataLoader`` (any ``num_workers``); :func:`make_loader` is the fast
    path that reads whole batches at once. Indices may carry an epoch tag
    (``epoch * len + i``, see :class:`EpochSampler`) that seeds the augmentation.

    Parameters
    ----------
    store
        Patch store path (``kerinci-xr sample`` output).
    split
        ``"train"``, ``"val"`` or ``"test"``.
    augment
        Apply a random dihedral transform per patch, seeded by (seed, epoch, patch).
    cache
        Keep the split's patches in memory after the first read: ``"auto"`` does when they take
        at most 2 GiB. Otherwise every batch is read with one zarr call.
    stats
        ``(mean, std)`` per band to normalise with (a checkpoint's, see
        :func:`kerinci_xr.checkpoint.band_stats_of`); default: the store's training statistics.
    normalize
        ``False`` returns the stored values unchanged (invalid pixels still 0).
    """

    def __init__(
        self,
        store: str | Path,
        *,
        split: str = "train",
        augment: bool = False,
        seed: int = 0,
        cache: bool | str = "auto",
        stats: tuple[np.ndarray, np.ndarray] | None = None,
        normalize: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise InvalidInputError(f"split: expected one of {SPLITS}, found {split!r}.")
        ds = open_patches(store)
        self.path = str(store)
        self.split, self.augment, self.seed, self.normalize = split, augment, seed, normalize
        self.index = np.flatnonzero(ds["split"].values == split)
        if self.index.size == 0:
            raise InvalidInputError(f"{store}: the {split} split has no patches.")
        self.bands = [str(b) for b in ds["band"].values]
        self.patch = int(ds.attrs["patch"])
        nb = len(self.bands)
        if stats is None:
            if normalize and "band_mean" not in ds.attrs:
                raise InvalidInputError(f"{store}: no band statistics (the store has no training patches).")
            stats = (ds.attrs.get("band_mean", [0.0] * nb), ds.attrs.get("band_std", [1.0] * nb))
        self.mean = np.asarray(stats[0], dtype=np.float32).reshape(nb, 1, 1)
        self.std = np.asarray(stats[1], dtype=np.float32).reshape(nb, 1, 1)
        a, _, c, _, e, f = (float(v) for v in ds.attrs["transform"][:6])
        p = self.patch
        r0, c0 = ds["row_start"].values[self.index], ds["col_start"].values[self.index]
        self.starts = np.stack([r0, c0], axis=1).astype(np.int64)  # window origin in the scene
        ys = np.stack([f + (r0 + p) * e, f + r0 * e])
        self.bounds = np.stack([c + c0 * a, ys.min(0), c + (c0 + p) * a, ys.max(0)], axis=1)
        self.crs = str(ds.attrs.get("crs_wkt", ""))
        nbytes = self.index.size * nb * self.patch * self.patch * 4
        self.cache = nbytes <= 2 * 2**30 if cache == "auto" else bool(cache)
        self._arrays: Any = None
        self._cached: Any = None

    def __len__(self) -> int:
        return int(self.index.size)

    def __repr__(self) -> str:
        return (
            f"PatchDataset({self.path!r}, split={self.split!r}, patches={len(self)}, "
            f"bands={self.bands}, patch={self.patch}, augment={self.augment})"
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = None  # zarr handles are reopened in each worker process
        return state

    def _open(self):
        if self._arrays is None:
            import zarr

            g = zarr.open_group(zarr_store(self.path), mode="r")
            self._arrays = (g["image"], g["labels"], g["valid"])
        return self._arrays

    def _prepare(self, img: np.ndarray, lab: np.ndarray, ok: np.ndarray):
        """Normalise (invalid pixels 0) and blank labels under invalid pixels, as tensors."""
        img = np.asarray(img, dtype=np.float32)  # fresh from zarr: safe to modify in place
        if self.normalize:
            normalize(img, ok, self.mean, self.std)
        else:
            np.copyto(img, np.float32(0), where=~ok[:, None])
        lab = np.where(ok, lab, 0).astype(np.uint8, copy=False)
        return torch.from_numpy(img), torch.from_numpy(lab)

    def _fetch(self, sel: np.ndarray):
        """Read patches ``sel`` (sorted store indices): one slice when they are consecutive."""
        zi, zl, zv = self._open()
        try:
            if sel.size and sel[-1] - sel[0] == sel.size - 1:
                run = slice(int(sel[0]), int(sel[-1]) + 1)
                return zi[run], zl[run], zv[run]
            return zi.oindex[sel], zl.oindex[sel], zv.oindex[sel]
        except Exception as exc:  # numcodecs/zarr raise several types for a damaged chunk
            ids = sel.tolist()
            shown = ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")
            raise RasterReadError(
                f"{self.path}: patches {shown} could not be read: the store is damaged there "
                f"({type(exc).__name__}: {exc}). Fix: sample it again (kerinci-xr sample --overwrite)."
            ) from exc

    def _read(self, rows: np.ndarray):
        """Prepared image and label tensors of the split's patches ``rows``."""
        if self.cache:
            if self._cached is None:
                self._cached = self._prepare(*self._fetch(self.index))
            x, y = self._cached
            idx = torch.from_numpy(rows)
            return x.index_select(0, idx), y.index_select(0, idx)
        order = np.argsort(rows, kind="stable")
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        img, lab, ok = self._fetch(self.index[rows[order]])
        return self._prepare(img[inv], lab[inv], ok[inv])

    def read_batch(self, indices: list[int]) -> Sample:
        """One batch as a single dict of stacked tensors (what :func:`make_loader` yields)."""
        tags = np.asarray(indices, dtype=np.int64)
        rows, epochs = tags % len(self), tags // len(self)
        x, y = self._read(rows)
        if self.augment:
            ts = (hash_u64(epochs, self.index[rows], self.seed * 7919 + 17) % np.uint64(8)).astype(int)
            for t in np.unique(ts):
                if t:
                    pos = torch.from_numpy(np.flatnonzero(ts == t))
                    x.index_copy_(0, pos, _dihedral_t(x.index_select(0, pos), int(t)))
                    y.index_copy_(0, pos, _dihedral_t(y.index_select(0, pos), int(t)))
        bounds = torch.from_numpy(self.bounds[rows])
        return {
            "image": x,
            "mask": y.long(),
            "bounds": bounds,
            "crs": [self.crs] * len(rows),
            "index": torch.from_numpy(rows),  # the split's patch of each sample
        }

    def __getitems__(self, indices: list[int]) -> list[Sample]:
        """Samples of several indices read at once (``DataLoader`` then collates them)."""
        b = self.read_batch(indices)
        return [
            {"image": b["image"][i], "mask": b["mask"][i], "bounds": b["bounds"][i], "crs": self.crs}
            for i in range(len(indices))
        ]

    def __getitem__(self, i: int) -> Sample:
        return self.__getitems__([i])[0]


class _Batches(Dataset):
    """The fast path: ``__getitems__`` returns the whole batch as one dict (collated already)."""

    def __init__(self, dataset: PatchDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: list[int]) -> Sample:
        return self.dataset.read_batch(indices)


def _batch_identity(batch):
    return batch


def make_loader(
    store: str | Path,
    *,
    split: str = "train",
    batch_size: int = 16,
    shuffle: bool | None = None,
    augment: bool | None = None,
    num_workers: int = 0,
    seed: int = 0,
    cache: bool | str = "auto",
    pin_memory: bool = False,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
    rank: int = 0,
    world: int = 1,
) -> DataLoader:
    """A ``DataLoader`` of batches (:data:`Sample` dicts of stacked tensors) over one split.

    Shuffling and augmentation default to on for ``"train"`` and off otherwise. Call
    ``loader.sampler.set_epoch(epoch)`` before each epoch for a new order and new augmentations.
    Works with ``num_workers > 0`` (each worker opens the store itself). ``stats`` normalises
    with other statistics than the store's (a checkpoint's, for evaluation). With ``world`` > 1
    (distributed training) ``batch_size`` is the global batch and the loader yields ``rank``'s
    part of each (:class:`GlobalBatches`).
    """
    train = split == "train"
    ds = PatchDataset(
        store,
        split=split,
        augment=train if augment is None else augment,
        seed=seed,
        cache=cache,
        stats=stats,
    )
    sampler = GlobalBatches(
        len(ds),
        batch_size,
        shuffle=train if shuffle is None else shuffle,
        seed=seed,
        rank=rank,
        world=world,
        # a last training batch of one patch (per process) is dropped (it changes every epoch): batch
        # norm cannot normalise one value per channel, which a small patch's 1 x 1 bottleneck gives
        drop_small=train,
    )
    return DataLoader(
        _Batches(ds),  # type: ignore[arg-type]
        batch_size=batch_size // world,
        sampler=sampler,  # type: ignore[arg-type]
        collate_fn=_batch_identity,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
