import hashlib
import json

import numpy as np
import pytest
import rasterio

from kerinci_xr.errors import InvalidInputError, OutputExistsError
from kerinci_xr.io import grid_differences, open_raster
from kerinci_xr.legend import read_legend
from kerinci_xr.synthetic import KLHK_LEGEND, make_kerinci_scene


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_kerinci_scene(tmp_path_factory.mktemp("kerinci"), height=900, width=860, seed=0)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_make_kerinci_scene__files_bands_crs_dtypes(scene):
    assert scene.landsat.name == "Landsat_Kerinci_2023_v1.tif"
    assert scene.palsar.name == "Palsar_Kerinci_2023_v1.tif"
    assert scene.labels.name == "LC_Image_v1.tif"
    landsat = open_raster(scene.landsat)
    assert list(landsat["band"].values) == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9"]
    assert landsat.dtype == np.uint16
    assert landsat.attrs["nodata"] == 0
    assert landsat.rio.crs.to_epsg() == 4326
    res = landsat.rio.resolution()
    assert res[0] == pytest.approx(0.000269, rel=0.01)
    assert res[1] < 0
    left, bottom, right, top = landsat.rio.bounds()
    assert 101.0 < left < right < 101.8
    assert -2.5 < bottom < top <= -1.8
    with rasterio.open(scene.landsat) as src:
        assert src.profile["tiled"]
        assert src.compression is not None
        assert src.block_shapes[0] == (256, 256)
    radar = open_raster(scene.palsar)
    assert list(radar["band"].values) == ["HH", "HV"]
    assert radar.dtype == np.int16
    assert radar.attrs["nodata"] == -32768
    diffs = grid_differences(landsat, radar)
    assert any("transform" in d for d in diffs)
    assert any("shape" in d for d in diffs)
    assert read_legend(scene.legend).to_dict() == KLHK_LEGEND.to_dict()
    assert '"palette"' in scene.legend.read_text()
    assert "#" not in scene.legend.read_text()


def test_make_kerinci_scene__cloud_nodata_patch(scene):
    with rasterio.open(scene.landsat) as src:
        img = src.read()
    nodata = (img == 0).all(axis=0)
    assert 0.002 < nodata.mean() < 0.08
    assert ((img == 0).any(axis=0) == nodata).all()  # clouds blank every band


def test_make_kerinci_scene__labels_coherent_and_imbalanced(scene):
    with rasterio.open(scene.labels) as src:
        lab = src.read(1)
    codes, counts = np.unique(lab, return_counts=True)
    assert set(codes) <= set(KLHK_LEGEND.values)
    frac = counts / lab.size
    assert 10 <= len(codes) <= 15
    assert codes[np.argmax(frac)] == 2001
    assert 0.35 < frac.max() < 0.8
    assert (frac < 0.01).sum() >= 1  # rare classes
    # spatially coherent: most pixels share the class of their right neighbour
    assert (lab[:, 1:] == lab[:, :-1]).mean() > 0.9


def test_make_kerinci_scene__same_seed_same_bytes_other_seed_differs(tmp_path):
    a = make_kerinci_scene(tmp_path / "a", height=300, width=280, seed=7)
    b = make_kerinci_scene(tmp_path / "b", height=300, width=280, seed=7)
    c = make_kerinci_scene(tmp_path / "c", height=300, width=280, seed=8)
    for f in ("landsat", "palsar", "labels", "legend"):
        assert _sha(getattr(a, f)) == _sha(getattr(b, f))
    assert _sha(a.landsat) != _sha(c.landsat)
    assert _sha(a.labels) != _sha(c.labels)


def test_make_kerinci_scene__window_size_does_not_change_pixels(tmp_path):
    a = make_kerinci_scene(tmp_path / "a", height=300, width=280, seed=2, block=1024)
    b = make_kerinci_scene(tmp_path / "b", height=300, width=280, seed=2, block=256, threads=1)
    for f in ("landsat", "labels", "palsar"):  # every pixel, noise included, a function of position
        with rasterio.open(getattr(a, f)) as x, rasterio.open(getattr(b, f)) as y:
            np.testing.assert_array_equal(x.read(), y.read())


def test_make_kerinci_scene__refuses_to_overwrite(tmp_path):
    make_kerinci_scene(tmp_path, height=32, width=32, seed=0, radar=False)
    before = _sha(tmp_path / "LC_Image_v1.tif")
    with pytest.raises(OutputExistsError, match="overwrite"):
        make_kerinci_scene(tmp_path, height=40, width=40, seed=1, radar=False)
    assert _sha(tmp_path / "LC_Image_v1.tif") == before
    with pytest.raises(InvalidInputError, match="at least 16"):
        make_kerinci_scene(tmp_path / "x", height=4, width=40)


def _pixels(scene, n=40000, seed=0):
    from kerinci_xr.cube import build_cube

    ds = build_cube(scene.landsat, scene.labels, legend=KLHK_LEGEND, radar=scene.palsar)
    x = ds["image"].values.reshape(ds.sizes["band"], -1).T
    y = ds["labels"].values.ravel()
    rows = np.repeat(np.arange(ds.sizes["y"]), ds.sizes["x"])
    ok = np.isfinite(x).all(axis=1) & (y > 0)
    return x[ok], y[ok], rows[ok]


def test_make_kerinci_scene__spectra_carry_signal(scene):
    """A per-pixel classifier separates the major classes; with shuffled labels it cannot."""
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
    from sklearn.metrics import balanced_accuracy_score

    x, y, rows = _pixels(scene)
    classes, counts = np.unique(y, return_counts=True)
    major = classes[counts / y.size > 0.02]
    keep = np.isin(y, major)
    x, y, rows = x[keep], y[keep], rows[keep]
    rng = np.random.default_rng(0)
    train = rows < np.median(rows)  # spatially separate halves
    tr = np.flatnonzero(train)
    tr = rng.choice(tr, size=min(20000, tr.size), replace=False)
    te = np.flatnonzero(~train)
    clf = QuadraticDiscriminantAnalysis(reg_param=0.01).fit(x[tr], y[tr])
    score = balanced_accuracy_score(y[te], clf.predict(x[te]))
    chance = 1 / len(major)
    assert score > max(0.5, 4 * chance)  # forest types overlap on purpose; 5x chance seen
    shuffled = rng.permutation(y[tr])
    clf = QuadraticDiscriminantAnalysis(reg_param=0.01).fit(x[tr], shuffled)
    assert balanced_accuracy_score(y[te], clf.predict(x[te])) < chance + 0.1


def test_synth__reference_points_qa_band_and_stac_items(tmp_path, capsys):
    """``synth --points --qa-pixel --stac``: the points carry the label map's code where they lie
    (read back with rasterio's index), the QA band's cloud bit is the image's nodata and its
    dilated-cloud ring lies on valid pixels, and the STAC items load (EPSG:4326 through odc-stac)
    to the GeoTIFF's pixels, cropped by a box."""
    import geopandas as gpd

    from kerinci_xr.cli import main
    from kerinci_xr.cube import open_cube

    out = tmp_path / "scene"
    args = ["-q", "synth", "--out", str(out), "--height", "160", "--width", "150", "--seed", "2"]
    assert main([*args, "--points", "500", "--qa-pixel", "--stac", "--years", "2020,2023"]) == 0
    points = gpd.read_file(out / "Sample_LC_2020_v1.geojson")
    assert len(points) == 500 and points.crs.to_epsg() == 4326
    with rasterio.open(out / "LC_Image_2020_v1.tif") as src:
        labels = src.read(1)
        rc = [src.index(x, y) for x, y in zip(points.geometry.x, points.geometry.y, strict=True)]
    assert [labels[r, c] for r, c in rc] == points["lc"].tolist()
    assert len(np.unique(points["lc"])) >= 5
    with (
        rasterio.open(out / "Landsat_Kerinci_2023_v1_QA_PIXEL.tif") as q,
        rasterio.open(out / "Landsat_Kerinci_2023_v1.tif") as img,
    ):
        qa, nodata = q.read(1), img.read(1) == 0
    np.testing.assert_array_equal((qa & (1 << 3)) > 0, nodata)
    ring = ((qa & (1 << 1)) > 0) & ~nodata
    assert ring.sum() > 0 and ((qa & (1 << 6)) > 0).sum() == (~nodata & ~ring).sum()

    cube = tmp_path / "stac.zarr"
    bbox = "--bbox=101.105,-1.835,101.135,-1.81"
    stac = [
        "-q",
        "prepare",
        "--stac",
        str(out / "stac_items.json"),
        bbox,
        "--chunk",
        "64",
        "--out",
        str(cube),
    ]
    assert main(stac) == 0, capsys.readouterr().err
    ds = open_cube(cube)
    assert list(ds["time"].dt.year.values) == [2020, 2023]
    t = ds.rio.transform()
    with rasterio.open(out / "Landsat_Kerinci_2023_v1.tif") as src:
        row, col = round((t.f - src.transform.f) / t.e), round((t.c - src.transform.c) / t.a)
        assert row > 0 and col > 0  # cropped
        dn = src.read(5)[row : row + ds.sizes["y"], col : col + ds.sizes["x"]].astype(np.float32)
    expect = np.where(dn == 0, np.nan, dn * np.float32(1e-4))
    np.testing.assert_array_equal(ds["image"].isel(time=1).sel(band="B5").values, expect)
    assert json.loads(ds.attrs["band_roles"])["nir"] == "B5"
