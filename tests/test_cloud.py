"""Inputs where the data lives: rasters, vector files and legends read from a real S3-compatible
server (moto's server mode on 127.0.0.1) and over HTTP with range requests, equal to the same
inputs read from disk."""

import json

import numpy as np
import pytest

from kerinci_xr.cli import main
from kerinci_xr.cube import open_cube
from kerinci_xr.legend import read_legend

from .test_mosaic import _cut

#: this module's tests run on one xdist worker (they share its module fixtures)
pytestmark = pytest.mark.xdist_group("cloud")


def _prepare(image, labels, legend, radar, out, *extra):
    return [
        "-q",
        "prepare",
        "--image",
        image,
        "--labels",
        labels,
        "--legend",
        legend,
        "--radar",
        radar,
        "--chunk",
        "64",
        *extra,
        "--out",
        str(out),
    ]


def _same_cube(a, b):
    ta, tb = open_cube(a), open_cube(b)
    for name in ("image", "valid", "labels"):
        np.testing.assert_array_equal(ta[name].values, tb[name].values)
    assert list(ta["band"].values) == list(tb["band"].values)
    assert ta.rio.transform() == tb.rio.transform()


@pytest.fixture(scope="module")
def on_s3(s3, small_scene):
    _, put = s3
    return {
        k: put(getattr(small_scene, k), f"kx-inputs/scene/{getattr(small_scene, k).name}", public=True)
        for k in ("landsat", "labels", "legend", "palsar")
    }


def test_prepare__every_input_from_s3_equals_the_local_run(on_s3, small_scene, tmp_path):
    local = [str(getattr(small_scene, k)) for k in ("landsat", "labels", "legend", "palsar")]
    remote = [on_s3[k] for k in ("landsat", "labels", "legend", "palsar")]
    assert main(_prepare(*local, tmp_path / "local.zarr")) == 0
    assert main(_prepare(*remote, tmp_path / "s3.zarr")) == 0
    _same_cube(tmp_path / "local.zarr", tmp_path / "s3.zarr")
    inputs = json.loads(open_cube(tmp_path / "s3.zarr").attrs["provenance"])["inputs"]
    assert inputs["image"] == on_s3["landsat"]  # the URL as given, not folded to s3:/
    assert read_legend(on_s3["legend"]).to_dict() == read_legend(small_scene.legend).to_dict()


def test_prepare__over_http_range_requests_and_gdal_vsi_names(s3, on_s3, small_scene, tmp_path):
    endpoint, _ = s3
    https = {k: v.replace("s3://", f"{endpoint}/") for k, v in on_s3.items()}  # public objects
    vsi = {k: v.replace("s3://", "/vsis3/") for k, v in on_s3.items()}
    assert (
        main(_prepare(https["landsat"], vsi["labels"], https["legend"], vsi["palsar"], tmp_path / "h.zarr"))
        == 0
    )
    assert (
        main(
            _prepare(
                *(str(getattr(small_scene, k)) for k in ("landsat", "labels", "legend", "palsar")),
                tmp_path / "local.zarr",
            )
        )
        == 0
    )
    _same_cube(tmp_path / "local.zarr", tmp_path / "h.zarr")


def test_prepare__a_glob_on_s3_lists_the_tiles_of_an_export(s3, small_scene, tmp_path):
    _, put = s3
    tiles = _cut(small_scene.landsat, tmp_path / "tiles", (0, 150, 320), (0, 140, 300))
    for t in tiles:
        put(t, f"kx-tiles/export/{t.name}")
    pattern = "s3://kx-tiles/export/Landsat_Kerinci_2023_v1-*.tif"
    assert (
        main(["-q", "prepare", "--image", pattern, "--chunk", "64", "--out", str(tmp_path / "m.zarr")]) == 0
    )
    assert (
        main(
            [
                "-q",
                "prepare",
                "--image",
                str(small_scene.landsat),
                "--chunk",
                "64",
                "--out",
                str(tmp_path / "one.zarr"),
            ]
        )
        == 0
    )
    a, b = open_cube(tmp_path / "m.zarr"), open_cube(tmp_path / "one.zarr")
    np.testing.assert_array_equal(a["image"].values, b["image"].values)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://kx-inputs/scene/nope.tif", "s3://kx-inputs/scene/nope.tif: raster not found there"),
        ("s3://kx-no-such-bucket/scene.tif", "s3://kx-no-such-bucket/scene.tif: raster not found there"),
        ("ftp://host/scene.tif", "found the scheme 'ftp', which GDAL cannot read"),
    ],
)
def test_prepare__bad_urls_one_line_naming_the_url(on_s3, tmp_path, capsys, url, message):
    assert main(["-q", "prepare", "--image", url, "--out", str(tmp_path / "c.zarr")]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "c.zarr").exists()


def test_prepare__unreachable_endpoint_and_missing_legend(on_s3, tmp_path, capsys, monkeypatch):
    assert (
        main(
            [
                "-q",
                "prepare",
                "--image",
                on_s3["landsat"],
                "--labels",
                on_s3["labels"],
                "--legend",
                "s3://kx-inputs/scene/none.json",
                "--out",
                str(tmp_path / "c.zarr"),
            ]
        )
        == 2
    )
    assert "s3://kx-inputs/scene/none.json: legend file not found there" in capsys.readouterr().err
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead}")
    monkeypatch.setenv("AWS_S3_ENDPOINT", f"127.0.0.1:{dead}")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    assert main(["-q", "prepare", "--image", on_s3["landsat"], "--out", str(tmp_path / "c.zarr")]) == 2
    err = capsys.readouterr().err
    assert on_s3["landsat"] in err
    assert "AWS_ENDPOINT_URL" in err
    assert not (tmp_path / "c.zarr").exists()


def test_outputs_on_s3__missing_bucket_and_unreachable_endpoint_one_line(
    on_s3, small_scene, tmp_path, capsys, monkeypatch
):
    argv = ["-q", "prepare", "--image", str(small_scene.landsat), "--chunk", "64"]
    assert main([*argv, "--out", "s3://kx-no-such-bucket/cube.zarr"]) == 2
    err = capsys.readouterr().err
    assert "s3://kx-no-such-bucket/cube.zarr: the bucket s3://kx-no-such-bucket does not exist" in err
    assert "Traceback" not in err
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert main([*argv, "--out", "s3://kx-inputs/out/cube.zarr"]) == 2
    err = capsys.readouterr().err
    assert "s3://kx-inputs/out/cube.zarr" in err
    assert "AWS_ENDPOINT_URL" in err
    assert "Traceback" not in err


def test_prepare__a_truncated_object_one_line_naming_it(s3, small_scene, tmp_path, capsys):
    _, put = s3
    data = small_scene.landsat.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 3])  # an upload that stopped a third of the way
    url = put(cut, "kx-inputs/broken/Landsat_Kerinci_2023_v1.tif")
    code = main(["-q", "prepare", "--image", url, "--chunk", "64", "--out", str(tmp_path / "c.zarr")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert url in err
    assert "Traceback" not in err
    assert not (tmp_path / "c.zarr").exists()
