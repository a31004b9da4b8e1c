import numpy as np
import pytest

from kerinci_xr.cube import open_cube
from kerinci_xr.errors import InvalidInputError, OutputExistsError
from kerinci_xr.patches import manifest_of, open_patches, write_patches
from kerinci_xr.sampling import sample_centres


@pytest.fixture(scope="module")
def manifest(cube_path):
    with pytest.warns(UserWarning):
        return sample_centres(open_cube(cube_path), per_class=4, patch=32, seed=2, block=80)


def test_write_patches__windows_manifest_and_stats(cube_path, manifest, tmp_path):
    cube = open_cube(cube_path)
    path = write_patches(cube, manifest, tmp_path / "p.zarr")
    ds = open_patches(path)
    assert ds["image"].shape == (len(manifest), 10, 32, 32)
    assert ds["image"].chunks[0][0] == 1  # one patch per chunk
    img, lab, ok = cube["image"].values, cube["labels"].values, cube["valid"].values
    for r in manifest.sample(8, random_state=0).itertuples():
        win = np.s_[r.row_start : r.row_stop, r.col_start : r.col_stop]
        np.testing.assert_array_equal(ds["image"][r.patch_id].values, img[(slice(None), *win)])
        np.testing.assert_array_equal(ds["labels"][r.patch_id].values, lab[win])
        np.testing.assert_array_equal(ds["valid"][r.patch_id].values, ok[win])
        assert ds["labels"][r.patch_id].values[16, 16] == r.class_id
    back = manifest_of(ds)
    for col in ("split", "class_id", "class_name", "row", "col", "row_stop", "col_stop"):
        assert back[col].tolist() == manifest[col].tolist()
    train = manifest["split"] == "train"
    pix = ds["image"].values[train.to_numpy()]
    v = ds["valid"].values[train.to_numpy()]
    vals = np.moveaxis(pix, 1, 0)[:, v].astype(np.float64)
    np.testing.assert_allclose(ds.attrs["band_mean"], vals.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(ds.attrs["band_std"], vals.std(axis=1), rtol=1e-4)
    assert ds.attrs["patch"] == 32
    assert ds.attrs["legend"] == cube.attrs["legend"]


def test_write_patches__reads_each_cube_chunk_once(cube_path, manifest, tmp_path):
    cube = open_cube(cube_path)
    touched = []

    def touch(block, block_info=None):
        touched.append(block_info[0]["chunk-location"])
        return block

    cube["image"] = cube["image"].copy(data=cube["image"].data.map_blocks(touch, dtype=np.float32))
    write_patches(cube, manifest, tmp_path / "p.zarr")
    # the chunks the windows cover, worked out from the manifest and the chunk edges
    ye, xe = (np.cumsum([0, *c]) for c in cube["image"].data.chunks[1:])
    needed = {
        (0, int(i), int(j))
        for r in manifest.itertuples()
        for i in range(np.searchsorted(ye, r.row_start, "right") - 1, np.searchsorted(ye, r.row_stop, "left"))
        for j in range(np.searchsorted(xe, r.col_start, "right") - 1, np.searchsorted(xe, r.col_stop, "left"))
    }
    assert len(needed) > 1
    assert sorted(touched) == sorted(needed)  # each chunk a window needs, once; no other chunk


def test_write_patches__identical_for_two_chunkings(cube_path, manifest, tmp_path):
    a = write_patches(open_cube(cube_path), manifest, tmp_path / "a.zarr")
    b = write_patches(open_cube(cube_path, chunks={"y": 100, "x": 50}), manifest, tmp_path / "b.zarr")
    da_, db = open_patches(a), open_patches(b)
    for v in ("image", "labels", "valid", "class_id", "row"):
        np.testing.assert_array_equal(da_[v].values, db[v].values)
    assert da_.attrs["band_mean"] == db.attrs["band_mean"]


def test_write_patches__bad_input(cube_path, manifest, tmp_path):
    cube = open_cube(cube_path)
    with pytest.raises(InvalidInputError, match="empty"):
        write_patches(cube, manifest.iloc[:0], tmp_path / "x.zarr")
    bad = manifest.copy()
    bad.loc[0, "row_stop"] += 5
    with pytest.raises(InvalidInputError, match="mixes window sizes"):
        write_patches(cube, bad, tmp_path / "x.zarr")
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(OutputExistsError):
        write_patches(cube, manifest, tmp_path / "x.zarr")
    assert list((tmp_path / "x.zarr").iterdir()) == []
