import json
import subprocess
import sys
import time

import pytest

from kerinci_xr.cli import main
from kerinci_xr.cube import open_cube
from kerinci_xr.io import open_raster


def _legend_without(legend_path, code, out):
    """The legend with one class left out."""
    from kerinci_xr.legend import Legend, read_legend

    full = read_legend(legend_path)
    keep = [i for i, v in enumerate(full.values) if v != code]
    Legend(
        values=[full.values[i] for i in keep],
        labels=[full.labels[i] for i in keep],
        palette=[full.palette[i] for i in keep],
    ).write(out)


def _prepare(scene, out, *extra: str) -> list[str]:
    """argv of `prepare` on a generated scene (Landsat, labels, legend) plus ``extra``."""
    return [
        "-q",
        "prepare",
        "--image",
        str(scene.landsat),
        "--labels",
        str(scene.labels),
        "--legend",
        str(scene.legend),
        *extra,
        "--out",
        str(out),
    ]


def test_prepare_and_info__real_nc_pair(tmp_path, nc_paths, capsys):
    out = tmp_path / "nc.zarr"
    rc = main(
        [
            "-q",
            "prepare",
            "--image",
            str(nc_paths["image"]),
            "--labels",
            str(nc_paths["labels"]),
            "--legend",
            str(nc_paths["legend"]),
            "--scale",
            str(1 / 255),
            "--chunk",
            "256",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert out.exists()
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == {"y": 443, "x": 489}
    assert {r["name"]: r["pixels"] for r in info["classes"]}["sediment"] == 194
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sediment" in text
    assert "hectares" in text
    assert "EPSG:32119" in text


def test_prepare__with_radar_on_a_local_cluster(tmp_path, small_scene, capsys):
    out = tmp_path / "cube.zarr"
    rc = main(
        _prepare(small_scene, out, "--radar", str(small_scene.palsar), "--chunk", "128", "--workers", "2")
    )
    assert rc == 0
    assert list(open_cube(out)["band"].values)[-2:] == ["HH", "HV"]


def test_prepare__unknown_codes_strict_writes_nothing(tmp_path, small_scene, capsys):

    _legend_without(small_scene.legend, 2002, tmp_path / "lc.json")  # a class that is present
    args = [
        "-q",
        "prepare",
        "--image",
        str(small_scene.landsat),
        "--labels",
        str(small_scene.labels),
        "--legend",
        str(tmp_path / "lc.json"),
        "--out",
        str(tmp_path / "cube.zarr"),
    ]
    assert main([*args, "--strict"]) == 2
    err = capsys.readouterr().err
    assert "code(s) missing from the legend" in err
    assert "2002" in err
    # the text says what happened (refused), not what happens without --strict
    assert "--strict refuses them" in err
    assert "run without --strict" in err
    assert "they become 0" not in err
    assert not (tmp_path / "cube.zarr").exists()
    with pytest.warns(UserWarning, match="missing from the legend"):
        assert main(args) == 0
    prov = json.loads(open_cube(tmp_path / "cube.zarr").attrs["provenance"])
    assert int(prov["unknown_label_codes"]["2002"]) > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--image": "missing.tif"}, "missing.tif: raster not found"),
        ({"--legend": "notjson"}, "not JSON"),
        ({"--bands": "B1,B2,B3"}, "3 band names given"),
        ({"--labels": "offgrid"}, "expected labels on the grid"),
    ],
)
def test_prepare__bad_input_exit_2_nothing_written(tmp_path, small_scene, capsys, change, message):
    (tmp_path / "notjson").write_text("{oops")
    args = {
        "--image": str(small_scene.landsat),
        "--labels": str(small_scene.labels),
        "--legend": str(small_scene.legend),
        "--out": str(tmp_path / "cube.zarr"),
    }
    for k, v in change.items():
        if v == "notjson":
            v = str(tmp_path / "notjson")
        elif v == "offgrid":  # the labels cropped: another shape and origin
            v = str(tmp_path / "offgrid.tif")
            open_raster(small_scene.labels).isel(y=slice(10, None), x=slice(5, None)).rio.to_raster(v)
        elif v.endswith(".tif"):
            v = str(tmp_path / v)
        args[k] = v
    argv = ["-q", "prepare", *[x for kv in args.items() for x in kv]]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cube.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cube.zarr")]


def test_prepare__refuses_existing_output(tmp_path, small_scene, capsys):
    out = tmp_path / "cube.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    rc = main(["prepare", "--image", str(small_scene.landsat), "--out", str(out)])
    assert rc == 2
    assert "output exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "user data"


def test_python_dash_m__help_for_every_command(capsys):
    # python -m runs the CLI (one child process) ...
    res = subprocess.run(
        [sys.executable, "-m", "kerinci_xr", "demo", "--help"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "usage: kerinci-xr demo" in res.stdout
    # ... whose every command has its help
    from kerinci_xr.stages import STAGES

    for cmd in ([], *([name] for name in STAGES), ["demo"], ["run"]):
        with pytest.raises(SystemExit) as exit_:
            main([*cmd, "--help"])
        assert exit_.value.code == 0
        assert f"usage: kerinci-xr {' '.join(cmd)}".strip() in capsys.readouterr().out


def test_help__does_not_import_torch_or_the_model_libraries():
    """``--help`` of every command in a fresh interpreter: PyTorch, LightGBM and the plotting
    libraries are imported by the stages that run them, not to print options (381 MB and 4.5 s
    before; about 210 MB and 2 s now, on 2 cores)."""
    code = (
        "import sys, contextlib, io\n"
        "from kerinci_xr.cli import main\n"
        "from kerinci_xr.stages import STAGES\n"
        "for cmd in ([], *([n] for n in STAGES), ['demo'], ['run']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "        main([*cmd, '--help'])\n"
        "    assert 'usage: kerinci-xr' in out.getvalue(), cmd\n"
        "heavy = ('torch', 'lightgbm', 'sklearn', 'holoviews', 'bokeh', 'panel')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_info__not_a_cube(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "expected a cube written by kerinci-xr prepare" in capsys.readouterr().err


def test_sample__cli_writes_store_and_manifest(tmp_path, small_scene, capsys):
    cube = tmp_path / "cube.zarr"
    assert main(_prepare(small_scene, cube, "--chunk", "100")) == 0
    out = tmp_path / "patches.zarr"
    argv = [
        "-q",
        "sample",
        str(cube),
        "--per-class",
        "3",
        "--patch",
        "32",
        "--block",
        "80",
        "--fractions",
        "0.6,0.2,0.2",
        "--out",
        str(out),
        "--manifest",
        str(tmp_path / "m.parquet"),
    ]
    with pytest.warns(UserWarning, match="fewer eligible centres"):
        assert main(argv) == 0
    from kerinci_xr.patches import open_patches
    from kerinci_xr.sampling import read_manifest

    m = read_manifest(tmp_path / "m.parquet")
    assert len(m) == open_patches(out).sizes["patch"]
    assert set(m["split"]) == {"train", "val", "test"}
    assert main([*argv[:-4], "--out", str(out)]) == 2  # exists
    assert "output exists" in capsys.readouterr().err
    assert main(["-q", "sample", str(cube), "--patch", "999", "--out", str(tmp_path / "x.zarr")]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()
    assert main(["-q", "sample", str(cube), "--fractions", "0.5,0.2", "--out", str(tmp_path / "y.zarr")]) == 2
    assert "fractions must be a list of 3 numbers" in capsys.readouterr().err


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    """The CLI in a child process, stderr a pipe (not a terminal, as in a batch job's log)."""
    return subprocess.run([sys.executable, "-m", "kerinci_xr", *args], capture_output=True, text=True, **kw)


def test_prepare__not_a_terminal_writes_few_lines_and_plain_warnings(tmp_path):
    import re

    from kerinci_xr.synthetic import make_kerinci_scene

    scene = make_kerinci_scene(tmp_path / "scene", height=1500, width=1500, seed=0, radar=False)
    _legend_without(scene.legend, 2002, tmp_path / "lc.json")  # a code of the labels goes missing
    res = _cli(
        "prepare",
        "--image",
        str(scene.landsat),
        "--labels",
        str(scene.labels),
        "--legend",
        str(tmp_path / "lc.json"),
        "--chunk",
        "256",
        "--out",
        str(tmp_path / "cube.zarr"),
        check=False,
    )
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in re.split(r"[\r\n]+", res.stdout + res.stderr) if ln.strip()]
    assert len(lines) <= 15, lines  # no redrawn progress frames in a log
    warning = [ln for ln in lines if ln.startswith("warning:")]
    assert warning
    assert "missing from the legend" in warning[0]
    assert not [ln for ln in lines if ".py" in ln]  # no source file and line of the toolkit
    again = _cli("info", str(tmp_path / "cube.zarr"), "-q", check=False)  # -q after the subcommand
    assert again.returncode == 0
    assert "grid" in again.stdout


def test_cli__interrupt_exits_130_with_one_line(tmp_path):
    import signal

    out = tmp_path / "s"
    argv = ["synth", "--out", str(out), "--height", "6000", "--width", "6000", "--no-radar"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerinci_xr", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # interrupted while it writes: once the scene's temporary holds its first window
    while not any(p.stat().st_size > 0 for p in out.glob(".Landsat_Kerinci_2023_v1.tif.tmp-*")):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)  # polling the condition, not a guess at how long it takes
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["kerinci-xr synth: interrupted"]
    assert sorted(p.name for p in out.iterdir()) == []  # nothing half-written is left


def test_cli__reader_gone_no_traceback_and_unexpected_errors_one_line(tmp_path, nc_paths):
    res = subprocess.run(
        f"{sys.executable} -m kerinci_xr info {nc_paths['image']} --json 2>{tmp_path / 'err'} | true",
        shell=True,
        check=False,
    )
    assert "Traceback" not in (tmp_path / "err").read_text()
    res = _cli("info", str(tmp_path), check=False)  # a folder that is no cube: bad input
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1


def test_prepare__select_and_band_roles_for_unknown_sensors(small_scene, tmp_path, capsys):
    names = ",".join(f"x{i}" for i in range(1, 9))
    out = tmp_path / "cube.zarr"
    argv = [
        "-q",
        "prepare",
        "--image",
        str(small_scene.landsat),
        "--bands",
        names,
        "--select",
        "x2,x4,x5,x6,x7",
        "--band-roles",
        "nir=x5,swir1=x6,swir2=x7",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    cube = open_cube(out)
    assert list(cube["band"].values) == ["x2", "x4", "x5", "x6", "x7"]
    assert json.loads(cube.attrs["band_roles"]) == {"nir": "x5", "swir1": "x6", "swir2": "x7"}
    assert main(["-q", "quicklook", str(out), "--out", str(tmp_path / "q")]) == 0
    assert (tmp_path / "q" / "false_colour.png").stat().st_size > 1000
    bad = [
        "-q",
        "prepare",
        "--image",
        str(small_scene.landsat),
        "--band-roles",
        "nir=B99",
        "--out",
        str(tmp_path / "b.zarr"),
    ]
    assert main(bad) == 2
    assert "band roles: expected ROLE=BAND" in capsys.readouterr().err


def test_sample__a_split_without_a_patch_is_refused_before_writing(tmp_path, cube_path, capsys):
    """The 320 x 300 scene in blocks of 4 x 128 pixels is one block: the validation and test
    areas get nothing. Refused (before, the store was written and training found no validation
    pixels), naming the splits and the fix; nothing is written."""
    out = tmp_path / "p.zarr"
    assert main(["-q", "sample", str(cube_path), "--patch", "128", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the val and test splits got no patch" in err and "Fix: a smaller --patch" in err
    assert not out.exists() and not (tmp_path / "p.csv").exists()
