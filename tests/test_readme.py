"""Every Python example in the README runs, in order, in one fresh folder (the README cannot drift)."""

import os
import re
import warnings

from .conftest import ROOT


def test_readme__python_examples_run(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 2
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few patches per class on the small scene
            for i, block in enumerate(blocks):
                exec(compile(block, f"README.md python block {i + 1}", "exec"), {"__name__": f"readme_{i}"})
    finally:
        os.chdir(here)
    out = capsys.readouterr().out
    assert "Primary dryland forest" in out
    assert (tmp_path / "patches.zarr").exists()


def test_repr__legend_as_text_and_as_a_notebook_table(small_scene):
    import kerinci_xr as kx

    legend = kx.read_legend(small_scene.legend)
    assert repr(legend).startswith("Legend(22 classes")
    assert "2001 Primary dryland forest" in repr(legend)
    html = legend._repr_html_()
    assert html.count("<tr>") == 23
    assert "#" in html
