"""The design-sample and assess stages on real files: GeoPackage/GeoJSON/CSV samples, COG maps."""

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

import kerinci_xr as kx
from kerinci_xr.cli import main
from kerinci_xr.cube import cube_legend, open_cube
from kerinci_xr.io import write_cog


@pytest.fixture(scope="module")
def maps(small_run, tmp_path_factory):
    """The small run's cube, its labels as a map (perfect), and a map with errors, as COGs."""
    root = tmp_path_factory.mktemp("assess")
    cube_path = small_run["cube"]
    cube = open_cube(cube_path)
    legend = cube_legend(cube)
    labels = cube["labels"]
    perfect = write_cog(labels, root / "perfect.tif", legend=legend)
    noisy = labels.copy(
        data=np.where(np.arange(labels.shape[1]) % 7 == 0, np.roll(labels.values, 3, 0), labels.values)
    )
    noisy = noisy.rio.write_crs(cube.rio.crs).rio.write_transform(cube.rio.transform())
    return {
        "root": root,
        "cube": cube_path,
        "perfect": perfect,
        "noisy": write_cog(noisy, root / "noisy.tif", legend=legend),
        "legend": legend,
        "labels": labels.values,
        "noisy_values": noisy.values,
    }


def test_design_sample__gpkg_points_exact_counts_in_their_strata(maps, capsys):
    out = maps["root"] / "s.gpkg"
    argv = [
        "-q",
        "design-sample",
        str(maps["noisy"]),
        "--n",
        "200",
        "--min-per-class",
        "10",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    pts = gpd.read_file(out)
    assert pts.crs.to_epsg() == 4326
    assert (pts.geometry.geom_type == "Point").all()
    assert len(pts) == 200
    values = maps["noisy_values"]
    assert (values[pts["row"], pts["col"]] == pts["stratum"]).all()
    size = np.bincount(values.ravel(), minlength=23)
    counts = pts["stratum"].value_counts()
    assert (counts[size[counts.index] >= 10] >= 10).all()  # the minimum, where a class has enough pixels
    np.testing.assert_allclose(
        pts["inclusion_probability"], counts[pts["stratum"]].to_numpy() / size[pts["stratum"]]
    )
    lg = maps["legend"]
    assert (pts["map_code"] == [lg.values[k - 1] for k in pts["stratum"]]).all()
    assert pts["reference"].isna().all()
    # the point lies in its pixel: map x/y at the pixel centre
    tr = open_cube(maps["cube"]).rio.transform()
    col, row = ~tr * (pts.geometry.x.to_numpy(), pts.geometry.y.to_numpy())
    assert (np.floor(row) == pts["row"]).all()
    assert (np.floor(col) == pts["col"]).all()
    assert main(argv) == 2
    assert "output exists" in capsys.readouterr().err
    assert main([*argv[:-1], str(maps["root"] / "s.shp")]) == 2
    assert ".gpkg, .geojson or .csv" in capsys.readouterr().err
    js = maps["root"] / "s.geojson"
    assert main([*argv[:-1], str(js)]) == 0
    assert len(gpd.read_file(js)) == 200
    capsys.readouterr()
    assert (
        main(
            [
                "-q",
                "design-sample",
                str(maps["noisy"]),
                "--target-se",
                "0.02",
                "--out",
                str(maps["root"] / "t.csv"),
            ]
        )
        == 0
    )
    assert "n = " in capsys.readouterr().out
    # minimums that exceed --n: more units than asked, and the output says why and what draws n
    few = maps["root"] / "few.csv"
    argv = ["-q", "design-sample", str(maps["noisy"]), "--n", "20"]
    assert main([*argv, "--min-per-class", "10", "--out", str(few)]) == 0
    drawn = len(pd.read_csv(few))
    present = int((np.bincount(maps["noisy_values"].ravel(), minlength=23)[1:] > 0).sum())
    assert drawn > 20
    text = capsys.readouterr().out
    assert f"note: {drawn} units, not --n 20: --min-per-class 10 in each of the {present} strata" in text
    assert f"Fix: --min-per-class {20 // present} (or fewer) draws 20" in text
    assert main([*argv, "--min-per-class", str(20 // present), "--out", str(few), "--overwrite"]) == 0
    assert len(pd.read_csv(few)) == 20  # the fix it names works


def test_assess__perfect_map_gives_its_own_areas_and_accuracy_one(maps):
    sample = kx.design_sample(maps["perfect"], n=150, min_per_class=5, out=maps["root"] / "p.gpkg")[
        "sample_design"
    ]
    res = kx.assess(maps["perfect"], reference=sample, truth=maps["cube"], out=maps["root"] / "p.json")[
        "result"
    ]
    assert res["overall_accuracy"]["estimate"] == pytest.approx(1.0)
    assert res["sample_size"] == 150
    for c in res["classes"]:
        assert c["area_ha"]["estimate"] == pytest.approx(c["map_area_ha"])
        assert c["area_ha"]["se"] == pytest.approx(0)
    assert res["reference"]["simulated_from"]
    assert any("simulated" in w for w in res["warnings"])


def test_assess__filled_sample_codes_names_and_empty_values(maps, tmp_path, capsys):
    sample = tmp_path / "s.gpkg"
    assert (
        main(
            [
                "-q",
                "design-sample",
                str(maps["noisy"]),
                "--n",
                "120",
                "--min-per-class",
                "5",
                "--out",
                str(sample),
            ]
        )
        == 0
    )
    pts = gpd.read_file(sample)
    lg = maps["legend"]
    truth = maps["labels"][pts["row"], pts["col"]]
    pts["reference"] = [str(lg.values[t - 1]) if i % 2 else lg.names[t - 1] for i, t in enumerate(truth)]
    pts.loc[:4, "reference"] = None  # five the interpreter could not label
    pts.to_file(sample, driver="GPKG")
    out, csv = tmp_path / "a.json", tmp_path / "a.csv"
    argv = ["assess", str(maps["noisy"]), "--reference", str(sample), "--out", str(out), "--csv", str(csv)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "overall accuracy" in text
    assert "5 sample point(s) have no reference value" in text
    res = json.loads(out.read_text())
    assert res["sample_size"] == 115
    assert res["empty_reference"] == 5
    assert res["estimator"].startswith("stratified")
    # the counts: user's accuracy of every class equals its share of correct units, independently counted
    used = pts["reference"].notna().to_numpy()
    for c in res["classes"]:
        units = used & (pts["stratum"].to_numpy() == c["id"])
        if units.sum():
            assert c["users_accuracy"]["estimate"] == pytest.approx((truth[units] == c["id"]).mean())
    table = pd.read_csv(csv)
    assert {"area_ha", "area_ha_se", "area_ha_ci95_low", "users_accuracy_ci95_high"} <= set(table.columns)
    # bad input: codes not in the legend; the sample of another map; a missing field
    for value, message in (
        ("9999", "reference codes [9999] are not in the legend"),
        ("2001.7", "field 'reference' must hold integer class codes"),  # never truncated to 2001
        ("inf", "neither class codes nor class names of the legend, e.g. ['inf']"),
        ("Forest?", "neither class codes nor class names of the legend, e.g. ['Forest?']"),
    ):
        bad = pts.copy()
        bad.loc[6, "reference"] = value
        bad.to_file(tmp_path / "bad.gpkg", driver="GPKG")
        assert main([*argv[:3], str(tmp_path / "bad.gpkg"), "--out", str(tmp_path / "b.json")]) == 2
        err = capsys.readouterr().err
        assert message in err, err
    # the sample of another map: Stehman (2014); the perfect map is right at every unit
    assert (
        main(
            [
                "-q",
                "assess",
                str(maps["perfect"]),
                "--reference",
                str(sample),
                "--out",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    assert "Stehman (2014)'s estimators are used" in capsys.readouterr().out
    other = json.loads((tmp_path / "c.json").read_text())
    assert other["strata_differ_from_map"] and "Stehman 2014" in other["estimator"]
    assert other["overall_accuracy"]["estimate"] == 1.0 and other["overall_accuracy"]["se"] == 0.0
    assert main([*argv[:3], str(sample), "--label-field", "label", "--out", str(tmp_path / "d.json")]) == 2
    assert "expected a field 'label'" in capsys.readouterr().err
    assert not [name for name in ("b.json", "d.json") if (tmp_path / name).exists()]


def test_assess__simple_random_sample_is_post_stratified(maps, tmp_path):
    rng = np.random.default_rng(2)
    tr = open_cube(maps["cube"]).rio.transform()
    h, w = maps["labels"].shape
    rows, cols = rng.integers(0, h, 300), rng.integers(0, w, 300)
    x, y = tr * (cols + 0.5, rows + 0.5)
    codes = np.asarray([0, *maps["legend"].values])[maps["labels"][rows, cols]]
    pd.DataFrame({"x": x, "y": y, "lc": np.where(codes > 0, codes, -1).astype(str)}).replace("-1", "").to_csv(
        tmp_path / "srs.csv", index=False
    )
    res = kx.assess(maps["noisy"], reference=tmp_path / "srs.csv", label_field="lc", out=tmp_path / "a.json")[
        "result"
    ]
    assert res["estimator"].startswith("post-stratified")
    assert res["sample_size"] == int((codes > 0).sum())
