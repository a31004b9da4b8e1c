"""STAC inputs: the two real USGS Collection 2 Level-2 items of ``../shared/data/stac`` with small
COGs written on each item's own grid (their hrefs pointed at them, on disk and on the local S3
server), loaded by ``prepare --stac`` and checked against the COGs read with rasterio."""

import copy
import json

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine

from kerinci_xr.cli import main
from kerinci_xr.cube import open_cube

from .conftest import shared_file

#: this module's tests run on one xdist worker (they share its module fixtures)
pytestmark = pytest.mark.xdist_group("stac")

ITEMS = {
    "landsat8": "LC08_L2SP_028030_20200114_20200824_02_T1_SR.json",
    "landsat7": "LE07_L2SP_044033_20210329_20210424_02_T1_SR.json",
}
H, W = 96, 80  # the window of the item's grid the test COGs cover
ROW0, COL0 = 3000, 2500  # where it starts in the item's grid


def _item(name):
    path = shared_file("stac", ITEMS[name])
    if not path.exists():
        pytest.skip(f"{path} not found (the real STAC items of ../shared/data)")
    return json.loads(path.read_text())


def _cogs(item, folder, seed, href=None):
    """Rewrite ``item`` to a window of its grid: a uint16 COG per reflective band (DN as C2 L2
    stores it, 0 = fill in the first rows), proj:shape/transform, bbox and geometry to match."""
    item = copy.deepcopy(item)
    t = item["properties"]["proj:transform"]
    epsg = item["properties"]["proj:epsg"]
    tr = Affine(t[0], t[1], t[2] + COL0 * t[0], t[3], t[4], t[5] + ROW0 * t[4])
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for key, asset in item["assets"].items():
        if "eo:bands" not in asset:
            continue
        dn = rng.integers(7273, 43636, size=(H, W)).astype("uint16")  # reflectance 0 .. 1
        dn[: 4 + seed % 3, :] = 0
        path = folder / f"{item['id']}_{key}.tif"
        profile = dict(driver="COG", height=H, width=W, count=1, dtype="uint16", crs=f"EPSG:{epsg}")
        with rasterio.open(path, "w", transform=tr, nodata=0, **profile) as dst:
            dst.write(dn, 1)
        asset["href"] = href(path) if href else str(path)
    item["properties"]["proj:shape"] = [H, W]
    item["properties"]["proj:transform"] = list(tr)[:6]
    to_ll = pyproj.Transformer.from_crs(epsg, 4326, always_xy=True)
    lon, lat = to_ll.transform([tr.c, tr.c + W * tr.a] * 2, [tr.f] * 2 + [tr.f + H * tr.e] * 2)
    w, s, e, n = min(lon), min(lat), max(lon), max(lat)
    item["bbox"] = [w, s, e, n]
    item["geometry"] = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    return item


def _collection(path, *items):
    path.write_text(json.dumps({"type": "FeatureCollection", "features": list(items)}))
    return path


def _expected(item, key):
    """Reflectance of one asset as the USGS product guide defines it, from the COG itself."""
    with rasterio.open(item["assets"][key]["href"]) as src:
        dn = src.read(1)
        transform = src.transform
    refl = dn.astype(np.float32) * np.float32(2.75e-5) + np.float32(-0.2)
    return np.where(dn == 0, np.nan, refl), transform


@pytest.fixture(scope="module")
def l8(tmp_path_factory):
    """The Landsat 8 item with COGs on disk."""
    return _cogs(_item("landsat8"), tmp_path_factory.mktemp("stac") / "cogs", seed=0)


def _prepare(tmp_path, *args):
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "c.zarr"
    assert main(["-q", "prepare", *args, "--chunk", "32", "--out", str(out)]) == 0
    return open_cube(out)


@pytest.mark.parametrize("name", ["landsat8", "landsat7"])
def test_prepare_stac__reflectance_from_the_collections_scale_and_offset(name, tmp_path):
    item = _cogs(_item(name), tmp_path / "cogs", seed=1)
    cube = _prepare(tmp_path, "--stac", str(_collection(tmp_path / "items.json", item)))
    bands = list(cube["band"].values)
    assert bands == ["coastal", "blue", "green", "red", "nir08", "swir16", "swir22"][name == "landsat7" :]
    for key in bands:
        expected, transform = _expected(item, key)
        np.testing.assert_array_equal(cube["image"].sel(band=key).values, expected)
    assert cube.rio.transform() == transform
    assert cube.rio.crs.to_epsg() == item["properties"]["proj:epsg"]
    np.testing.assert_array_equal(cube["valid"].values, ~np.isnan(expected))


def test_prepare_stac__band_roles_from_common_names(l8, tmp_path):
    item = l8
    cube = _prepare(tmp_path, "--stac", str(_collection(tmp_path / "i.json", item)))
    roles = json.loads(cube.attrs["band_roles"])
    assert roles["nir"] == "nir08"
    assert roles["swir1"] == "swir16"
    assert roles["swir2"] == "swir22"


def test_prepare_stac__bbox_crops_on_the_items_grid(l8, tmp_path):
    item = l8
    items = str(_collection(tmp_path / "i.json", item))
    whole = _prepare(tmp_path / "a", "--stac", items)
    t = whole.rio.transform()
    # a box around rows 20..50 and columns 10..40 of the window, in degrees
    to_ll = pyproj.Transformer.from_crs(item["properties"]["proj:epsg"], 4326, always_xy=True)
    lon, lat = to_ll.transform([t.c + 10.5 * t.a, t.c + 39.5 * t.a], [t.f + 20.5 * t.e, t.f + 49.5 * t.e])
    bbox = f"{min(lon)},{min(lat)},{max(lon)},{max(lat)}"
    part = _prepare(tmp_path / "b", "--stac", items, f"--bbox={bbox}")
    assert part.sizes["y"] < whole.sizes["y"]
    assert part.sizes["x"] < whole.sizes["x"]
    pt = part.rio.transform()
    r0, c0 = round((pt.f - t.f) / t.e), round((pt.c - t.c) / t.a)
    assert (pt.c - t.c) / t.a == c0  # on the same pixel grid
    window = whole["image"].isel(y=slice(r0, r0 + part.sizes["y"]), x=slice(c0, c0 + part.sizes["x"]))
    np.testing.assert_array_equal(part["image"].values, window.values)


def test_prepare_stac__two_days_make_a_cube_of_two_dates(l8, tmp_path):
    first = l8
    second = _cogs(_item("landsat8"), tmp_path / "later", seed=2)
    second["id"] += "-later"
    second["properties"]["datetime"] = "2020-03-18T17:05:40Z"
    cube = _prepare(tmp_path, "--stac", str(_collection(tmp_path / "i.json", second, first)))
    assert [str(t)[:10] for t in cube["time"].values] == ["2020-01-14", "2020-03-18"]
    for i, item in enumerate((first, second)):
        expected, _ = _expected(item, "red")
        np.testing.assert_array_equal(cube["image"].isel(time=i).sel(band="red").values, expected)
    march = ("--datetime", "2020-03-01/2020-03-31")
    only = _prepare(tmp_path / "one", "--stac", str(tmp_path / "i.json"), *march)
    assert "time" not in only.dims
    np.testing.assert_array_equal(only["image"].sel(band="red").values, _expected(second, "red")[0])


def test_prepare_stac__items_and_cogs_on_s3_equal_the_disk_run(s3, l8, tmp_path):
    _, put = s3
    item = l8
    remote = _cogs(_item("landsat8"), tmp_path / "cogs", seed=0, href=lambda p: put(p, f"kx-stac/{p.name}"))
    items = put(_collection(tmp_path / "items.json", remote), "kx-stac/items.json")
    on_s3 = _prepare(tmp_path / "s3", "--stac", items)
    on_disk = _prepare(tmp_path / "disk", "--stac", str(_collection(tmp_path / "local.json", item)))
    np.testing.assert_array_equal(on_s3["image"].values, on_disk["image"].values)
    assert json.loads(on_s3.attrs["provenance"])["inputs"]["image"] == items


def test_prepare_stac__raster_bands_scale_wins_and_unknown_collections_need_one(l8, tmp_path, capsys):
    item = l8
    other = copy.deepcopy(item)
    other["collection"] = "someones-reflectance"
    items = str(_collection(tmp_path / "other.json", other))
    assert main(["-q", "prepare", "--stac", items, "--out", str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err
    assert "declares no scale or offset" in err
    assert "--scale 2.75e-5 --offset -0.2" in err
    assert not (tmp_path / "x.zarr").exists()
    given = _prepare(tmp_path / "given", "--stac", items, "--scale", "1e-4", "--offset", "0")
    with rasterio.open(other["assets"]["red"]["href"]) as src:
        dn = src.read(1)
    expected = np.where(dn == 0, np.nan, dn.astype(np.float32) * np.float32(1e-4))
    np.testing.assert_array_equal(given["image"].sel(band="red").values, expected)
    for asset in other["assets"].values():
        if "eo:bands" in asset:
            asset["raster:bands"] = [{"nodata": 0, "scale": 2e-5, "offset": 0.1}]
    declared = _prepare(tmp_path / "rb", "--stac", str(_collection(tmp_path / "rb.json", other)))
    expected = np.where(dn == 0, np.nan, dn.astype(np.float32) * np.float32(2e-5) + np.float32(0.1))
    np.testing.assert_array_equal(declared["image"].sel(band="red").values, expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--assets", "red,lwir11"], "no asset or band named 'lwir11'; it has the assets"),
        (["--bbox=10,10,11,11"], "lies in the box [10.0, 10.0, 11.0, 11.0]"),
        (["--datetime", "2021-01-01/2021-12-31"], "and the dates 2021-01-01/2021-12-31"),
        (["--select", "red"], "Fix: choose bands with --assets"),
    ],
)
def test_prepare_stac__bad_input_one_line_nothing_written(l8, tmp_path, capsys, args, message):
    item = l8
    items = str(_collection(tmp_path / "i.json", item))
    assert main(["-q", "prepare", "--stac", items, *args, "--out", str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.zarr").exists()


def test_prepare_stac__radar_collection_equals_the_radar_geotiff(l8, tmp_path):
    item = l8
    t = item["properties"]["proj:transform"]
    # a radar mosaic on another grid (60 m, shifted half a pixel), HH and HV as dB x1e3
    tr = Affine(60.0, 0, t[2] - 45.0, 0, -60.0, t[5] + 45.0)
    rng = np.random.default_rng(5)
    hh, hv = (rng.integers(-25000, -5000, size=(52, 44)).astype("int16") for _ in range(2))
    profile = dict(height=52, width=44, dtype="int16", crs=f"EPSG:{item['properties']['proj:epsg']}")
    with rasterio.open(tmp_path / "radar.tif", "w", driver="GTiff", count=2, transform=tr, **profile) as dst:
        dst.write(np.stack([hh, hv]))
    radar_item = copy.deepcopy(item)
    radar_item.update(id="palsar-2020", collection="palsar-test")
    radar_item["properties"].update({"proj:shape": [52, 44], "proj:transform": list(tr)[:6]})
    radar_item["assets"] = {}
    for name, band in (("HH", hh), ("HV", hv)):
        path = tmp_path / f"{name}.tif"
        with rasterio.open(path, "w", driver="COG", count=1, transform=tr, **profile) as dst:
            dst.write(band, 1)
        radar_item["assets"][name] = {"href": str(path), "type": "image/tiff", "roles": ["data"]}
    optical = str(_collection(tmp_path / "i.json", item))
    from_stac = _prepare(
        tmp_path / "a", "--stac", optical, "--radar-stac", str(_collection(tmp_path / "r.json", radar_item))
    )
    from_tif = _prepare(tmp_path / "b", "--stac", optical, "--radar", str(tmp_path / "radar.tif"))
    assert list(from_stac["band"].values)[-2:] == ["HH", "HV"]
    np.testing.assert_array_equal(from_stac["image"].values, from_tif["image"].values)


def test_prepare_stac__a_catalog_with_relative_links_and_hrefs(l8, tmp_path):
    item = l8
    folder = tmp_path / "catalog" / "items"
    folder.mkdir(parents=True)
    rel = copy.deepcopy(item)
    for key, asset in rel["assets"].items():
        if "eo:bands" in asset:  # hrefs relative to the item's own file
            (folder / f"{key}.tif").write_bytes(open(asset["href"], "rb").read())
            asset["href"] = f"{key}.tif"
    (folder / "item.json").write_text(json.dumps(rel))
    catalog = tmp_path / "catalog" / "catalog.json"
    catalog.write_text(
        json.dumps(
            {
                "type": "Catalog",
                "id": "test",
                "stac_version": "1.0.0",
                "description": "one item",
                "links": [{"rel": "item", "href": "./items/item.json"}],
            }
        )
    )
    cube = _prepare(tmp_path / "c", "--stac", str(catalog))
    np.testing.assert_array_equal(cube["image"].sel(band="red").values, _expected(item, "red")[0])
