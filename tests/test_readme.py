"""The README runs as written: every shell and Python block, in order, in one empty folder, with
nothing edited (the first block, the install and test commands, is what CI itself runs)."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT

#: A fenced block: its language and its text.
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)


def readme_blocks() -> list[tuple[int, str, str]]:
    """``(line, language, text)`` of every ``bash`` and ``python`` block after the first."""
    text = (ROOT / "README.md").read_text()
    blocks = [
        (text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2))
        for m in FENCE.finditer(text)
        if m.group(1) in ("bash", "python")
    ]
    assert blocks[0][2].startswith("python3 -m pip install"), "the README starts with the install commands"
    return blocks[1:]


def walk_script(folder: Path) -> Path:
    """One bash script that runs the blocks in order (Python blocks as files beside it), stopping
    at the first failure with the block's README line; background jobs a block starts (a local
    S3 server, a Dask scheduler) are stopped at the end."""
    lines = [
        "set -euo pipefail",
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
    ]
    for line, lang, text in readme_blocks():
        lines.append(f'echo "::: README.md line {line} ({lang}) at $(date +%s)" >&2')
        if lang == "python":
            path = folder.parent / f"readme_line_{line}.py"
            path.write_text(text)
            lines.append(f"python3 {path}")
        else:
            lines.append(text)
    script = folder.parent / "readme_walk.sh"
    script.write_text("\n".join(lines) + "\n")
    return script


def test_readme__blocks_are_found_and_name_no_placeholder():
    """What made the README fail as written: literal ``[--option ...]`` in a command, ``...`` in
    place of a value, a file no earlier block writes named as ``scene.tif``."""
    blocks = readme_blocks()
    assert len(blocks) >= 20
    for line, lang, text in blocks:
        if lang == "bash":
            assert not re.search(r"\s\[--", text), f"README.md line {line}: an optional part in brackets"
            assert "=..." not in text, f"README.md line {line}: a placeholder value"


@pytest.mark.slow
def test_readme__every_block_runs_in_order_from_an_empty_folder(tmp_path):
    folder = tmp_path / "walk"
    folder.mkdir()
    script = walk_script(folder)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # kerinci-xr, torchrun, dask
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(name, None)  # the README sets its own
    res = subprocess.run(
        ["bash", str(script)], cwd=folder, env=env, capture_output=True, text=True, check=False, timeout=3600
    )
    where = [line for line in res.stderr.splitlines() if line.startswith(":::")]
    assert res.returncode == 0, f"failed in {where[-1] if where else '?'}:\n{res.stderr[-6000:]}"
    assert len(where) == len(readme_blocks())
    stamps = [(w.split(" at ")[0][4:], int(w.split(" at ")[1])) for w in where]
    for (block, t0), (_, t1) in zip(stamps, [*stamps[1:], ("end", int(time.time()))], strict=True):
        print(f"{t1 - t0:5d} s  {block}")  # what each block cost (for the README's figures)
    assert "output exists" not in res.stderr  # no refusal to replace an output anywhere
    for product in ("cube.zarr", "prediction.zarr", "report.html", "runs/kerinci/report.html"):
        assert (folder / product).exists(), product


def test_repr__legend_as_text_and_as_a_notebook_table(small_scene):
    import kerinci_xr as kx

    legend = kx.read_legend(small_scene.legend)
    assert repr(legend).startswith("Legend(22 classes")
    assert "2001 Primary dryland forest" in repr(legend)
    html = legend._repr_html_()
    assert html.count("<tr>") == 23
    assert "#" in html


def test_api_reference__a_page_per_public_module_and_the_package_names():
    """``docs/build.py`` (run by CI) builds the reference from the docstrings without a warning:
    a page per public module, and on the package's page every name ``kx.`` offers, the stage
    functions loaded on first use included."""
    import tempfile

    import kerinci_xr

    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(
            [sys.executable, str(ROOT / "docs" / "build.py"), tmp],
            capture_output=True,
            text=True,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        assert "Warn" not in res.stderr, res.stderr
        pages = {p.stem for p in (Path(tmp) / "kerinci_xr").glob("*.html")}
        modules = {p.stem for p in (ROOT / "kerinci_xr").glob("*.py") if not p.stem.startswith("_")}
        assert modules | {"stages"} <= pages, modules - pages
        package = (Path(tmp) / "kerinci_xr.html").read_text()
    for name in ("prepare", "train", "predict", "suggest", "Legend", "TrainConfig", "read_legend"):
        assert name in kerinci_xr.__all__ and f'id="{name}"' in package, name


def test_changelog__newest_entry_is_the_package_version():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    newest = re.search(
        r"^## (\d+\.\d+\.\d+) \(\d{4}-\d{2}-\d{2}\)", (ROOT / "CHANGELOG.md").read_text(), re.M
    )
    assert newest is not None and newest.group(1) == version
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
