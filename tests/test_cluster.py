"""A real cluster: a scheduler and two workers, separate processes in their own working directories."""

import shutil
import sys

import numpy as np
import pytest

from kerinci_xr import cluster as kcluster
from kerinci_xr.cli import main
from kerinci_xr.cube import open_cube
from kerinci_xr.patches import open_patches

#: the tests that share this group's session fixtures run on one xdist worker
pytestmark = pytest.mark.xdist_group("cluster")


class _NotATerminal:
    """stderr as a log file is (not a TTY); a progress line releases the task that waits for it."""

    def __init__(self, real, go):
        self.real, self.go, self.lines = real, go, []

    def write(self, text):
        self.lines.append(text)
        if text.startswith("progress:"):
            self.go.write_text("a progress line was written")
        return self.real.write(text)

    def flush(self):
        self.real.flush()

    def isatty(self):
        return False


def test_compute__progress_lines_on_a_cluster_while_a_task_runs(cluster, tmp_path, monkeypatch):
    """With stderr not a terminal, a compute that outlasts the progress interval prints a line and
    finishes (``distributed.wait`` raised TimeoutError at the first interval)."""
    import dask
    from distributed import Client

    go = tmp_path / "go"

    def wait_for_a_progress_line(path):
        import pathlib
        import time

        while not pathlib.Path(path).exists():  # the condition: the client printed a line
            time.sleep(0.01)
        return 42

    monkeypatch.setattr(kcluster, "LOG_EVERY_S", 0.05)
    monkeypatch.setattr(sys, "stderr", _NotATerminal(sys.stderr, go))
    with Client(cluster):
        (value,) = kcluster.compute(dask.delayed(wait_for_a_progress_line)(str(go)), progress=True)
    assert value == 42
    assert any(line.startswith("progress: 0 of 1 results") for line in sys.stderr.lines)


def test_prepare_and_sample__relative_paths_on_a_cluster_equal_threads(
    cluster, small_scene, tmp_path, monkeypatch, capsys
):
    """Every README example uses relative paths; the workers, started elsewhere, must see the
    files the client means."""
    shutil.copytree(small_scene.landsat.parent, tmp_path / "scene")
    monkeypatch.chdir(tmp_path)
    names = {k: f"scene/{getattr(small_scene, k).name}" for k in ("landsat", "labels", "legend", "palsar")}
    prepare = ["prepare", "--image", names["landsat"], "--labels", names["labels"], "--legend"]
    prepare += [names["legend"], "--radar", names["palsar"], "--chunk", "64"]
    assert main([*prepare, "--scheduler", cluster, "--out", "cluster.zarr"]) == 0
    assert main(["-q", *prepare, "--out", "threads.zarr"]) == 0
    a, b = open_cube(tmp_path / "cluster.zarr"), open_cube(tmp_path / "threads.zarr")
    for name in ("image", "valid", "labels"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    sample = ["sample", "--per-class", "3", "--patch", "32", "--block", "64"]
    with pytest.warns(UserWarning):  # rare classes in small splits
        assert main([*sample, "cluster.zarr", "--scheduler", cluster, "--out", "p_cluster.zarr"]) == 0
        assert main(["-q", *sample, "threads.zarr", "--out", "p_threads.zarr"]) == 0
    pa, pb = open_patches(tmp_path / "p_cluster.zarr"), open_patches(tmp_path / "p_threads.zarr")
    np.testing.assert_array_equal(pa["image"].values, pb["image"].values)
    np.testing.assert_array_equal(pa["labels"].values, pb["labels"].values)
    err = capsys.readouterr().err
    assert "damaged" not in err
    assert "Dask cluster at" in err
