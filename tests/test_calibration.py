"""Calibrated probabilities, uncertainty layers and active learning, on real files."""

import json

import geopandas as gpd
import numpy as np
import pytest
import xarray as xr
from scipy.stats import entropy as scipy_entropy

from kerinci_xr import api
from kerinci_xr.calibration import fit_temperature, reliability, softmax, uncertainty
from kerinci_xr.checkpoint import load_checkpoint
from kerinci_xr.cli import main


def _ece(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """The expected calibration error by its definition (Guo et al. 2017), bin by bin."""
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += inside.sum() / conf.size * abs(correct[inside].mean() - conf[inside].mean())
    return total


def test_reliability__worked_example_and_definition():
    # 10 pixels at 0.95 with 7 right, 10 at 0.55 with 5 right: ECE = (0.5 * 0.25 + 0.5 * 0.05)
    conf = np.r_[np.full(10, 0.95), np.full(10, 0.55)]
    ok = np.r_[np.arange(10) < 7, np.arange(10) < 5]
    rel = reliability(conf, ok)
    assert rel["ece"] == pytest.approx(0.15)
    full = [b for b in rel["bins"] if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in full] == [(10, 0.5), (10, 0.7)]
    rng = np.random.default_rng(1)
    conf, ok = rng.random(5000), rng.random(5000) < 0.6
    assert reliability(conf, ok)["ece"] == pytest.approx(_ece(conf, ok))


def test_fit_temperature__recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (20_000, 5))
    p = softmax(z)
    y = (p.cumsum(1) > rng.random((z.shape[0], 1))).argmax(1)  # labels drawn from softmax(z): calibrated
    assert fit_temperature(2.5 * z, y) == pytest.approx(2.5, rel=0.05)  # over-confident logits
    assert fit_temperature(z, y) == pytest.approx(1.0, rel=0.05)


def test_uncertainty__margin_and_entropy_by_their_definitions():
    rng = np.random.default_rng(2)
    p = softmax(rng.normal(0, 2, (7, 40)), axis=0).astype(np.float32)
    conf, margin, ent = uncertainty(p, axis=0)
    srt = np.sort(p, axis=0)
    assert np.allclose(conf, srt[-1]) and np.allclose(margin, srt[-1] - srt[-2])
    assert np.allclose(ent, scipy_entropy(p, axis=0) / np.log(7), atol=1e-6)


@pytest.fixture(scope="module")
def lgb_run(tmp_path_factory):
    """A LightGBM model on a generated scene, calibrated on its validation split, and its map
    with probabilities."""
    from tests.conftest import sampled_run

    root = tmp_path_factory.mktemp("calib")
    _, cube, store = sampled_run(root, height=384, width=384, seed=5, chunk=128, per_class=15, block=64)
    model = api.train(store, out=root / "lgb.pt", model="lightgbm", rounds=150)["model"]
    pred = api.predict(
        cube,
        model=model,
        out=root / "pred.zarr",
        probabilities=True,
        uncertainty_cog=root / "uncertainty.tif",
    )["prediction"]
    report = api.evaluate(store, model=model, out=root / "metrics.json")["report"]
    return {"root": root, "cube": cube, "store": store, "model": model, "pred": pred, "report": report}


def test_calibration__lower_ece_on_held_out_pixels_and_the_figure_checked(lgb_run):
    from kerinci_xr.patches import open_patches
    from kerinci_xr.pixels import window_pixels

    cal = load_checkpoint(lgb_run["model"])["calibration"]
    t = cal["temperature"]
    assert cal["fitted_on"] == "val" and cal["after"]["nll"] < cal["before"]["nll"]
    # the test split's pixels (held out from training and from the fit), read from the map
    rows, cols, ref = window_pixels(open_patches(lgb_run["store"]), "test")
    ds = xr.open_zarr(lgb_run["pred"])
    p_cal = ds["probabilities"].values[:, rows, cols]
    ok = p_cal.sum(0) > 0
    p_cal, ref = p_cal[:, ok].astype(np.float64), ref[ok]
    known = p_cal > 0  # classes the model knows (the others have probability 0)
    logp = np.where(known, np.log(np.where(known, p_cal, 1.0)), -np.inf)
    p_raw = softmax(t * logp, axis=0)  # undo the temperature: the model as trained
    correct = p_cal.argmax(0) + 1 == ref
    before, after = _ece(p_raw.max(0), correct), _ece(p_cal.max(0), correct)
    assert after < before
    # evaluate reports the same figures on the same pixels
    rec = lgb_run["report"]["calibration"]
    assert rec["before"]["pixels"] == ok.sum()
    assert rec["before"]["ece"] == pytest.approx(before, abs=1e-4)
    assert rec["after"]["ece"] == pytest.approx(after, abs=1e-4)
    # the stored layers are those of the calibrated probabilities
    assert np.allclose(ds["confidence"].values[rows, cols][ok], p_cal.max(0), atol=1e-5)
    assert np.allclose(
        ds["entropy"].values[rows, cols][ok],
        scipy_entropy(p_cal, axis=0) / np.log(known.any(1).sum()),
        atol=1e-4,
    )


def test_uncertainty__uncertain_pixels_are_wrong_more_often(lgb_run):
    """On the generated scene, against its labels everywhere: the most uncertain quarter of the
    mapped pixels is wrong more often than the most certain quarter (measured, not assumed)."""
    from kerinci_xr.cube import open_cube

    ds = xr.open_zarr(lgb_run["pred"])
    labels = open_cube(lgb_run["cube"])["labels"].values
    cls, ent = ds["classes"].values, ds["entropy"].values
    ok = (labels > 0) & (cls > 0)
    wrong, e = (cls != labels)[ok], ent[ok]
    lo, hi = np.quantile(e, [0.25, 0.75])
    err_high, err_low = wrong[e >= hi].mean(), wrong[e <= lo].mean()
    assert err_high > 2 * err_low, (err_high, err_low)


def test_suggest__uncertain_spread_apart_and_merged_into_prepare(lgb_run, tmp_path, capsys):
    root = lgb_run["root"]
    earlier = tmp_path / "earlier.gpkg"
    from kerinci_xr.prediction import open_prediction

    pred = open_prediction(lgb_run["pred"])
    tr = pred.rio.transform()
    gpd.GeoDataFrame(
        {"lc": ["2001"]},
        geometry=gpd.points_from_xy([tr.c + 100.5 * tr.a], [tr.f + 100.5 * tr.e]),
        crs=pred.rio.crs,
    ).to_file(earlier)
    out = tmp_path / "next.gpkg"
    argv = [
        "-q",
        "suggest",
        str(lgb_run["pred"]),
        "--n",
        "60",
        "--min-distance",
        "12",
        "--labels",
        str(earlier),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    pts = gpd.read_file(out)
    assert len(pts) == 60 and pts["reference"].isna().all()
    r, c = pts["row"].to_numpy(), pts["col"].to_numpy()
    d = np.hypot(r[:, None] - r[None], c[:, None] - c[None]) + np.eye(len(r)) * 1e9
    assert d.min() >= 12  # apart
    assert np.hypot(r - 100, c - 100).min() >= 12  # and away from the earlier label
    ent = pred["entropy"].values
    cls = pred["classes"].values
    assert (pts["map_id"].to_numpy() == cls[r, c]).all()
    assert np.allclose(pts["entropy"].to_numpy(), ent[r, c])
    # more uncertain than the map's mapped pixels at large, and from several classes
    assert np.median(ent[r, c]) > np.quantile(ent[cls > 0], 0.9)
    assert pts["map_id"].nunique() >= min(6, len(np.unique(cls[cls > 0])))
    # the interpreter fills the field; prepare reads both files as one set of labels
    from kerinci_xr.cube import open_cube

    truth = open_cube(lgb_run["cube"])["labels"].values
    legend_values = json.loads(open_cube(lgb_run["cube"]).attrs["legend"])["values"]
    pts["reference"] = [str(legend_values[truth[i, j] - 1]) for i, j in zip(r, c, strict=True)]
    pts.to_file(out)
    scene_tif = next((root / "scene").glob("Landsat_*.tif"))
    merged = api.prepare(
        scene_tif, labels=(earlier, out), legend=root / "scene" / "lc.json", out=tmp_path / "cube.zarr"
    )["cube"]
    lab = open_cube(merged)["labels"].values
    assert (lab > 0).sum() == 61
    assert (lab[r, c] == truth[r, c]).all() and lab[100, 100] == 1


def test_uncertainty_cog__the_store_layers_gis_tools_open(lgb_run):
    import rasterio

    ds = xr.open_zarr(lgb_run["pred"])
    with rasterio.open(lgb_run["root"] / "uncertainty.tif") as src:
        assert src.count == 3 and src.dtypes[0] == "float32"
        assert list(src.descriptions) == ["entropy", "margin", "confidence"]
        assert src.is_tiled
        data = src.read()
    mapped = ds["classes"].values > 0
    for i, name in enumerate(("entropy", "margin", "confidence")):
        assert np.allclose(data[i][mapped], ds[name].values[mapped])
        assert np.isnan(data[i][~mapped]).all()


def test_design_sample__uncertainty_strata_then_stehman_against_the_population(lgb_run, tmp_path, capsys):
    """Strata of class x low/high entropy, drawn exactly; assess (the interpreter simulated from the
    labels, which cover the scene) estimates with Stehman (2014), and the population's own overall
    accuracy and class areas, counted over every pixel, lie within the estimates' 95 % intervals."""
    from kerinci_xr.cube import open_cube

    out = tmp_path / "u.gpkg"
    argv = [
        "-q",
        "design-sample",
        str(lgb_run["pred"]),
        "--strata",
        "uncertainty",
        "--uncertain-share",
        "0.3",
    ]
    assert (
        main([*argv, "--n", "400", "--min-per-class", "20", "--allocation", "equal", "--out", str(out)]) == 0
    )
    pts = gpd.read_file(out)
    ds = xr.open_zarr(lgb_run["pred"])
    cls, ent = ds["classes"].values, ds["entropy"].values
    thr = float(pts["strata_of"].iloc[0].split("entropy above ")[1].split(":")[0])
    strata = np.where(cls > 0, 2 * (cls.astype(int) - 1) + 1 + (ent > thr), 0)
    share = (ent[cls > 0] > thr).mean()
    assert 0.27 <= share <= 0.33  # the most uncertain 30 % of the mapped pixels (1000-bin histogram)
    r, c = pts["row"].to_numpy(), pts["col"].to_numpy()
    assert (strata[r, c] == pts["stratum"]).all()
    sizes = np.bincount(strata.ravel())
    assert (pts["stratum_size"].to_numpy() == sizes[pts["stratum"]]).all()
    assert (pts["map_id"].to_numpy() == cls[r, c]).all()
    res_path = tmp_path / "a.json"
    cube = lgb_run["cube"]
    assert (
        main(
            [
                "-q",
                "assess",
                str(lgb_run["pred"]),
                "--reference",
                str(out),
                "--truth",
                str(cube),
                "--out",
                str(res_path),
            ]
        )
        == 0
    )
    assert "Stehman (2014)'s estimators are used" in capsys.readouterr().out
    res = json.loads(res_path.read_text())
    assert res["strata_differ_from_map"] and "map classes x uncertainty" in res["estimator"]
    labels = open_cube(cube)["labels"].values
    both = (labels > 0) & (cls > 0)
    oa = res["overall_accuracy"]
    assert oa["ci95"][0] <= (labels[both] == cls[both]).mean() <= oa["ci95"][1]
    for row in res["classes"]:
        share = (labels[cls > 0] == row["id"]).mean()
        if share > 0.05:  # area proportions of the main classes, from the hectares
            total = sum(x["map_area_ha"] for x in res["classes"])
            lo, hi = row["area_ha"]["ci95"]
            assert lo / total - 0.01 <= share <= hi / total + 0.01, row["name"]
