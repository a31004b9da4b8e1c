"""Products on object storage (a real S3 server, moto's server mode): the small run of the public
stages with every input and output on S3 equals the local run bit for bit, also on a Dask
cluster whose workers share no disk with the client; a stage's outputs there are committed as
one set (kills at chosen points leave the whole old set or the whole new set); a second writer
fails clearly; --overwrite replaces only what the toolkit wrote; earlier versions reopen."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from kerinci_xr import api
from kerinci_xr._products import Kind, product_bytes
from kerinci_xr.cli import main
from kerinci_xr.cube import open_cube
from kerinci_xr.errors import OutputExistsError
from kerinci_xr.patches import open_patches
from kerinci_xr.prediction import open_prediction
from kerinci_xr.sampling import read_manifest

from .conftest import wait_for

#: this module's tests run on one xdist worker (they share its module fixtures)
pytestmark = pytest.mark.xdist_group("objects")


@pytest.fixture(scope="module")
def inputs(s3, small_scene):
    """The small scene's files on S3 (only there: a private cluster's workers see no local file)."""
    _, put = s3
    return {
        k: put(getattr(small_scene, k), f"kx-obj/scene/{getattr(small_scene, k).name}")
        for k in ("landsat", "labels", "legend")
    }


def _run(inputs, root, **where):
    """The stages of the session's ``small_run``, with the same options, writing under ``root``."""
    cube = api.prepare(
        inputs["landsat"],
        labels=inputs["labels"],
        legend=inputs["legend"],
        chunk=64,
        out=f"{root}/cube.zarr",
        **where,
    )["cube"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rare classes in small splits, as in the local run
        store = api.sample(
            str(cube), out=f"{root}/patches.zarr", per_class=3, patch=32, block=64, seed=0, **where
        )
    model = api.train(str(store["patches"]), out=f"{root}/model.pt", epochs=1, depth=2, base=8, batch_size=8)
    api.predict(
        str(cube), model=str(model["model"]), out=f"{root}/prediction.zarr", cog=f"{root}/map.tif", **where
    )
    return root


def _same_as_local(root, small_run):
    for name, open_ in (("cube", open_cube), ("patches", open_patches), ("prediction", open_prediction)):
        a, b = open_(f"{root}/{name}.zarr"), open_(small_run[name])
        assert sorted(a.data_vars) == sorted(b.data_vars)
        for v in b.data_vars:
            np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=f"{name}/{v}")
        assert a.rio.transform() == b.rio.transform()
    assert read_manifest(f"{root}/patches.csv").equals(read_manifest(small_run["manifest"]))
    remote = torch.load(io.BytesIO(product_bytes(f"{root}/model.pt", Kind.MODEL)), weights_only=True)
    local = torch.load(small_run["model"], weights_only=True)
    for k, w in local["model_state"].items():
        assert torch.equal(remote["model_state"][k], w), k
    assert product_bytes(f"{root}/map.tif", Kind.COG) == small_run["cog"].read_bytes()


@pytest.fixture(scope="module")
def s3_run(inputs):
    return _run(inputs, "s3://kx-obj/run")


def test_small_run_on_s3__equals_the_local_run(s3_run, small_run):
    _same_as_local(s3_run, small_run)


def test_private_cluster__every_byte_through_s3_equals_the_local_run(private_cluster, inputs, small_run):
    """Workers in mount namespaces of their own see none of the client's files: prepare, sample
    and predict run on them, reading and writing only S3, and give the local threaded run."""
    _same_as_local(_run(inputs, "s3://kx-obj/cluster", scheduler=private_cluster), small_run)


def test_private_cluster__local_paths_refused_before_any_work(
    private_cluster, small_scene, s3_run, tmp_path, capsys
):
    argv = ["-q", "prepare", "--image", str(small_scene.landsat), "--scheduler", private_cluster]
    assert main([*argv, "--out", "s3://kx-obj/refused/cube.zarr"]) == 2
    err = capsys.readouterr().err
    assert f"image[0] {small_scene.landsat} is on a disk the Dask cluster's workers do not see" in err
    assert "Fix: put it on object storage" in err
    cube = f"{s3_run}/cube.zarr"
    argv = ["-q", "sample", cube, "--per-class", "2", "--patch", "32", "--scheduler", private_cluster]
    assert main([*argv, "--out", str(tmp_path / "p.zarr")]) == 2
    err = capsys.readouterr().err
    assert f"patches {tmp_path / 'p.zarr'} is on a disk the Dask cluster's workers do not see" in err
    assert "and the workers write it" in err
    assert not (tmp_path / "p.zarr").exists()
    assert not list(tmp_path.iterdir())  # no probe left behind


#: A child that runs the CLI and dies (SIGKILL, as kill -9 does) at a chosen point of the set's
#: commit on object storage, or after N groups of patches are written.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    mode, arg, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    import kerinci_xr._objects as o
    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "journal":  # just before the journal (the commit point) is written
        put = o._put_json
        o._put_json = lambda url, doc: die() if "state" in doc else put(url, doc)
    elif mode == "forward":  # after the journal, with the first staged object copied onto its target
        copy, n = o._fs_copy, [0]
        def copy_then_die(*a):
            copy(*a)
            die()
        o._fs_copy = copy_then_die
    elif mode == "groups":  # mid-write: after N groups of patches
        import kerinci_xr.patches as p
        cut, n = p._cut_group, [0]
        def cut_some(*a, **k):
            n[0] += 1
            if n[0] > int(arg):
                die()
            return cut(*a, **k)
        p._cut_group = cut_some
    from kerinci_xr.cli import main
    sys.exit(main(argv))
    """
)


def _killed(tmp_path, mode, argv, arg=0):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.run(
        [sys.executable, str(script), mode, str(arg), *argv], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -9, proc.stderr


def _sample(cube, root, seed):
    return [
        "-q",
        "sample",
        cube,
        "--out",
        f"{root}/patches.zarr",
        "--per-class",
        "3",
        "--patch",
        "32",
        "--block",
        "64",
        "--seed",
        str(seed),
        "--overwrite",
    ]


def _seed(root):
    """The seed of the patch store and of its manifest, each as a reader sees it."""
    return int(open_patches(f"{root}/patches.zarr").attrs["seed"]), int(
        read_manifest(f"{root}/patches.csv")["seed"].iloc[0]
    )


def test_kills_on_s3__the_old_set_or_the_new_set_never_a_mix(s3, s3_run, tmp_path):
    import boto3

    endpoint, _ = s3
    client = boto3.client("s3", endpoint_url=endpoint)
    cube, root = f"{s3_run}/cube.zarr", "s3://kx-obj/kills"
    assert main(_sample(cube, root, 0)) == 0
    assert _seed(root) == (0, 0)
    # killed mid-write (after 2 groups of patches): nothing committed, the old set stays
    _killed(tmp_path, "groups", _sample(cube, root, 1), 2)
    assert _seed(root) == (0, 0)
    # killed just before the commit point: its objects are staged, none in place
    _killed(tmp_path, "journal", _sample(cube, root, 2))
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="kx-obj", Prefix="kills/")["Contents"]]
    assert any(k.startswith("kills/.patches.csv.tmp-") for k in keys)  # staged, not in place
    assert _seed(root) == (0, 0)
    # killed after the commit point, one object copied in place and the store not yet moved:
    # on S3 itself the two disagree, and a reader finishes the set before it reads
    _killed(tmp_path, "forward", _sample(cube, root, 3))
    raw = client.get_object(Bucket="kx-obj", Key="kills/patches.csv")["Body"].read().decode()
    assert raw.splitlines()[1].split(",")[-1] == "3"  # the new manifest, in place
    assert _seed(root) == (3, 3)  # and the store that goes with it: the whole new set
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="kx-obj", Prefix="kills/")["Contents"]]
    assert not any(k.startswith("kills/.kerinci-set-") for k in keys)  # the journal, finished
    # the next run writes a whole new set
    assert main(_sample(cube, root, 4)) == 0
    assert _seed(root) == (4, 4)


def test_second_writer_on_s3__the_one_that_commits_second_fails(s3_run, tmp_path, capsys):
    cube, root = f"{s3_run}/cube.zarr", "s3://kx-obj/writers"
    script = tmp_path / "slow.py"
    go, ready = tmp_path / "go", tmp_path / "ready"
    script.write_text(
        textwrap.dedent(
            """
        import pathlib, sys, time
        go, ready, argv = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3:]
        import kerinci_xr._objects as o
        commit = o.RemoteSet.commit
        def wait_then_commit(self):
            ready.write_text("about to commit")
            while not go.exists():
                time.sleep(0.05)
            return commit(self)
        o.RemoteSet.commit = wait_then_commit
        from kerinci_xr.cli import main
        sys.exit(main(argv))
        """
        )
    )
    first = subprocess.Popen(
        [sys.executable, str(script), str(go), str(ready), *_sample(cube, root, 5)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(ready, first)
    assert main(_sample(cube, root, 6)) == 0  # the second writer commits first
    go.write_text("go")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 2
    assert "another kerinci-xr run committed this store while this one ran" in err
    assert _seed(root) == (6, 6)


def test_overwrite_on_s3__only_what_the_toolkit_wrote_and_earlier_versions_reopen(s3, s3_run, inputs, capsys):
    _, put = s3
    url = f"{s3_run}/cube.zarr"
    assert main(["-q", "prepare", "--image", inputs["landsat"], "--out", url]) == 2
    assert f"{url}: output exists" in capsys.readouterr().err
    put(Path(__file__), "kx-obj/foreign/cube.zarr/notes.txt")  # someone else's objects
    assert (
        main(
            [
                "-q",
                "prepare",
                "--image",
                inputs["landsat"],
                "--out",
                "s3://kx-obj/foreign/cube.zarr",
                "--overwrite",
            ]
        )
        == 2
    )
    assert "found objects this toolkit did not write" in capsys.readouterr().err
    from kerinci_xr._objects import open_repository

    before = open_repository(url).lookup_branch("main")
    with pytest.raises(OutputExistsError):
        api.prepare(inputs["landsat"], out=url)
    api.prepare(inputs["landsat"], chunk=32, out=url, overwrite=True)  # no labels now, other chunks
    assert "labels" not in open_cube(url)
    old = open_cube(f"{url}@{before}")
    assert "labels" in old
    assert old["image"].chunks[1][0] == 64


@pytest.mark.slow
def test_demo_on_s3_and_a_private_cluster__equals_the_local_demo(demo_run, private_cluster, inputs, capsys):
    """The whole demo pipeline with every input and output in a bucket (the one ``inputs`` made),
    computed by workers that see no file of the client's, gives the products of the local demo."""
    from .conftest import DEMO_ARGS

    root = "s3://kx-obj/demo"
    code = main(["-q", "demo", "--out", root, *DEMO_ARGS, "--scheduler", private_cluster])
    assert code == 0, capsys.readouterr().err
    local, _ = demo_run
    stores = {"cube": open_cube, "patches": open_patches, "prediction": open_prediction}
    for name, open_ in stores.items():
        a, b = open_(f"{root}/{name}.zarr"), open_(local / f"{name}.zarr")
        for v in b.data_vars:
            np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=f"{name}/{v}")
    remote = torch.load(io.BytesIO(product_bytes(f"{root}/model.pt", Kind.MODEL)), weights_only=True)
    for k, w in torch.load(local / "model.pt", weights_only=True)["model_state"].items():
        assert torch.equal(remote["model_state"][k], w), k
    for name in ("map.tif", "change.tif", "areas.csv", "transitions.csv", "patches.csv"):
        assert product_bytes(f"{root}/{name}", Kind.AREAS) == (local / name).read_bytes(), name
