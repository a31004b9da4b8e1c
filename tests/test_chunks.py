"""Regions of chunked arrays: what a prediction window reads inside its own task."""

import pickle

import dask.array as da
import numpy as np
import pytest

from kerinci_xr._chunks import BlockGrid, Regions, assemble
from kerinci_xr.api import prepare
from kerinci_xr.cube import open_cube
from kerinci_xr.synthetic import make_kerinci_scene


@pytest.mark.parametrize(
    ("ys", "xs"),
    [(slice(0, 50), slice(0, 40)), (slice(13, 97), slice(5, 91)), (slice(99, 100), slice(0, 100))],
)
def test_regions__read_equals_slice_and_block_grid(ys, xs):
    data = np.arange(3 * 100 * 100, dtype=np.float32).reshape(3, 100, 100)
    arr = da.from_array(data, chunks=(1, 30, 25))  # band chunks are joined
    region = Regions(arr).region(ys, xs)
    np.testing.assert_array_equal(region.read(), data[:, ys, xs])
    parts = [[(b.compute(), sy, sx) for b, sy, sx in row] for row in BlockGrid(arr).parts(ys, xs)]
    np.testing.assert_array_equal(assemble(parts), data[:, ys, xs])


def test_regions__a_region_ships_only_its_own_reads(tmp_path):
    """A region's graph holds the reads of the chunks under it, not the whole scene's."""
    scene = make_kerinci_scene(tmp_path / "scene", height=256, width=256, seed=1)
    cube = open_cube(prepare(scene.landsat, out=tmp_path / "cube.zarr", chunk=64)["cube"])  # 16 chunks
    region = Regions(cube["image"].data).region(slice(40, 90), slice(0, 20))  # 2 x 1 chunks
    tasks = [k for k in region.graph if isinstance(k, tuple)]
    assert len(tasks) == 2 * 1
    assert len(region.graph) <= 2 * 1 + 1  # + the store's array handle
    assert len(pickle.dumps(region)) < 20_000
    np.testing.assert_array_equal(region.read(), cube["image"][:, 40:90, 0:20].values)
