"""From patch stores and cubes to tensors: xbatcher generators and the fast patch loader.

:class:`PatchDataset` reads a patch store with zarr directly (no dask graph per patch), a whole
batch per call (``__getitems__``), normalises with the store's training statistics and applies
seeded dihedral augmentation (flips and 90-degree rotations) to image and labels together.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._hashing import hash_u64
from .errors import InvalidInputError
from .sampling import SPLITS

__all__ = [
    "EpochSampler",
    "PatchDataset",
    "dihedral",
    "grid_batches",
    "make_loader",
    "patch_batches",
]


def patch_batches(store: str | Path | xr.Dataset, *, split: str = "train", batch_size: int = 16):
    """An ``xbatcher.BatchGenerator`` over one split of a patch store (lazy, one batch at a time)."""
    import xbatcher

    from .patches import open_patches

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
    import torch

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


class PatchDataset:
    """A ``torch.utils.data.Dataset`` over one split of a patch store.

    Items are ``(image, labels)``: float32 ``(band, y, x)`` normalised with the store's training
    mean/std (invalid pixels 0) and int64 ``(y, x)`` training ids (0 where invalid, ignored by
    the loss). Indices may carry an epoch tag (``epoch * len + i``, see :class:`EpochSampler`)
    that seeds the augmentation.

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
    """

    def __init__(
        self,
        store: str | Path,
        *,
        split: str = "train",
        augment: bool = False,
        seed: int = 0,
        cache: bool | str = "auto",
        normalize: bool = True,
    ) -> None:
        from .patches import open_patches

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
        if normalize and "band_mean" not in ds.attrs:
            raise InvalidInputError(f"{store}: no band statistics (the store has no training patches).")
        self.mean = np.asarray(ds.attrs.get("band_mean", [0.0] * nb), dtype=np.float32)[:, None, None]
        self.std = np.asarray(ds.attrs.get("band_std", [1.0] * nb), dtype=np.float32)[:, None, None]
        nbytes = self.index.size * nb * self.patch * self.patch * 4
        self.cache = nbytes <= 2 * 2**30 if cache == "auto" else bool(cache)
        self._arrays: Any = None
        self._cached: Any = None

    def __len__(self) -> int:
        return int(self.index.size)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = None  # zarr handles are reopened in each worker process
        return state

    def _open(self):
        if self._arrays is None:
            import zarr

            g = zarr.open_group(self.path, mode="r")
            self._arrays = (g["image"], g["labels"], g["valid"])
        return self._arrays

    def _prepare(self, img: np.ndarray, lab: np.ndarray, ok: np.ndarray):
        """Normalise (invalid pixels 0) and blank labels under invalid pixels, as tensors."""
        import torch

        img = np.asarray(img, dtype=np.float32)  # fresh from zarr: safe to modify in place
        if self.normalize:
            img -= self.mean
            img /= self.std
        np.copyto(img, np.float32(0), where=~ok[:, None])
        lab = np.where(ok, lab, 0).astype(np.uint8, copy=False)
        return torch.from_numpy(img), torch.from_numpy(lab)

    def _fetch(self, sel: np.ndarray):
        """Read patches ``sel`` (sorted store indices): one slice when they are consecutive."""
        zi, zl, zv = self._open()
        if sel.size and sel[-1] - sel[0] == sel.size - 1:
            run = slice(int(sel[0]), int(sel[-1]) + 1)
            return zi[run], zl[run], zv[run]
        return zi.oindex[sel], zl.oindex[sel], zv.oindex[sel]

    def _read(self, rows: np.ndarray):
        """Prepared image and label tensors of the split's patches ``rows``."""
        import torch

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

    def __getitems__(self, indices: list[int]) -> tuple[Any, Any]:
        import torch

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
        return x, y.long()

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        img, lab = self.__getitems__([i])
        return img[0], lab[0]


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
):
    """A ``torch.utils.data.DataLoader`` of ``(image, labels)`` batches over one split.

    Shuffling and augmentation default to on for ``"train"`` and off otherwise. Call
    ``loader.sampler.set_epoch(epoch)`` before each epoch for a new order and new augmentations.
    Works with ``num_workers > 0`` (each worker opens the store itself).
    """
    from torch.utils.data import DataLoader

    train = split == "train"
    ds = PatchDataset(
        store, split=split, augment=train if augment is None else augment, seed=seed, cache=cache
    )
    sampler = EpochSampler(len(ds), shuffle=train if shuffle is None else shuffle, seed=seed)
    return DataLoader(
        ds,  # type: ignore[arg-type]
        batch_size=batch_size,
        sampler=sampler,  # type: ignore[arg-type]
        collate_fn=_batch_identity,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
