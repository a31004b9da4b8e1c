"""The product registry and the stage runner's output checks: no run destroys its own inputs,
loses one output to another, writes outside its run folder, or replaces a user's file."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kerinci_xr._options import option
from kerinci_xr._products import PRODUCTS, Kind, kind_of, locate
from kerinci_xr.cli import build_parser, main
from kerinci_xr.errors import InputFileNotFoundError, InvalidInputError, OutputExistsError
from kerinci_xr.pipeline import plan, run_pipeline
from kerinci_xr.prediction import open_class_map, open_prediction
from kerinci_xr.stages import STAGES

from .conftest import wait_for, waiting_child


def _digest(path: Path) -> str:
    """A hash of a file, or of every file of a folder (names and bytes)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def run(small_run, tmp_path):
    """The shared run's small files copied (tests may try to destroy them); stores by reference."""
    out = dict(small_run)
    for key in ("model", "manifest", "cog"):
        out[key] = Path(shutil.copy(small_run[key], tmp_path / small_run[key].name))
    return out


def _refused(capsys, argv, *protected: Path, match: str) -> None:
    """The CLI exits 2 with ``match`` in its one-line error, and every protected file is as before."""
    before = {p: _digest(p) for p in protected}
    assert main([*map(str, argv), "-q"]) == 2
    err = capsys.readouterr().err
    assert match in err, err
    for p in protected:
        assert _digest(p) == before[p], f"{p} was changed"


# ---- the 12 data-loss cases of issue 21, each through the CLI ---------------------------------
def test_evaluate__out_is_its_reference_file__refused(run, tmp_path, capsys):
    ref = tmp_path / "points.geojson"
    ref.write_text('{"type": "FeatureCollection", "features": []}')
    argv = ["evaluate", run["prediction"], "--reference", ref, "--out", ref, "--overwrite"]
    _refused(capsys, argv, ref, match="is the input reference")


def test_assess__out_is_its_sample__refused(run, tmp_path, capsys):
    sample = tmp_path / "sample.csv"
    sample.write_text("row,col,reference\n1,1,2001\n")
    argv = ["assess", run["cog"], "--reference", sample, "--out", sample, "--overwrite"]
    _refused(capsys, argv, sample, match="is the input reference")


def test_train__out_is_its_patch_store__refused(run, capsys):
    argv = ["train", run["patches"], "--out", run["patches"], "--overwrite", "--epochs", "1"]
    _refused(capsys, argv, run["patches"], match="is the input patches")


@pytest.mark.parametrize("flag", ["--areas", "--cog"])
def test_predict__side_output_is_its_model__refused(run, tmp_path, capsys, flag):
    argv = ["predict", run["cube"], "--model", run["model"], "--out", tmp_path / "p.zarr", flag, run["model"]]
    _refused(capsys, [*argv, "--overwrite"], run["model"], match="is the input model")


def test_predict__metrics_is_the_manifest_of_its_patch_store__refused(run, tmp_path, capsys):
    manifest = run["manifest"]  # the manifest beside the patch store is the store's
    store = tmp_path / "patches.zarr"
    store.symlink_to(run["patches"])
    argv = ["predict", run["cube"], "--model", run["model"], "--patches", store]
    argv += ["--out", tmp_path / "p.zarr", "--metrics", manifest, "--overwrite"]
    _refused(capsys, argv, manifest, match="is the input patches (patches.csv)")


def test_sample__manifest_is_its_cube__refused(run, tmp_path, capsys):
    argv = ["sample", run["cube"], "--out", tmp_path / "p.zarr", "--manifest", run["cube"], "--overwrite"]
    _refused(capsys, argv, run["cube"], match="is the input cube")


def test_output_through_a_symlink_to_an_input__refused(run, tmp_path, capsys):
    link = tmp_path / "areas.csv"
    link.symlink_to(run["model"])  # resolved, symlinks followed
    argv = ["predict", run["cube"], "--model", run["model"], "--out", tmp_path / "p.zarr", "--areas", link]
    _refused(capsys, [*argv, "--overwrite"], run["model"], match="is the input model")


def test_two_outputs_of_one_run_on_one_path__refused(run, tmp_path, capsys):
    table = tmp_path / "t.json"
    argv = ["predict", run["cube"], "--model", run["model"], "--out", tmp_path / "p.zarr"]
    argv += ["--metrics", table, "--areas", tmp_path / "t.csv", "--cog", tmp_path / "t.json"]
    assert main([*map(str, argv), "-q"]) == 2
    err = capsys.readouterr().err
    assert "are both" in err, err
    assert "one would be lost" in err, err
    assert not (tmp_path / "p.zarr").exists()


def _pipeline(tmp_path, run, **evaluate):
    return {
        "pipeline": {"out_dir": str(tmp_path / "out")},
        "train": {"patches": str(run["patches"]), "epochs": 1, "depth": 2, "base": 8},
        "evaluate": {"source": str(run["patches"])} | evaluate,
    }


def test_pipeline__a_stage_writing_another_stages_model__refused_before_any_work(run, tmp_path):
    config = _pipeline(tmp_path, run, out="model.pt")  # [evaluate] out = the trained model
    with pytest.raises(InvalidInputError, match=r"\[train\] and \[evaluate\] both write"):
        plan(config, base=tmp_path)
    assert not (tmp_path / "out").exists()


def test_pipeline__user_files_in_the_run_folder_are_never_replaced(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "metrics.json"  # the user's own file, with the name a product gets
    mine.write_text("my notes")
    with pytest.raises(OutputExistsError, match="does not list it as written by this pipeline"):
        run_pipeline(_pipeline(tmp_path, run), out_dir=out)
    assert mine.read_text() == "my notes"
    assert not (out / "model.pt").exists()  # refused before any stage ran


def test_pipeline__absolute_out_dir_over_a_users_products__refused(small_run, tmp_path):
    # the out_dir of the pipeline is the folder of an earlier manual run: its cube is the user's
    image = tmp_path / "x.tif"
    image.write_bytes(b"")
    config = {"pipeline": {"out_dir": str(small_run["root"])}, "prepare": {"image": str(image)}}
    before = _digest(small_run["cube"])
    with pytest.raises(OutputExistsError, match="does not list it"):
        run_pipeline(config)
    assert _digest(small_run["cube"]) == before


def test_pipeline__symlink_in_the_run_folder_leading_out__refused(run, tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "models").symlink_to(elsewhere, target_is_directory=True)
    config = _pipeline(tmp_path, run, out="models/metrics.json")
    with pytest.raises(InvalidInputError, match="lies outside the run folder"):
        run_pipeline(config, out_dir=out)
    assert list(elsewhere.iterdir()) == []


# ---- the lock is held from the check until the set commits -------------------------------------
def test_two_predicts_sharing_a_cog__the_second_fails_and_the_first_writes_it(run, tmp_path):
    cog = tmp_path / "shared.tif"
    first, go, ready = waiting_child(
        tmp_path, "predict", run["cube"], "--model", run["model"], "--out", tmp_path / "a.zarr", "--cog", cog
    )
    wait_for(ready, first)  # the first run has checked and claimed its outputs
    argv = ["predict", run["cube"], "--model", run["model"], "--out", tmp_path / "b.zarr", "--cog", cog]
    second = subprocess.run(
        [sys.executable, "-m", "kerinci_xr", *map(str, argv), "--overwrite"],
        capture_output=True,
        text=True,
    )
    assert second.returncode == 2
    assert f"another kerinci-xr run (process {first.pid}) is writing this output now" in second.stderr
    assert not (tmp_path / "b.zarr").exists()  # refused before any work
    go.write_text("go")
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    classes, _ = open_class_map(cog)
    np.testing.assert_array_equal(classes.values, open_prediction(tmp_path / "a.zarr")["classes"].values)


# ---- a COG is one output of the run's set ------------------------------------------------------
#: A child that runs the CLI and dies (SIGKILL or SIGINT) when a temporary is about to be renamed.
KILLER = textwrap.dedent(
    """
    import os, pathlib, signal, sys
    sig, prefix, argv = getattr(signal, sys.argv[1]), sys.argv[2], sys.argv[3:]
    orig = pathlib.Path.rename
    def rename(self, dst):
        if self.name.startswith(prefix):
            os.kill(os.getpid(), sig)
        return orig(self, dst)
    pathlib.Path.rename = rename
    from kerinci_xr.cli import build_parser, main
    sys.exit(main(argv))
    """
)


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_predict_cog__killed_after_the_cog__the_old_cog_comes_back_with_the_old_store(run, tmp_path, sig):
    tmp_path = tmp_path / "outputs"
    tmp_path.mkdir()
    out, cog, areas = tmp_path / "p.zarr", tmp_path / "map.tif", tmp_path / "areas.csv"
    base = ["predict", run["cube"], "--model", run["model"], "--out", out, "--cog", cog, "--areas", areas]
    assert main([*map(str, base), "-q"]) == 0
    before = {p: _digest(p) for p in (out, cog, areas)}
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    # the second run writes a new store and COG, then dies as the areas table is put in place
    argv = [*map(str, base), "--overwrite", "--cog-values", "codes", "-q"]
    child = subprocess.run(
        [sys.executable, str(script), sig, ".areas.csv.tmp-", *argv], capture_output=True, text=True
    )
    assert child.returncode == (-signal.SIGKILL if sig == "SIGKILL" else 130), child.stderr
    # a reader of the COG sees the old set (the old COG, the old store), whatever the signal
    classes, _ = open_class_map(cog)
    assert _digest(cog) == before[cog]
    assert _digest(out) == before[out]
    np.testing.assert_array_equal(classes.values, open_prediction(out)["classes"].values)
    # the next run removes what the dead one left and writes the whole new set
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert _digest(cog) != before[cog]


def test_change_cog__a_failure_after_the_cog_restores_the_old_one(small_run, tmp_path, capsys):
    cog = tmp_path / "change.tif"
    base = ["change", small_run["prediction"], small_run["cog"], "--out", tmp_path / "c.zarr", "--cog", cog]
    assert main([*map(str, base), "-q"]) == 0
    before = _digest(cog)
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "s.json").mkdir()  # the summary cannot be written: a folder is in the way
    argv = [*base, "--overwrite", "--summary", tmp_path / "locked" / "s.json"]
    assert main([*map(str, argv), "-q"]) == 2
    assert "folder this toolkit did not write" in capsys.readouterr().err
    assert _digest(cog) == before


# ---- the registry ------------------------------------------------------------------------------
def test_every_declared_kind_and_product_is_registered():
    for stage in STAGES.values():
        for s in stage.specs:
            if s.meta.get("kind") is not None:
                assert isinstance(s.meta["kind"], Kind), (stage.name, s.name)
    for stage in STAGES.values():  # the example of each stage, as its CLI parses it
        args = build_parser().parse_args(stage.example.split()[1:])
        values = {
            s.name: getattr(args, s.name) for s in stage.specs if getattr(args, s.name, None) is not None
        }
        opts = stage.make(values, where=stage.name)
        for name in stage.outputs(opts):
            assert kind_of(name) in PRODUCTS, (stage.name, name)


def test_option__kind_must_come_from_the_registry():
    with pytest.raises(TypeError, match=r"expected a kerinci_xr\._products\.Kind"):
        option(None, "x", io="in", kind="cube")


def test_locate__refuses_a_missing_product_a_file_for_a_store_and_a_temporary(small_run, tmp_path):
    with pytest.raises(InputFileNotFoundError, match=r"cube not found\. Fix: run `kerinci-xr prepare` first"):
        locate(tmp_path / "nope.zarr", Kind.CUBE)
    with pytest.raises(InvalidInputError, match=r"expected a cube \(a folder\), found a file"):
        locate(small_run["model"], Kind.CUBE)
    with pytest.raises(InvalidInputError, match=r"expected a model checkpoint \(a file\), found a folder"):
        locate(small_run["cube"], Kind.MODEL)
    tmp = tmp_path / ".model.pt.tmp-0123abcd.pt"
    tmp.write_bytes(b"")
    with pytest.raises(InvalidInputError, match=r"temporary of an unfinished write of model\.pt"):
        locate(tmp, Kind.MODEL)
