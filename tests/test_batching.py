import numpy as np
import pytest
import torch

from kerinci_xr.batching import (
    EpochSampler,
    PatchDataset,
    dihedral,
    grid_batches,
    make_loader,
    patch_batches,
)
from kerinci_xr.cube import open_cube
from kerinci_xr.errors import InvalidInputError
from kerinci_xr.patches import open_patches, write_patches
from kerinci_xr.sampling import sample_centres


@pytest.fixture(scope="module")
def store(cube_path, tmp_path_factory):
    with pytest.warns(UserWarning):
        m = sample_centres(open_cube(cube_path), per_class=6, patch=32, seed=4, block=80)
    return write_patches(open_cube(cube_path), m, tmp_path_factory.mktemp("p") / "p.zarr")


def _epoch(loader, epoch=0):
    loader.sampler.set_epoch(epoch)
    batches = list(loader)
    return torch.cat([b["image"] for b in batches]), torch.cat([b["mask"] for b in batches])


def test_loader__normalised_batches_with_workers(store):
    loader = make_loader(store, split="train", batch_size=8, num_workers=2, augment=False, shuffle=False)
    x, y = _epoch(loader)
    ds = open_patches(store)
    n_train = int((ds["split"].values == "train").sum())
    assert x.shape == (n_train, 10, 32, 32)
    assert x.dtype == torch.float32
    assert y.shape == (n_train, 32, 32)
    assert y.dtype == torch.int64
    valid = open_patches(store)["valid"].values[ds["split"].values == "train"]
    vals = x.numpy().transpose(1, 0, 2, 3)[:, valid]
    np.testing.assert_allclose(vals.mean(axis=1), 0, atol=1e-3)
    np.testing.assert_allclose(vals.std(axis=1), 1, atol=1e-3)
    assert (y.numpy()[~valid] == 0).all()
    assert (x.numpy().transpose(1, 0, 2, 3)[:, ~valid] == 0).all()


def test_loader__augmentation_is_joint_seeded_and_worker_independent(store):
    plain = make_loader(store, batch_size=5, augment=False, shuffle=False)
    aug0 = make_loader(store, batch_size=5, augment=True, shuffle=False, seed=1)
    aug2 = make_loader(store, batch_size=5, augment=True, shuffle=False, seed=1, num_workers=2)
    x, y = _epoch(plain)
    xa, ya = _epoch(aug0, epoch=3)
    xb, yb = _epoch(aug2, epoch=3)
    assert torch.equal(xa, xb)
    assert torch.equal(ya, yb)
    used = set()
    for i in range(len(x)):
        ts = [t for t in range(8) if np.array_equal(dihedral(x[i].numpy(), t), xa[i].numpy())]
        assert ts, "augmented image is no dihedral transform of the original"
        assert any(np.array_equal(dihedral(y[i].numpy(), t), ya[i].numpy()) for t in ts)
        used.add(ts[0])
    assert len(used) >= 4
    xc, _ = _epoch(aug0, epoch=4)
    assert not torch.equal(xa, xc)  # another epoch, other transforms


def test_loader__uncached_equals_cached_and_shuffle_is_seeded(store):
    a = make_loader(store, batch_size=7, cache=True, seed=3)
    b = make_loader(store, batch_size=7, cache=False, seed=3)
    xa, ya = _epoch(a, 1)
    xb, yb = _epoch(b, 1)
    assert torch.equal(xa, xb)
    assert torch.equal(ya, yb)
    s = EpochSampler(10, seed=3)
    first = list(s)
    s.set_epoch(1)
    assert sorted(x - 10 for x in s) == list(range(10))
    assert first != [x - 10 for x in s]


def test_patch_dataset__bad_split(store):
    with pytest.raises(InvalidInputError, match="split"):
        PatchDataset(store, split="holdout")


def test_xbatcher_generators(store, cube_path):
    gen = patch_batches(store, split="val", batch_size=4)
    batch = gen[0]
    assert batch["image"].dims == ("patch", "band", "y", "x")
    assert batch["image"].shape[1:] == (10, 32, 32)
    tiles = grid_batches(open_cube(cube_path), patch=64, overlap=16)
    assert len(tiles) == ((320 - 64) // 48 + 1) * ((300 - 64) // 48 + 1)
    assert tiles[0]["image"].shape == (10, 64, 64)


def test_patch_dataset__plain_dataloader_with_workers_yields_torchgeo_dicts(store):
    from torch.utils.data import DataLoader

    ds = PatchDataset(store, split="train")
    assert isinstance(ds, torch.utils.data.Dataset)
    assert repr(ds).startswith("PatchDataset(")
    assert f"patches={len(ds)}" in repr(ds)
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert sum(len(b["image"]) for b in batches) == len(ds)
    b = batches[0]
    assert b["image"].shape == (4, 10, 32, 32)
    assert b["image"].dtype == torch.float32
    assert b["mask"].shape == (4, 32, 32)
    assert b["mask"].dtype == torch.int64
    assert b["bounds"].shape == (4, 4)
    assert len(b["crs"]) == 4
    assert "WGS 84" in b["crs"][0]
    # the same patches as the fast loader, and bounds that frame each window on the cube's grid
    fast = next(iter(make_loader(store, split="train", batch_size=4, shuffle=False, augment=False)))
    assert torch.equal(fast["image"], b["image"])
    assert torch.equal(fast["mask"], b["mask"])
    m = open_patches(store)
    first = int(np.flatnonzero(m["split"].values == "train")[0])
    a, _, c, _, e, f = m.attrs["transform"]
    r0, c0 = int(m["row_start"].values[first]), int(m["col_start"].values[first])
    expect = [c + c0 * a, f + (r0 + 32) * e, c + (c0 + 32) * a, f + r0 * e]
    np.testing.assert_allclose(b["bounds"][0].numpy(), expect)
