"""Garbage in is refused, or made invalid, never turned into results with exit status 0."""

import shutil

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr

import kerinci_xr as kx
from kerinci_xr.cli import main
from kerinci_xr.io import open_raster
from kerinci_xr.prediction import open_prediction

from .test_cli import _prepare


def test_prepare__infinite_pixels_are_invalid(small_scene, tmp_path):
    img = open_raster(small_scene.landsat).astype(np.float32)
    arr = img.values.copy()
    arr[2, 10:20, 10:20], arr[5, 30, 40] = np.inf, -np.inf
    img.copy(data=arr).rio.to_raster(tmp_path / "inf.tif")
    assert (
        main(["-q", "prepare", "--image", str(tmp_path / "inf.tif"), "--out", str(tmp_path / "c.zarr")]) == 0
    )
    valid = kx.open_cube(tmp_path / "c.zarr")["valid"].values
    assert not valid[10:20, 10:20].any()
    assert not valid[30, 40]
    assert valid.mean() > 0.5


@pytest.mark.parametrize(("values", "message"), [(2001.7, "2001.7"), (np.nan, "nan")])
def test_prepare__float_labels_must_hold_integer_codes(small_scene, tmp_path, capsys, values, message):
    lab = open_raster(small_scene.labels).astype(np.float32)
    arr = lab.values.copy()
    arr[0, :3, :3] = values
    lab.copy(data=arr).rio.to_raster(tmp_path / "labels.tif")
    argv = [
        "-q",
        "prepare",
        "--image",
        str(small_scene.landsat),
        "--labels",
        str(tmp_path / "labels.tif"),
        "--legend",
        str(small_scene.legend),
        "--out",
        str(tmp_path / "c.zarr"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "expected integer class codes" in err
    assert message in err
    assert not (tmp_path / "c.zarr").exists()


def test_prepare__inputs_that_do_not_overlap_or_hold_nothing(small_scene, tmp_path, capsys):
    radar = open_raster(small_scene.palsar)
    far = radar.assign_coords(y=radar["y"] - 20.0)  # 20 degrees south of the scene
    far.rio.to_raster(tmp_path / "far.tif")
    assert main(_prepare(small_scene, tmp_path / "a.zarr", "--radar", str(tmp_path / "far.tif"))) == 2
    assert "do not overlap the image" in capsys.readouterr().err
    empty = open_raster(small_scene.landsat)
    empty.copy(data=np.zeros_like(empty.values)).rio.to_raster(tmp_path / "empty.tif")
    with rasterio.open(tmp_path / "empty.tif", "r+") as dst:
        dst.nodata = 0
    assert (
        main(["-q", "prepare", "--image", str(tmp_path / "empty.tif"), "--out", str(tmp_path / "b.zarr")])
        == 2
    )
    assert "the cube has no valid pixel" in capsys.readouterr().err
    assert not [p.name for p in tmp_path.iterdir() if ".zarr" in p.name]  # nothing written, no temporary left


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--nodata", "70000"), "cannot occur in uint16 pixels"),
        (("--nodata", "-1"), "cannot occur in uint16 pixels"),
        (("--nodata", "0.5"), "cannot occur in uint16 pixels"),
        (
            ("--offset", "nan"),
            "offset (reflectance offset added after scaling (default: 0; for STAC the items' own)) "
            "must be a finite number",
        ),
        (("--chunk", "-5"), "chunk (chunk edge in pixels) must be an integer at least 16, found -5"),
    ],
)
def test_prepare__values_out_of_range(small_scene, tmp_path, capsys, extra, message):
    assert main(_prepare(small_scene, tmp_path / "c.zarr", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c.zarr").exists()


def test_sample_and_train__values_out_of_range(small_run, tmp_path, capsys):
    cube, store = small_run["cube"], small_run["patches"]
    for extra, message in (
        (("--block", "0"), "block (split block edge in pixels (default 4 x patch)) must be an integer"),
        (("--fractions", "nan,0.5,0.5"), "fractions"),
    ):
        assert (
            main(["-q", "sample", str(cube), "--patch", "32", *extra, "--out", str(tmp_path / "x.zarr")]) == 2
        )
        assert message in capsys.readouterr().err
        assert not (tmp_path / "x.zarr").exists()
    assert main(["-q", "train", str(store), "--loader-workers", "-2", "--out", str(tmp_path / "m.pt")]) == 2
    assert "loader_workers" in capsys.readouterr().err


def test_fit__a_diverging_loss_stops_with_an_error_and_saves_nothing(small_run, tmp_path):
    store = small_run["patches"]
    huge = tmp_path / "huge.zarr"
    shutil.copytree(store, huge)
    g = zarr.open_group(str(huge), mode="r+")
    g["image"][:] = np.float32(2e36)  # finite, and finite once normalised, but the activations overflow
    cfg = kx.TrainConfig(epochs=2, depth=2, base=8, batch_size=4, norm="none")
    with pytest.raises(kx.KerinciError, match="the training loss became nan"):
        kx.fit(huge, tmp_path / "m.pt", config=cfg)
    assert not (tmp_path / "m.pt").exists()
    assert not (tmp_path / "m.last.pt").exists()
    assert xr.open_zarr(huge)["image"].dtype == np.float32


def test_overwrite__never_replaces_a_folder_the_toolkit_did_not_write(small_scene, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    shutil.copytree(small_scene.landsat.parent, inputs)
    (inputs / "notes.txt").write_text("the user's own")
    argv = [
        "-q",
        "prepare",
        "--image",
        str(inputs / small_scene.landsat.name),
        "--out",
        str(inputs),
        "--overwrite",
    ]
    assert main(argv) == 2
    assert "or holds it, or lies inside it; writing it would destroy the input" in capsys.readouterr().err
    assert (inputs / "notes.txt").read_text() == "the user's own"
    assert (inputs / small_scene.landsat.name).exists()
    # its own store it replaces
    out = tmp_path / "cube.zarr"
    assert (
        main(["-q", "prepare", "--image", str(small_scene.landsat), "--chunk", "64", "--out", str(out)]) == 0
    )
    assert main(["-q", "prepare", "--image", str(small_scene.landsat), "--out", str(out), "--overwrite"]) == 0
    assert kx.open_cube(out)["image"].chunks[1][0] == 320  # the new store (one chunk of 320 rows), not 64


def test_pipeline__outputs_stay_in_the_run_folder(tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("unrelated")
    run = tmp_path / "p" / "q"
    run.mkdir(parents=True)
    (run / "p.toml").write_text(
        '[pipeline]\nout_dir = "out"\n[synth]\nout = "../../../elsewhere"\nheight = 32\nwidth = 32\n'
    )
    assert main(["-q", "run", str(run / "p.toml")]) == 2
    assert "lies outside the run folder" in capsys.readouterr().err
    assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"]


def test_checkpoint__right_marker_but_missing_or_badly_typed_keys(tmp_path):
    import torch

    from kerinci_xr.checkpoint import CHECKPOINT_FORMAT, load_checkpoint

    torch.save({"format": CHECKPOINT_FORMAT, "bands": "B1", "model_state": {}}, tmp_path / "bad.pt")
    with pytest.raises(kx.CheckpointError, match=r"missing or badly typed \['model_config', 'bands'"):
        load_checkpoint(tmp_path / "bad.pt")


def test_train__its_other_files_obey_overwrite_too_and_dot_is_no_output(small_run, tmp_path, capsys):
    store = small_run["patches"]
    (tmp_path / "m.history.csv").write_text("a history the user kept")
    assert (
        main(["-q", "train", str(store), "--epochs", "1", "--depth", "2", "--out", str(tmp_path / "m.pt")])
        == 2
    )
    assert "m.history.csv: output exists" in capsys.readouterr().err
    assert (tmp_path / "m.history.csv").read_text() == "a history the user kept"
    assert not (tmp_path / "m.pt").exists()
    assert (
        main(
            [
                "-q",
                "prepare",
                "--image",
                str(tmp_path / "scene" / "Landsat_Kerinci_2023_v1.tif"),
                "--out",
                ".",
                "--overwrite",
            ]
        )
        == 2
    )
    assert "a folder this toolkit did not write" in capsys.readouterr().err


# ---- numbers no run can use: refused by their declaration (CLI, TOML and Python alike) --------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["predict", "{cube}", "--model", "{model}", "--chunk", "0"],
            "chunk (output chunk edge in pixels) must",
        ),
        (["predict", "{cube}", "--model", "{model}", "--tile", "-8"], "tile (sub-tile edge"),
        (
            ["predict", "{cube}", "--model", "{model}", "--tile", "1"],
            "expected 0 (one piece) or at least 2 ** depth",
        ),
        (["prepare", "--image", "{image}", "--scale", "-1"], "scale (reflectance scale"),
        (
            ["prepare", "--image", "{image}", "--scale", "nan"],
            "must be a finite number more than 0, found nan",
        ),
        (
            ["quicklook", "{cube}", "--max-size", "-1"],
            "max_size (longest side of the PNGs in pixels) must be an",
        ),
        (["design-sample", "{cog}", "--n", "1000000000000"], "more sample units than the"),
    ],
)
def test_cli__impossible_numbers_are_refused_before_any_output(
    small_run, small_scene, tmp_path, capsys, argv, message
):
    fill = {k: str(v) for k, v in small_run.items()} | {"image": str(small_scene.landsat)}
    out = tmp_path / "out.zarr" if argv[0] != "design-sample" else tmp_path / "sample.gpkg"
    out = tmp_path / "ql" if argv[0] == "quicklook" else out
    assert main(["-q", *(a.format(**fill) for a in argv), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not out.exists() or not any(out.iterdir())


def test_predict__tile_0_is_one_piece_and_the_same_map(small_run, tmp_path):
    pred = kx.predict(small_run["cube"], model=small_run["model"], out=tmp_path / "p.zarr", tile=0)
    np.testing.assert_array_equal(
        open_prediction(pred["prediction"])["classes"].values,
        open_prediction(small_run["prediction"])["classes"].values,
    )


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        ("weights", "weights hold NaN or infinite values"),
        ("mean", "normalisation of bands ['B1'] is unusable"),
        ("std", "normalisation of bands ['B1'] is unusable"),
    ],
)
def test_predict__checkpoint_with_unusable_numbers__refused(small_run, tmp_path, capsys, spoil, message):
    import torch

    ckpt = torch.load(small_run["model"], weights_only=True)
    if spoil == "weights":
        key = next(k for k, v in ckpt["model_state"].items() if v.is_floating_point())
        ckpt["model_state"][key] = ckpt["model_state"][key] * float("nan")
    elif spoil == "mean":
        ckpt["band_mean"][0] = float("nan")
    else:
        ckpt["band_std"][0] = 0.0
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    argv = ["-q", "predict", str(small_run["cube"]), "--model", str(bad), "--out", str(tmp_path / "p.zarr")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "p.zarr").exists()
