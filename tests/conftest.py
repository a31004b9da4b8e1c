"""Shared fixtures: real data from ../shared/data, small generated scenes, a compute counter."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test with the reason."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent (../shared/data not checked out beside the project)")
    return path


class ComputeCounter:
    """A dask scheduler that counts calls and can refuse to compute at all."""

    def __init__(self, max_computes: int = 0) -> None:
        self.max_computes = max_computes
        self.total = 0

    def __call__(self, dsk, keys, **kwargs):
        self.total += 1
        if self.total > self.max_computes:
            raise RuntimeError(f"Too many dask computations: {self.total} > allowed {self.max_computes}")
        return dask.get(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0):
    """Fail when the block triggers more than ``max_computes`` dask computations."""
    counter = ComputeCounter(max_computes)
    with dask.config.set(scheduler=counter):
        yield counter


@pytest.fixture(scope="session")
def nc_paths() -> dict[str, Path]:
    return {
        "image": shared_file("nc_landsat7", "nc_landsat7_2000_6band_dn.tif"),
        "labels": shared_file("nc_landsat7", "nc_landclass96_labels.tif"),
        "legend": shared_file("nc_landsat7", "nc_lc.json"),
    }


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory):
    """A generated 320 x 300 Kerinci-like scene (Landsat, PALSAR, labels, lc.json)."""
    from kerinci_xr.synthetic import make_kerinci_scene

    return make_kerinci_scene(tmp_path_factory.mktemp("scene"), height=320, width=300, seed=3)


@pytest.fixture(scope="session")
def cube_path(small_scene, tmp_path_factory):
    """The cube of :func:`small_scene` with its radar (64-px chunks), written once per session
    by the library (``build_cube`` + ``write_cube``); shared read-only."""
    from kerinci_xr.cube import build_cube, write_cube
    from kerinci_xr.legend import read_legend

    ds = build_cube(
        small_scene.landsat,
        small_scene.labels,
        legend=read_legend(small_scene.legend),
        radar=small_scene.palsar,
        chunks=64,
    )
    return write_cube(ds, tmp_path_factory.mktemp("cube") / "cube.zarr")


def grid_map(arr, *, crs=32748, res=30.0, origin=(0.0, 1000.0), chunks=None):
    """A georeferenced ``(y, x)`` DataArray of ``arr`` (north-up, ``res`` m pixels, top-left
    corner at ``origin``); dask-backed when ``chunks`` is given."""
    import dask.array as da
    import numpy as np
    import xarray as xr
    from affine import Affine

    h, w = arr.shape
    x0, y0 = origin
    data = da.from_array(arr, chunks=chunks) if chunks is not None else arr
    out = xr.DataArray(
        data,
        dims=("y", "x"),
        coords={"y": y0 - res * (np.arange(h) + 0.5), "x": x0 + res * (np.arange(w) + 0.5)},
    )
    return out.rio.write_crs(crs).rio.write_transform(Affine(res, 0, x0, 0, -res, y0))


def sampled_run(
    root: Path, *, height: int, width: int, seed: int, chunk: int, per_class: int, block: int = 96
):
    """A generated scene prepared into a cube and sampled into 32 x 32 patches (public stages)."""
    import warnings

    from kerinci_xr.api import prepare, sample
    from kerinci_xr.synthetic import make_kerinci_scene

    scene = make_kerinci_scene(root / "scene", height=height, width=width, seed=seed)
    cube = prepare(
        scene.landsat,
        labels=scene.labels,
        legend=scene.legend,
        radar=scene.palsar,
        chunk=chunk,
        out=root / "cube.zarr",
    )["cube"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in small splits
        store = sample(cube, out=root / "patches.zarr", per_class=per_class, patch=32, seed=0, block=block)[
            "patches"
        ]
    return scene, cube, store


@pytest.fixture(scope="session")
def small_run(small_scene, tmp_path_factory):
    """One small run of the public stages on :func:`small_scene`, shared read-only: a cube
    (64-px chunks), a patch store with its manifest, a tiny model and its prediction with a COG.
    Tests that change a product copy it first."""
    import warnings

    from kerinci_xr import api

    root = tmp_path_factory.mktemp("run")
    cube = api.prepare(
        small_scene.landsat,
        labels=small_scene.labels,
        legend=small_scene.legend,
        chunk=64,
        out=root / "cube.zarr",
    )["cube"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in small splits
        store = api.sample(cube, out=root / "patches.zarr", per_class=3, patch=32, block=64, seed=0)
    model = api.train(store["patches"], out=root / "model.pt", epochs=1, depth=2, base=8, batch_size=8)
    pred = api.predict(cube, model=model["model"], out=root / "prediction.zarr", cog=root / "map.tif")
    return {
        "root": root,
        "cube": Path(cube),
        "patches": Path(store["patches"]),
        "manifest": Path(store["manifest"]),
        "model": Path(model["model"]),
        "prediction": Path(pred["prediction"]),
        "cog": Path(pred["cog"]),
    }


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A real Dask cluster shared by the session: ``dask scheduler`` and two ``dask worker``
    processes, each started in its own working directory (so a relative path the client gives
    means nothing to a worker). Yields the scheduler address; tests connect with ``Client``."""
    from kerinci_xr.testing import dask_processes

    with dask_processes(tmp_path_factory.mktemp("cluster")) as address:
        yield address


@pytest.fixture(scope="session")
def private_cluster(s3, tmp_path_factory):
    """A Dask cluster whose workers share no disk with the client: the scheduler and two workers,
    each in a mount namespace of its own with an empty tmpfs over the session's temporary folder,
    where every file the tests write lives (the client's inputs and outputs), so every byte the
    workers read or write goes through the S3 server. Skipped where namespaces cannot be made."""
    import shutil
    import tempfile

    from kerinci_xr.testing import dask_processes, private_namespaces

    hidden = tmp_path_factory.getbasetemp()
    why = private_namespaces(hidden)
    if why is not None:
        pytest.skip(f"no private mount namespaces here ({why})")
    root = Path(tempfile.mkdtemp(prefix="kx-private-cluster-"))  # outside the hidden folder
    try:
        with dask_processes(root, hide=hidden) as address:
            yield address
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3-compatible server on 127.0.0.1 (moto's server mode, a separate process), with
    the standard variables set for this session: ``AWS_ENDPOINT_URL`` and test credentials.
    Yields ``(endpoint, put)``: ``put(local_path, "bucket/key", public=False)`` uploads a file
    (creating the bucket) and returns its ``s3://`` URL."""
    import os
    import socket

    pytest.importorskip("moto", reason="moto[server] (the dev extra) runs the local S3 server")
    import boto3

    with socket.socket() as sock:  # a free port for the server
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path_factory.mktemp("s3") / "moto.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in [*env, "AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING"]}
    os.environ.update(env)
    for k in ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING"):
        os.environ.pop(k, None)  # derived from AWS_ENDPOINT_URL by the toolkit
    while True:  # the condition: the server accepts connections
        if proc.poll() is not None:
            pytest.fail("the S3 server did not start")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    client = boto3.client("s3", endpoint_url=endpoint)
    buckets: set[str] = set()

    def put(path, key, public=False):
        bucket, name = key.split("/", 1)
        if bucket not in buckets:
            client.create_bucket(Bucket=bucket, ACL="public-read")
            buckets.add(bucket)
        client.upload_file(str(path), bucket, name, ExtraArgs={"ACL": "public-read"} if public else None)
        return f"s3://{key}"

    try:
        yield endpoint, put
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: The demo as the suite runs it: the whole packaged pipeline on a 600 x 600 scene, one epoch.
DEMO_ARGS = ("--size", "600", "--epochs", "1")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The demo pipeline run once per session through the CLI (its run folder and what it
    printed), shared read-only by the tests of the demo, the pipeline runner and the report."""
    import io
    from contextlib import redirect_stdout

    from kerinci_xr.cli import main

    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with redirect_stdout(printed):
        code = main(["-q", "demo", "--out", str(out), *DEMO_ARGS])
    assert code == 0, printed.getvalue()
    return out, printed.getvalue()


#: A child that runs the CLI but waits, holding its outputs, until a file appears (bounded).
WAITER = textwrap.dedent(
    """
    import pathlib, sys, time
    go, ready, argv = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
    import kerinci_xr.stages._base as base
    orig = base.check_outputs
    def check_then_wait(*a, **k):
        orig(*a, **k)
        ready.write_text("claimed")
        for _ in range(6000):  # 10 minutes at most: the test creates the file long before
            if go.exists():
                break
            time.sleep(0.1)
    base.check_outputs = check_then_wait
    from kerinci_xr.cli import main
    sys.exit(main(argv))
    """
)


def waiting_child(tmp_path, *argv):
    """The CLI in a child process that stops once its outputs are claimed (it writes ``ready``)
    and goes on when the test writes ``go``: returns the process and both paths."""
    script, go, ready = tmp_path / "waiter.py", tmp_path / "go", tmp_path / "ready"
    script.write_text(WAITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(go), str(ready), *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, go, ready


def wait_for(path: Path, proc) -> None:
    """Until ``path`` exists (the child says so), or the child ended early (then fail)."""
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"the child ended early: {proc.communicate()[1]}")
        time.sleep(0.05)  # polling the condition, not a guess at how long it takes
