"""Nothing lost: real process kills at chosen points, concurrent writers, temporaries.

Each test runs the CLI in a child process. The child is killed with SIGKILL from inside at an
exact point (a rename of a given temporary, or the N-th group of patches written), which is
what ``kill -9`` at that moment does; then the test checks what a reader sees and what the
next run does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from kerinci_xr.api import sample
from kerinci_xr.errors import InvalidInputError
from kerinci_xr.patches import open_patches
from kerinci_xr.sampling import read_manifest

from .conftest import wait_for, waiting_child
from .test_cli import _cli

#: A child that runs the CLI after arranging its own SIGKILL at a chosen point.
KILLER = textwrap.dedent(
    """
    import os, pathlib, signal, sys
    mode, arg, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    if mode == "rename":  # die when this temporary is about to be renamed into place (the N-th time)
        orig = pathlib.Path.rename
        prefix, _, nth = arg.partition(":")
        seen = [0]
        def rename(self, dst):
            if self.name.startswith(prefix):
                seen[0] += 1
                if seen[0] >= int(nth or 1):
                    os.kill(os.getpid(), signal.SIGKILL)
            return orig(self, dst)
        pathlib.Path.rename = rename
    elif mode == "groups":  # die after N groups of patches are written
        import kerinci_xr.patches as p
        orig_cut, n = p._cut_group, [0]
        def cut(*a, **k):
            n[0] += 1
            if n[0] > int(arg):
                os.kill(os.getpid(), signal.SIGKILL)
            return orig_cut(*a, **k)
        p._cut_group = cut
    from kerinci_xr.cli import main
    sys.exit(main(argv))
    """
)


@pytest.fixture(scope="module")
def cube(small_run):
    return small_run["cube"]  # the shared cube of the small scene (64-px chunks), only read here


def _sample(cube, folder, seed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sample(
            cube, out=folder / "patches.zarr", per_class=3, patch=32, block=64, seed=seed, overwrite=True
        )


def _child(tmp_path, mode, arg, *argv):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    return subprocess.Popen(
        [sys.executable, str(script), mode, str(arg), *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _sample_argv(cube, folder, seed):
    return [
        "sample",
        cube,
        "--out",
        folder / "patches.zarr",
        "--per-class",
        3,
        "--patch",
        32,
        "--block",
        64,
        "--seed",
        seed,
        "--overwrite",
        "-q",
    ]


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_kill_between_two_outputs__readers_see_the_old_set_and_the_next_run_finishes(cube, tmp_path):
    _sample(cube, tmp_path, seed=0)
    old_manifest = read_manifest(tmp_path / "patches.csv")
    assert (open_patches(tmp_path / "patches.zarr").attrs["seed"]) == 0
    # kill -9 after the new store is in place, just before the new manifest is
    proc = _child(tmp_path, "rename", ".patches.csv.tmp-", *_sample_argv(cube, tmp_path, 1))
    proc.communicate(timeout=300)
    assert proc.returncode == -9
    assert any(".tx-" in n for n in _hidden(tmp_path))  # the interrupted set is marked on disk
    # a reader of either output sees the whole old set: the store and the manifest of seed 0
    new_rows = read_manifest(tmp_path / "patches.csv")
    assert new_rows.equals(old_manifest)
    store = open_patches(tmp_path / "patches.zarr")
    assert store.attrs["seed"] == 0
    assert store.sizes["patch"] == len(old_manifest)
    np.testing.assert_array_equal(store["row"].values, old_manifest["row"].values)
    assert not [n for n in _hidden(tmp_path) if ".tx-" in n or ".old-" in n]
    # the next run removes the leftover temporary and writes the whole new set
    out = _cli(*map(str, _sample_argv(cube, tmp_path, 1)))
    assert out.returncode == 0, out.stderr
    m = read_manifest(tmp_path / "patches.csv")
    assert (m["seed"] == 1).all()
    assert open_patches(tmp_path / "patches.zarr").attrs["seed"] == 1
    assert _hidden(tmp_path) == []


def test_kill_mid_write__old_output_intact_temporary_refused_then_cleaned(cube, tmp_path):
    _sample(cube, tmp_path, seed=0)
    before = read_manifest(tmp_path / "patches.csv")
    proc = _child(tmp_path, "groups", 2, *_sample_argv(cube, tmp_path, 1))  # after 2 groups of patches
    proc.communicate(timeout=300)
    assert proc.returncode == -9
    temps = [tmp_path / n for n in _hidden(tmp_path) if ".patches.zarr.tmp-" in n]
    assert len(temps) == 1  # the half-written store, under its temporary name
    with pytest.raises(InvalidInputError, match=r"temporary of an unfinished write of patches.zarr"):
        open_patches(temps[0])
    r = _cli("info", str(temps[0]))
    assert r.returncode == 2
    assert "temporary of an unfinished write" in r.stderr
    assert read_manifest(tmp_path / "patches.csv").equals(before)
    assert open_patches(tmp_path / "patches.zarr").attrs["seed"] == 0
    out = _cli(*map(str, _sample_argv(cube, tmp_path, 1)))
    assert out.returncode == 0, out.stderr
    assert _hidden(tmp_path) == []  # the next run removed the temporary


def test_two_writers_at_once__the_second_fails_naming_the_first(cube, tmp_path):
    first, go, ready = waiting_child(tmp_path, *_sample_argv(cube, tmp_path, 0))
    wait_for(ready, first)  # the first run has checked and locked its outputs, and holds them
    second = _cli(*map(str, _sample_argv(cube, tmp_path, 1)))
    assert second.returncode == 2
    assert f"another kerinci-xr run (process {first.pid}) is writing this output now" in second.stderr
    go.write_text("go")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    m = read_manifest(tmp_path / "patches.csv")
    assert (m["seed"] == 0).all()
    assert open_patches(tmp_path / "patches.zarr").attrs["seed"] == 0
    assert _hidden(tmp_path) == []


@contextlib.contextmanager
def _read_only(folder):
    """A folder nobody may write into, root included: chmod for users, the immutable flag for root."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root and chattr +i is not available here: no way to make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_output_folder__clear_message(cube, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    with _read_only(ro):
        r = _cli(*map(str, _sample_argv(cube, ro, 0)))
        assert list(ro.iterdir()) == []
    assert r.returncode == 2, r.stderr
    assert f"the output folder {ro} is not writable" in r.stderr
    assert "Traceback" not in r.stderr


def test_unsafe_checkpoint__refused_without_advice_to_turn_the_safety_off(cube, tmp_path):
    import torch

    flag = tmp_path / "ran.txt"

    class Payload:
        def __reduce__(self):
            return (open, (str(flag), "w"))

    torch.save({"format": "kerinci_xr-checkpoint-v1", "model_state": Payload()}, tmp_path / "evil.pt")
    r = _cli("predict", str(cube), "--model", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "p.zarr"))
    assert r.returncode == 2
    assert "refused" in r.stderr
    assert "arbitrary code" in r.stderr
    assert "weights_only" not in r.stderr
    assert "False" not in r.stderr  # no advice to load it unsafely
    assert not flag.exists()
    assert not (tmp_path / "p.zarr").exists()


def test_map_png__existing_pngs_are_not_replaced_without_overwrite(cube, tmp_path):
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    (pngs / "labels.png").write_bytes(b"the user's own picture")
    r = _cli(
        "map", str(cube), "--out", str(tmp_path / "map.html"), "--png", str(pngs), "--max-size", "100", "-q"
    )
    assert r.returncode == 2
    assert "labels.png: output exists" in r.stderr
    assert (pngs / "labels.png").read_bytes() == b"the user's own picture"
    assert not (tmp_path / "map.html").exists()
    assert sorted(p.name for p in pngs.iterdir()) == ["labels.png"]


def test_damaged_geotiff_tile__error_names_the_file_and_the_window(tmp_path):
    import rasterio

    path = tmp_path / "img.tif"
    profile = {
        "driver": "GTiff",
        "height": 512,
        "width": 512,
        "count": 2,
        "dtype": "uint16",
        "crs": "EPSG:32748",
        "transform": rasterio.transform.from_origin(0, 0, 30, 30),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rng.integers(1, 5000, (2, 512, 512), dtype=np.uint16))
    with rasterio.open(path) as src:  # the lower right tile
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(size))  # zeros: not a deflate stream
    out = tmp_path / "cube.zarr"
    r = _cli("prepare", "--image", str(path), "--out", str(out), "--chunk", "256", "-q")
    assert r.returncode == 2, r.stderr
    assert f"{path}: pixels rows 256:512, columns 256:512 could not be read, the file is damaged" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()
    assert _hidden(tmp_path) == []


def test_damaged_zarr_chunk__error_names_the_store_variable_and_chunk(small_run, tmp_path):
    cube = Path(shutil.copytree(small_run["cube"], tmp_path / "cube.zarr"))  # a copy to damage
    with open(cube / "image" / "0.1.1", "r+b") as f:
        f.seek(20)
        f.write(b"garbage" * 30)
    r = _cli(
        "sample", str(cube), "--patch", "32", "--per-class", "3", "--out", str(tmp_path / "p.zarr"), "-q"
    )
    assert r.returncode == 2, r.stderr
    assert f"{cube}: chunk 0.1.1 of 'image' (region 0:8, 64:128, 64:128) could not be read" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "p.zarr").exists()
    assert [n for n in _hidden(tmp_path) if "p.zarr" in n or "p.csv" in n] == []


def test_damaged_patch_store_chunk__training_names_the_store_and_patches(cube, tmp_path):
    _sample(cube, tmp_path, seed=0)
    store = tmp_path / "patches.zarr"
    chunk = store / "image" / "c" / "0" / "0" / "0" / "0"  # Zarr 3: the first patch's chunk
    with open(chunk, "r+b") as f:
        f.seek(20)
        f.write(b"garbage" * 30)
    r = _cli(
        "train",
        str(store),
        "--epochs",
        "1",
        "--depth",
        "2",
        "--base",
        "8",
        "--out",
        str(tmp_path / "m.pt"),
        "-q",
    )
    assert r.returncode == 2, r.stderr
    assert f"{store}: patches 0," in r.stderr
    assert "could not be read: the store is damaged" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "m.pt").exists()


def test_kill_during_training__found_at_the_last_whole_epoch_and_resume_finishes_it(cube, tmp_path):
    """Each epoch's checkpoints and history are one set: a run killed while saving epoch 3 is found
    at the end of epoch 2, and --resume ends with the weights of an uninterrupted run."""
    import torch

    from kerinci_xr.checkpoint import load_checkpoint

    _sample(cube, tmp_path, seed=0)
    store = tmp_path / "patches.zarr"
    tiny = ["--epochs", "4", "--depth", "2", "--base", "8", "--batch-size", "8", "--patience", "9", "-q"]
    ref = _cli("train", str(store), "--out", str(tmp_path / "ref.pt"), *tiny)
    assert ref.returncode == 0, ref.stderr
    proc = _child(tmp_path, "rename", ".m.last.pt.tmp-:3", "train", store, "--out", tmp_path / "m.pt", *tiny)
    proc.communicate(timeout=300)
    assert proc.returncode == -9
    last = load_checkpoint(tmp_path / "m.last.pt")  # a reader settles the interrupted epoch
    assert last["epoch"] == 2
    assert len(last["history"]) == 2
    assert len((tmp_path / "m.history.csv").read_text().strip().splitlines()) == 1 + 2
    assert load_checkpoint(tmp_path / "m.pt")["epoch"] <= 2
    res = _cli("train", str(store), "--out", str(tmp_path / "m.pt"), "--resume", *tiny)
    assert res.returncode == 0, res.stderr
    a, b = load_checkpoint(tmp_path / "ref.last.pt"), load_checkpoint(tmp_path / "m.last.pt")
    assert b["epoch"] == 4
    assert all(torch.equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    assert not [n for n in _hidden(tmp_path) if n.startswith((".m.", ".kerinci-set"))]


def test_prediction_path_that_is_not_a_prediction__clear_message(cube, tmp_path):
    r = _cli("evaluate", str(cube), "--cube", str(cube), "--out", str(tmp_path / "m.json"))
    assert r.returncode == 2
    assert "expected a prediction store written by kerinci-xr predict (with a 'classes' variable)" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "m.json").exists()
