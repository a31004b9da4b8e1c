"""Land-cover change: from-to map, transition matrix, gross/net change; the generator's known change."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

import kerinci_xr as kx
from kerinci_xr.changes import change_codes, decode_change, gross_net, transition_matrix, transitions_table
from kerinci_xr.cli import main
from kerinci_xr.io import open_raster, write_cog
from kerinci_xr.legend import Legend
from kerinci_xr.preprocess import remap_labels
from kerinci_xr.synthetic import KLHK_LEGEND, make_kerinci_series

from .conftest import grid_map

LG = Legend(values=(10, 20, 30), labels=("forest", "crop", "town"), palette=("006400", "FFD700", "FF0000"))


def _map(arr, epsg=6933, chunks=32):
    """A class map on a 30 m equal-area grid (EASE-Grid 2.0: a pixel is 0.09 ha exactly)."""
    return grid_map(arr.astype(np.uint8), crs=epsg, origin=(1e6, 5e6), chunks=chunks)


def test_transition_matrix__equals_a_crosstab_and_decodes_back():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (90, 70)), rng.integers(0, 4, (90, 70))
    codes = change_codes(_map(a), _map(b, chunks=(40, 50)), LG)
    m = transition_matrix(codes, LG)
    both = (a > 0) & (b > 0)
    want = pd.crosstab(a[both], b[both]).reindex(index=range(4), columns=range(4), fill_value=0).to_numpy()
    np.testing.assert_array_equal(m.pixels, want)
    np.testing.assert_allclose(m.hectares, want * 0.09)
    assert m.excluded == int((~both).sum())
    before, after = decode_change(codes.values, LG)
    np.testing.assert_array_equal(np.where(both, a, 0), before)
    np.testing.assert_array_equal(np.where(both, b, 0), after)
    table = transitions_table(m)
    assert table["pixels"].sum() == both.sum()
    assert set(table.columns) == {
        "from_id",
        "from_code",
        "from_name",
        "to_id",
        "to_code",
        "to_name",
        "pixels",
        "hectares",
    }
    net = gross_net(m)
    assert net["net_change"].sum() == pytest.approx(0)
    assert (net["gross_loss"] >= 0).all()
    forest = net.set_index("name").loc["forest"]
    assert forest["gross_loss"] == pytest.approx(want[1, 2:].sum() * 0.09)
    assert forest["net_change"] == pytest.approx((want[:, 1].sum() - want[1].sum()) * 0.09)


def test_change_codes__different_grids_or_legends_refused():
    a = _map(np.ones((20, 20)))
    with pytest.raises(kx.GridMismatchError, match="expected the grid"):
        change_codes(a, _map(np.ones((20, 21))), LG)
    other = Legend(values=(10, 20), labels=("a", "b"), palette=("000000", "FFFFFF"))
    with pytest.raises(kx.InvalidInputError, match="expected the legend"):
        change_codes(a, a, LG, after_legend=other)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("series")
    files = make_kerinci_series(root / "scene", [2015, 2023], height=360, width=330, seed=2)
    truth = [remap_labels(open_raster(f.labels).isel(band=0, drop=True), KLHK_LEGEND) for f in files]
    maps = [
        write_cog(t, root / f"truth_{y}.tif", legend=KLHK_LEGEND)
        for t, y in zip(truth, (2015, 2023), strict=True)
    ]
    return {"root": root, "files": files, "truth": [t.values for t in truth], "maps": maps}


def test_change__recovers_the_generators_known_change_exactly(series, tmp_path, capsys):
    out = tmp_path / "c.zarr"
    argv = [
        "change",
        str(series["maps"][0]),
        str(series["maps"][1]),
        "--out",
        str(out),
        "--cog",
        str(tmp_path / "c.tif"),
        "--transitions",
        str(tmp_path / "t.csv"),
        "--summary",
        str(tmp_path / "c.json"),
    ]
    assert main(argv) == 0
    assert "pixels changed" in capsys.readouterr().out
    a, b = series["truth"]
    both = (a > 0) & (b > 0)
    want = pd.crosstab(a[both].astype(np.int64), b[both].astype(np.int64))
    table = pd.read_csv(tmp_path / "t.csv")
    got = table.pivot(index="from_id", columns="to_id", values="pixels").fillna(0).astype(int)
    pd.testing.assert_frame_equal(got, want.astype(int), check_names=False)
    # the generator's change: forest cleared for estate crops, farms turned into settlement
    changed = table[table["from_id"] != table["to_id"]].sort_values("pixels", ascending=False)
    assert changed.iloc[0]["to_name"] == "Estate crop"
    assert "forest" in changed.iloc[0]["from_name"]
    summary = json.loads((tmp_path / "c.json").read_text())
    assert summary["pixels_changed"] == int((a[both] != b[both]).sum())
    assert summary["pixels_excluded"] == int((~both).sum())
    # the from-to COG: its values decode to the two maps, its style names each transition
    with rasterio.open(tmp_path / "c.tif") as src:
        ids = src.read(1)
    names = {e.get("value"): e.get("label") for e in ET.parse(tmp_path / "c.qml").iter("paletteEntry")}
    assert "Primary dryland forest -> Estate crop" in names.values()
    store = xr.open_zarr(out)
    codes = store["transition"].values
    before, after = decode_change(codes, KLHK_LEGEND)
    np.testing.assert_array_equal(before, np.where(both, a, 0))
    np.testing.assert_array_equal(after, np.where(both, b, 0))
    tl = Legend.from_json(store["transition"].attrs["transition_legend"])
    np.testing.assert_array_equal(np.asarray([0, *tl.values])[ids], codes)


@pytest.mark.slow  # a statistical or quality check; the module is covered end to end without it
def test_change__predicted_maps_find_the_forest_loss(series, tmp_path):
    """Train on 2015, predict both years, compare the forest lost with the generator's truth."""
    import warnings

    f15, f23 = series["files"]
    cubes = [
        kx.prepare(
            f.landsat,
            labels=f.labels,
            legend=f.legend,
            radar=f.palsar,
            chunk=128,
            out=tmp_path / f"c{y}.zarr",
        )["cube"]
        for f, y in ((f15, 2015), (f23, 2023))
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = kx.sample(cubes[0], per_class=10, patch=32, block=96, out=tmp_path / "p.zarr")["patches"]
    model = kx.train(store, epochs=10, depth=2, base=8, batch_size=8, lr=5e-3, out=tmp_path / "m.pt")["model"]
    preds = [
        kx.predict(c, model=model, chunk=128, out=tmp_path / f"p{i}.zarr")["prediction"]
        for i, c in enumerate(cubes)
    ]
    res = kx.change(preds[0], preds[1], out=tmp_path / "ch.zarr", min_confidence=0.5)
    forest = {1, 2, 5}  # primary, secondary dryland and plantation forest
    a, b = series["truth"]
    true_loss = ((np.isin(a, list(forest))) & (b == 7)).sum()  # cleared for estate crop (id 7)
    m = res["matrix"]
    found = sum(m.pixels[i, 7] for i in forest)
    assert true_loss > 500, (found, true_loss)
    assert abs(found / true_loss - 1) < 0.35, (found, true_loss)
    assert res["summary"]["low_confidence_pixels"] > 0
    assert "low_confidence" in xr.open_zarr(tmp_path / "ch.zarr")


def test_change__bad_input(series, tmp_path, capsys):
    one = str(series["maps"][0])
    assert main(["change", one, "--out", str(tmp_path / "a.zarr")]) == 2
    assert "change needs two dates" in capsys.readouterr().err
    assert main(["change", one, one, "--out", str(tmp_path / "b.zarr")]) == 2
    assert "the same map twice" in capsys.readouterr().err
    small = write_cog(_map(np.ones((20, 20))), tmp_path / "small.tif", legend=KLHK_LEGEND)
    assert main(["change", one, str(small), "--out", str(tmp_path / "c.zarr")]) == 2
    assert "expected the grid" in capsys.readouterr().err
    other = write_cog(_map(np.ones((20, 20))), tmp_path / "other.tif", legend=LG)
    assert main(["change", str(small), str(other), "--out", str(tmp_path / "d.zarr")]) == 2
    assert "expected the legend" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".zarr"]


def test_design_and_assess__on_a_change_map_strata_are_transitions(series, tmp_path):
    change = kx.change(series["maps"][0], series["maps"][1], out=tmp_path / "c.zarr")["change"]
    sample = kx.design_sample(change, n=120, min_per_class=5, out=tmp_path / "s.gpkg")["points"]
    assert sample["map_name"].str.contains(" -> ").all()
    assert "Primary dryland forest -> Estate crop" in set(sample["map_name"])
    # the truth of each point: its transition between the generator's two label rasters
    a, b = series["truth"]
    names = [
        f"{KLHK_LEGEND.name_of(int(i))} -> {KLHK_LEGEND.name_of(int(j))}"
        for i, j in zip(a[sample["row"], sample["col"]], b[sample["row"], sample["col"]], strict=True)
    ]
    filled = sample.assign(reference=names)
    filled.to_csv(tmp_path / "filled.csv", index=False)
    res = kx.assess(change, reference=tmp_path / "filled.csv", out=tmp_path / "a.json")["result"]
    assert res["overall_accuracy"]["estimate"] == pytest.approx(1.0)  # the map is the truth
    loss = next(c for c in res["classes"] if c["name"] == "Primary dryland forest -> Estate crop")
    assert loss["area_ha"]["estimate"] == pytest.approx(loss["map_area_ha"])
