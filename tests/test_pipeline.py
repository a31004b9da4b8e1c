import json
import shutil
import tomllib
from pathlib import Path

import pytest

from kerinci_xr.cli import main
from kerinci_xr.cube import open_cube
from kerinci_xr.errors import InputFileNotFoundError, InvalidInputError
from kerinci_xr.patches import open_patches
from kerinci_xr.pipeline import demo_config, pipeline_config, plan

from .conftest import DEMO_ARGS

#: the tests that share this group's session fixtures run on one xdist worker
pytestmark = pytest.mark.xdist_group("demo")


def test_demo__runs_end_to_end_then_skips(demo_run, capsys):
    out, text = demo_run
    demo = ["-q", "demo", "--out", str(out), *DEMO_ARGS]
    for name in (
        "Landsat_Kerinci_2023_v1.tif",
        "cube.zarr",
        "patches.zarr",
        "patches.csv",
        "model.pt",
        "metrics.json",
        "quicklooks",
        "report.html",
        "sample.gpkg",
        "accuracy.json",
        "change.tif",
        "transitions.csv",
        "overall accuracy",
    ):
        assert name in text
    # the three accuracies a run prints, each saying what it measures, with the figure of its file
    report = json.loads((out / "metrics.json").read_text())
    scene = json.loads((out / "metrics_scene.json").read_text())
    assessed = json.loads((out / "accuracy.json").read_text())
    assert "patch test split (the model on its held-out windows, each labelled pixel once):" in text
    assert f"overall accuracy {report['overall_accuracy']:5.3f}" in text
    assert (
        "scene test area (the held-out blocks; every labelled pixel of the map there): overall accuracy "
        f"{scene['test']['overall_accuracy']}," in text
    )
    oa = assessed["overall_accuracy"]
    assert (
        f"overall accuracy (design-based estimate from the sample, +- 95 % CI) {oa['estimate']:.3f} +- "
        f"{1.96 * oa['se']:.3f}" in text
    )
    cube = open_cube(out / "cube.zarr")
    assert cube.sizes["y"] == 600
    assert "HH" in list(cube["band"].values)
    assert cube.sizes["time"] == 2
    assert cube.attrs["labels_date"] == "2015-07-01"
    change = json.loads((out / "change.json").read_text())
    assert change["pixels_changed"] > 0
    assert change["classes"]
    report = json.loads((out / "metrics.json").read_text())
    assert report["source"]["split"] == "test"
    assert report["pixels"] > 0
    scene = json.loads((out / "metrics_scene.json").read_text())
    assert {"all", "train", "val", "test"} <= set(scene)
    assert scene["all"]["pixels"] > 300_000
    assert (out / "map.tif").exists()
    assert (out / "areas.csv").read_text().startswith("class_id,")
    assert (out / "quicklooks" / "labels.png").stat().st_size > 1000
    assessed = json.loads((out / "accuracy.json").read_text())
    assert assessed["sample_size"] == 500
    assert assessed["reference"]["simulated_from"].endswith("cube.zarr")
    patches = open_patches(out / "patches.zarr")
    assert patches.sizes["y"] == 128
    assert patches.attrs["split_counts"]["train"] > 0
    stamp = (out / "cube.zarr").stat().st_mtime_ns
    assert main(demo) == 0
    again = capsys.readouterr().out
    assert "[synth] up to date, skipped" in again
    assert "[train] up to date, skipped" in again
    assert "running" not in again
    assert (out / "cube.zarr").stat().st_mtime_ns == stamp


def test_pipeline_files__packaged_demo_and_kerinci_plan():
    steps, _ = plan(demo_config(), base=Path("/somewhere"), source="demo.toml")
    order = [s.stage.name for s in steps]
    assert order == [
        "synth",
        "prepare",
        "quicklook",
        "sample",
        "train",
        "evaluate",
        "predict",
        "change",
        "suggest",
        "design-sample",
        "assess",
        "report",
    ]
    by = {s.stage.name: s.options for s in steps}
    assert by["train"].epochs == 8
    assert by["prepare"].chunk == 512
    assert by["sample"].cube == by["prepare"].out
    assert by["predict"].patches == by["sample"].out
    assert by["assess"].truth == by["prepare"].out  # an input named like a product of the run is that product
    assert by["assess"].reference == by["design-sample"].out
    assert by["assess"].map == by["predict"].out
    assert by["change"].map_a == by["predict"].out
    assert by["predict"].all_dates
    assert by["suggest"].map == by["predict"].out and by["report"].suggestions == by["suggest"].out
    images = [Path(p).name for p in by["prepare"].image]
    assert images == ["Landsat_Kerinci_2015_v1.tif", "Landsat_Kerinci_2023_v1.tif"]
    raw, base = pipeline_config("kerinci", ["train.epochs=2", "sample.seed=3", "predict.cog=map.tif"])
    assert base == Path.cwd()  # a packaged recipe reads data/kerinci/ where it runs
    steps, root = plan(raw, base=base, source="kerinci")
    by = {s.stage.name: s.options for s in steps}
    assert by["prepare"].bands == ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B9")
    assert by["prepare"].scale == 1e-4
    assert by["prepare"].radar_scale == 1e-3
    assert by["prepare"].image[0].endswith("data/kerinci/Landsat_Kerinci_2023_v1.tif")
    assert by["sample"].patch == 128
    assert by["sample"].per_class == 20 and by["sample"].seed == 3
    assert by["train"].epochs == 2  # from --set; the file says 40
    assert by["evaluate"].split == "test"
    assert Path(by["predict"].cog) == root / "map.tif"
    assert by["evaluate"].source == by["sample"].out
    assert by["evaluate"].model == by["train"].out


def test_run__any_output_names_report_finds_the_history(tmp_path, capsys, monkeypatch):
    """Stages are wired and ordered by their products, whatever the names and section order."""
    (tmp_path / "p.toml").write_text(
        '[pipeline]\nout_dir = "out"\n'
        '[report]\nout = "page.html"\n'  # first in the file, runs last
        '[train]\nout = "unet.pt"\nepochs = 1\ndepth = 2\nbase = 8\nbatch_size = 8\n'
        '[synth]\nout = "s"\nheight = 200\nwidth = 180\nseed = 4\nradar = false\n'
        '[prepare]\nout = "c.zarr"\nchunk = 64\n'
        '[sample]\nout = "pt.zarr"\nper_class = 3\npatch = 32\nblock = 64\n'
    )
    with pytest.warns(UserWarning):
        assert main(["-q", "run", str(tmp_path / "p.toml")]) == 0
    out = tmp_path / "out"
    cube = open_cube(out / "c.zarr")
    assert cube["image"].chunks[1][0] == 64
    assert "HH" not in list(cube["band"].values)
    page = (out / "page.html").read_text()
    assert "&lt;h2&gt;Training&lt;/h2&gt;" in page
    assert "train loss" in page
    record = json.loads((out / ".kerinci-stages.json").read_text())
    assert record["train"]["products"]["history"] == "unet.history.csv"  # named from the run folder
    capsys.readouterr()
    assert main(["-q", "report", str(out), "--out", str(tmp_path / "again.html")]) == 0
    assert "&lt;h2&gt;Training&lt;/h2&gt;" in (tmp_path / "again.html").read_text()
    # other options: that stage is stale, and so is everything after it; the stages before skip
    capsys.readouterr()
    toml = (tmp_path / "p.toml").read_text()
    (tmp_path / "p.toml").write_text(toml.replace("chunk = 64", "chunk = 100"))
    with pytest.warns(UserWarning):
        assert main(["-q", "run", str(tmp_path / "p.toml")]) == 0
    text = capsys.readouterr().out
    assert "[synth] up to date, skipped" in text
    assert "[prepare] running" in text
    assert "[sample] running" in text
    assert "[train] running" in text
    assert open_cube(out / "c.zarr")["image"].chunks[1][0] == 100
    # --force redoes even what is up to date
    with pytest.warns(UserWarning):
        assert main(["-q", "run", str(tmp_path / "p.toml"), "--force"]) == 0
    assert "[synth] running" in capsys.readouterr().out
    # the run folder moved away and reported from another working directory: the record finds
    # every product from the folder itself
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(out, moved)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["-q", "report", "../elsewhere/run", "--out", "moved.html"]) == 0
    assert "&lt;h2&gt;Training&lt;/h2&gt;" in (tmp_path / "cwd" / "moved.html").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[pipeline]\nout_dir = "out"\n[synth]\nheigth = 100\n', "[synth]: unknown key(s) ['heigth']"),
        ('[pipeline]\nout_dir = "out"\n[synth]\nheight = "big"\n', "height must be an integer, found str"),
        ('[pipeline]\nout_dir = "out"\n[prepare]\nscale = true\n[synth]\n', "[prepare]: scale must be a"),
        ('[pipeline]\nout_dir = "out"\n[trian]\nepochs = 3\n', "unknown section(s) ['trian']"),
        ('[pipeline]\nout_dir = "out"\n[prepare]\nimage = "nope.tif"\n', "nope.tif not found"),
        ('[pipeline]\nout_dir = "out"\n[sample]\n', "[sample]: sample needs cube"),
        ('[pipeline]\nout_dir = "out"\n', "expected at least one stage section"),
        ('[pipeline\nout_dir = "out"\n', "invalid TOML"),
        ('[pipeline]\nout_dir = "out"\n[synth]\n[quicklook]\npercentiles = [2]\n', "a list of 2 numbers"),
        ('[pipeline]\nout_dir = "out"\n[synth]\n[sample]\nper_class = 2.5\n', "[sample]: per_class must"),
        ('[pipeline]\nout_dir = "out"\n[synth]\n[sample]\nfractions = [1]\n', "a list of 3 numbers"),
        ('[pipeline]\nout_dir = "out"\n[synth]\n[train]\nnorm = "layer"\n', "norm must be one of 'batch'"),
        ('[pipeline]\nout_dir = "out"\n[synth]\noverwrite = true\n', "unknown key(s) ['overwrite']"),
    ],
)
def test_run__bad_pipeline_file_clear_error_writes_nothing(tmp_path, capsys, text, message):
    (tmp_path / "bad.toml").write_text(text)
    assert main(["-q", "run", str(tmp_path / "bad.toml")]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_plan__needs_a_mapping():
    with pytest.raises(InvalidInputError, match="table of sections"):
        plan([1, 2], base=Path("."))  # type: ignore[arg-type]


def test_demo_recipe__is_the_packaged_file():
    from importlib.resources import files

    packaged = files("kerinci_xr").joinpath("pipelines", "demo.toml").read_text()
    assert demo_config() == tomllib.loads(packaged)


def test_pipeline_config__set_and_recipe_errors_name_the_fix(tmp_path):
    with pytest.raises(InvalidInputError, match=r"expected SECTION\.KEY=VALUE"):
        pipeline_config("kerinci", ["epochs=2"])
    with pytest.raises(InputFileNotFoundError, match="recipes shipped with the package: demo, kerinci"):
        pipeline_config(tmp_path / "nope.toml")
    (tmp_path / "p.toml").write_text('[pipeline]\nout_dir = "out"\n[train]\nepochs = 3\n')
    raw, base = pipeline_config(tmp_path / "p.toml", ["train.device=cpu", "sample.fractions=[0.6, 0.2, 0.2]"])
    assert base == tmp_path and raw["train"] == {"epochs": 3, "device": "cpu"}
    assert raw["sample"]["fractions"] == [0.6, 0.2, 0.2]
