import json
import tomllib

import pytest

from kerinci_xr.cli import main
from kerinci_xr.errors import InvalidInputError
from kerinci_xr.patches import open_patches
from kerinci_xr.pipeline import DEMO_CONFIG, load_pipeline, validate_config
from kerinci_xr.store import open_cube

from .conftest import ROOT


def test_demo__runs_end_to_end_then_skips(tmp_path, capsys):
    out = tmp_path / "demo"
    demo = ["-q", "demo", "--out", str(out), "--size", "600", "--epochs", "1"]
    assert main(demo) == 0
    text = capsys.readouterr().out
    for name in (
        "Landsat_Kerinci_2023_v1.tif",
        "cube.zarr",
        "patches.zarr",
        "patches.csv",
        "model.pt",
        "metrics.json",
        "false_colour.png",
        "labels.png",
        "overall accuracy",
    ):
        assert name in text
    cube = open_cube(out / "cube.zarr")
    assert cube.sizes["y"] == 600 and "HH" in list(cube["band"].values)
    report = json.loads((out / "metrics.json").read_text())
    assert report["source"]["split"] == "test" and report["pixels"] > 0
    scene = json.loads((out / "metrics_scene.json").read_text())
    assert {"all", "train", "val", "test"} <= set(scene) and scene["all"]["pixels"] > 300_000
    assert (out / "map.tif").exists() and (out / "areas.csv").read_text().startswith("class_id,")
    assert (out / "quicklooks" / "labels.png").stat().st_size > 1000
    patches = open_patches(out / "patches.zarr")
    assert patches.sizes["y"] == 128 and patches.attrs["split_counts"]["train"] > 0
    stamp = (out / "cube.zarr").stat().st_mtime_ns
    assert main(demo) == 0
    assert "[train] up to date, skipped" in capsys.readouterr().out
    assert (out / "cube.zarr").stat().st_mtime_ns == stamp
    # other options: the scene is stale, and so is everything after it
    assert main([*demo, "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert "[synth] running" in text and "[prepare] running" in text and "[train] running" in text
    assert main([*demo, "--seed", "1", "--force"]) == 0
    assert "[quicklook] running" in capsys.readouterr().out


def test_pipeline_files__demo_matches_embedded_default_and_kerinci_validates():
    raw = tomllib.loads((ROOT / "pipelines" / "demo.toml").read_text())
    raw["pipeline"]["out_dir"] = DEMO_CONFIG["pipeline"]["out_dir"]
    assert validate_config(raw) == validate_config(DEMO_CONFIG)
    cfg = load_pipeline(ROOT / "pipelines" / "kerinci.toml")
    assert cfg["inputs"]["bands"] == ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9"]
    assert cfg["prepare"]["scale"] == 1e-4 and cfg["prepare"]["radar_scale"] == 1e-3
    assert cfg["inputs"]["image"].endswith("Landsat_Kerinci_2023_v1.tif")
    assert cfg["sample"]["patch"] == 128 and cfg["sample"]["per_class"] == 20
    assert cfg["train"]["epochs"] == 40 and cfg["evaluate"]["split"] == "test"
    assert cfg["predict"]["cog"] == "map.tif"


def test_run__pipeline_file_runs(tmp_path, capsys):
    (tmp_path / "p.toml").write_text(
        '[pipeline]\nout_dir = "out"\n[synth]\nheight = 200\nwidth = 180\nseed = 4\nradar = false\n'
        "[prepare]\nchunk = 64\n"
    )
    assert main(["-q", "run", str(tmp_path / "p.toml")]) == 0
    cube = open_cube(tmp_path / "out" / "cube.zarr")
    assert cube["image"].chunks[1][0] == 64 and "HH" not in list(cube["band"].values)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[pipeline]\nout_dir = "out"\n[synth]\nheigth = 100\n',
            "unknown key(s) ['heigth'] in [synth]",
        ),
        (
            '[pipeline]\nout_dir = "out"\n[synth]\nheight = "big"\n',
            "[synth] height must be a int, found str",
        ),
        (
            '[pipeline]\nout_dir = "out"\n[prepare]\nscale = true\n[synth]\n',
            "[prepare] scale must be",
        ),
        ('[pipeline]\nout_dir = "out"\n[trian]\nepochs = 3\n', "unknown section(s) ['trian']"),
        ('[pipeline]\nout_dir = "out"\n[inputs]\nimage = "nope.tif"\n', "nope.tif not found"),
        ('[pipeline]\nout_dir = "out"\n', "expected an [inputs] section"),
        ('[pipeline\nout_dir = "out"\n', "invalid TOML"),
        ('[pipeline]\nout_dir = "out"\n[synth]\n[quicklook]\npercentiles = [2]\n', "two numbers"),
        ('[pipeline]\nout_dir = "out"\n[synth]\n[sample]\nper_class = 2.5\n', "[sample] per_class must"),
        ('[pipeline]\nout_dir = "out"\n[synth]\n[sample]\nfractions = [1]\n', "three numbers"),
    ],
)
def test_run__bad_pipeline_file_clear_error_writes_nothing(tmp_path, capsys, text, message):
    (tmp_path / "bad.toml").write_text(text)
    assert main(["-q", "run", str(tmp_path / "bad.toml")]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_validate_config__needs_a_mapping():
    with pytest.raises(InvalidInputError, match="table of sections"):
        validate_config([1, 2])  # type: ignore[arg-type]
