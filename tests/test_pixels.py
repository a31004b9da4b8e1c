"""Per-pixel models: features against a one-piece scipy computation, maps against a one-piece
LightGBM prediction built here from the checkpoint's own model text, safe checkpoints."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pytest
import torch
from scipy import ndimage

from kerinci_xr import api
from kerinci_xr.checkpoint import load_checkpoint
from kerinci_xr.cli import main
from kerinci_xr.cube import open_cube
from kerinci_xr.errors import CheckpointError
from kerinci_xr.patches import open_patches, stored_layout
from kerinci_xr.pixels import FeatureRecipe, feature_stack, pixel_sample
from kerinci_xr.prediction import open_prediction


def _by_hand(cube, bands, roles, windows):
    """The features of every pixel, one piece, written independently of the package: bands,
    NDVI, and per band the mean and standard deviation of its valid w x w neighbours."""
    img = cube["image"].sel(band=bands).values.astype(np.float64)
    ok = cube["valid"].values
    nir, red = (cube["image"].sel(band=roles[r]).values.astype(np.float64) for r in ("nir", "red"))
    out = [*img, (nir - red) / (nir + red)]
    n = ndimage.uniform_filter(ok.astype(np.float64), size=windows, mode="reflect")
    v = np.where(ok, img, 0.0)
    means = [ndimage.uniform_filter(b, size=windows, mode="reflect") / n for b in v]
    squares = [ndimage.uniform_filter(b * b, size=windows, mode="reflect") / n for b in v]
    out += means + [np.sqrt(np.maximum(s - m * m, 0)) for s, m in zip(squares, means, strict=True)]
    return np.where(ok, np.stack(out), np.nan).astype(np.float32)


@pytest.fixture(scope="module")
def trained(small_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("pixels")
    model = api.train(
        str(small_run["patches"]),
        model="lightgbm",
        indices=("ndvi",),
        windows=(5,),
        rounds=40,
        out=root / "m.pt",
    )["model"]
    return root, model


def test_feature_stack__neighbourhoods_equal_one_piece_scipy_for_two_chunkings(small_run):
    cube = open_cube(small_run["cube"])
    bands = [str(b) for b in cube["band"].values]
    roles = json.loads(cube.attrs["band_roles"])
    recipe = FeatureRecipe(tuple(bands), roles, ("ndvi",), (5,))
    expected = _by_hand(cube, bands, roles, 5)
    for chunk in (64, 45):  # chunk edges inside the scene, a last chunk of another size
        view = cube.chunk({"y": chunk, "x": chunk})
        got = feature_stack(view["image"], view["valid"], recipe).values
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-7, equal_nan=True)
    assert recipe.names()[len(bands)] == "ndvi"


def test_pixel_sample__same_pixels_for_any_chunking(small_run):
    cube = open_cube(small_run["cube"])
    layout = stored_layout(open_patches(small_run["patches"]), (cube.sizes["y"], cube.sizes["x"]))
    recipe = FeatureRecipe(tuple(str(b) for b in cube["band"].values))
    a = pixel_sample(cube, layout, recipe, max_per_class=50, seed=3)
    b = pixel_sample(cube.chunk({"y": 50, "x": 70}), layout, recipe, max_per_class=50, seed=3)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.x, b.x)
    assert np.bincount(a.y).max() <= 50
    assert (layout.split_of(a.rows, a.cols) == 0).all()  # the training area only


def test_predict__lightgbm_map_equals_one_piece_prediction_any_chunking_and_a_cluster(small_run, trained):
    root, model = trained
    ckpt = load_checkpoint(model)
    assert ckpt["model_kind"] == "lightgbm"
    cube = open_cube(small_run["cube"])
    bands = [str(b) for b in cube["band"].values]
    feats = _by_hand(cube, ckpt["features"]["bands"], ckpt["features"]["roles"], 5)
    booster = lgb.Booster(model_str=ckpt["booster"])
    x = feats.reshape(feats.shape[0], -1).T
    ok = np.isfinite(x).all(axis=1)
    expected = np.zeros(x.shape[0], dtype=np.uint8)
    expected[ok] = np.asarray(ckpt["classes"])[booster.predict(x[ok]).argmax(axis=1)]
    expected = expected.reshape(feats.shape[1:])
    assert ckpt["bands"] == bands
    for i, extra in enumerate((["--chunk", "64"], ["--chunk", "100"], ["--chunk", "64", "--workers", "2"])):
        out = root / f"p{i}.zarr"
        assert (
            main(["-q", "predict", str(small_run["cube"]), "--model", str(model), "--out", str(out), *extra])
            == 0
        )
        got = open_prediction(out)["classes"].values
        agree = (got == expected).mean()
        assert agree > 0.999, f"{extra}: {agree}"  # features in float32 vs float64 may flip a tie


def test_train__rf_and_history(small_run, tmp_path):
    out = api.train(str(small_run["patches"]), model="rf", rounds=20, out=tmp_path / "rf.pt")
    ckpt = load_checkpoint(out["model"])
    assert ckpt["model_kind"] == "rf"
    assert "[boosting: rf]" in ckpt["booster"]
    history = json.loads(out["history_json"].read_text())
    assert history[0]["train_pixels"] > 0
    assert not (tmp_path / "rf.last.pt").exists()  # no epochs to resume


def test_tree_checkpoint__loads_safely_and_a_tampered_model_is_refused(small_run, trained, tmp_path, capsys):
    _, model = trained
    raw = torch.load(model, weights_only=True)  # nothing but strings, lists and dicts
    assert isinstance(raw["booster"], str)
    raw["booster"] = raw["booster"].replace("Tree=0", "Tree=zero", 1)[:5000]
    torch.save(raw, tmp_path / "bad.pt")
    code = main(
        [
            "-q",
            "predict",
            str(small_run["cube"]),
            "--model",
            str(tmp_path / "bad.pt"),
            "--out",
            str(tmp_path / "p.zarr"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the LightGBM model in this checkpoint cannot be read" in err
    assert "Traceback" not in err
    assert not (tmp_path / "p.zarr").exists()
    raw.pop("classes")
    torch.save(raw, tmp_path / "incomplete.pt")
    with pytest.raises(CheckpointError, match=r"missing or badly typed \['classes'\]"):
        load_checkpoint(tmp_path / "incomplete.pt")


def test_evaluate__a_tree_model_on_the_pixels_the_unet_is_scored_on(small_run, trained, tmp_path):
    from sklearn.metrics import confusion_matrix

    from kerinci_xr.sampling import read_manifest

    _, model = trained
    tree = api.evaluate(str(small_run["patches"]), model=str(model), out=tmp_path / "t.json")["report"]
    unet = api.evaluate(str(small_run["patches"]), model=str(small_run["model"]), out=tmp_path / "u.json")[
        "report"
    ]
    assert tree["samples"] == unet["samples"]  # the same test pixels, each once
    cube = open_cube(small_run["cube"])
    manifest = read_manifest(small_run["manifest"])
    where = np.zeros((cube.sizes["y"], cube.sizes["x"]), dtype=bool)
    for _, m in manifest[manifest["split"] == "test"].iterrows():
        where[m["row_start"] : m["row_stop"], m["col_start"] : m["col_stop"]] = True
    labels = cube["labels"].values
    where &= (labels > 0) & cube["valid"].values
    ckpt = load_checkpoint(model)
    feats = _by_hand(cube, ckpt["features"]["bands"], ckpt["features"]["roles"], 5)[:, where].T
    pred = np.asarray(ckpt["classes"])[lgb.Booster(model_str=ckpt["booster"]).predict(feats).argmax(axis=1)]
    n = len(json.loads(cube.attrs["legend"])["values"])
    expected = confusion_matrix(labels[where], pred, labels=np.arange(0, n + 1))
    assert tree["samples"] == int(where.sum())
    np.testing.assert_array_equal(np.asarray(tree["confusion_matrix"]), expected)


def test_fit_pixels__progress_lines_name_the_round_and_the_time_left(monkeypatch, capsys):
    """A long per-pixel training says where it is (a line every LOG_EVERY_S seconds: here 0, so
    a line a round), and prints nothing without ``progress``."""
    from kerinci_xr import pixels

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.uint8) + 1
    sample = pixels.PixelSample(x, y, np.zeros(400, int), np.zeros(400, int))
    monkeypatch.setattr(pixels, "LOG_EVERY_S", 0.0)
    pixels.fit_pixels(sample, kind="lightgbm", rounds=4, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert [e.split(",")[0] for e in err] == [f"lightgbm: round {i}/4" for i in range(1, 5)]
    assert all("s left" in e for e in err)
    pixels.fit_pixels(sample, kind="rf", rounds=4)
    assert capsys.readouterr().err == ""
