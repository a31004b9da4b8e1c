"""Every stage's options, generated from the one declaration: CLI, pipeline file and Python agree."""

import dataclasses
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kerinci_xr as kx
from kerinci_xr import api
from kerinci_xr.cli import build_parser, stage_values
from kerinci_xr.pipeline import plan
from kerinci_xr.stages import STAGES, Stage

from .conftest import ROOT

CASES = [(stage, spec) for stage in STAGES.values() for spec in stage.specs]


def _other(spec):
    """A value of the option's type that differs from its default."""
    if spec.choices:
        return next(c for c in spec.choices if c != spec.default)
    if spec.item is not None:
        n = spec.meta.get("length") or 2
        if spec.item is float:
            return tuple(spec.item(v) for v in (0.25, 0.5, 0.25, 0.75)[:n])
        lo = int(spec.meta.get("ge") or 0)  # within the option's bounds
        return (lo + 3, lo + 4) if spec.item is int else ("A", "B")
    if spec.base is bool:
        return not spec.default
    if spec.base is int:  # within the option's lower bound where the default is unset
        return (spec.default if spec.default is not None else int(spec.meta.get("ge") or 0)) + 3
    if spec.base is float:
        return (spec.default or 0.0) + 0.125
    return "some_value"


def _argv(stage, values):
    argv = [stage.name]
    for spec in stage.specs:
        if spec.name not in values:
            continue
        v = values[spec.name]
        if spec.meta.get("positional"):
            argv.append(str(v))
        elif spec.base is bool:
            argv.append(("--" if v else "--no-") + spec.name.replace("_", "-"))
        else:
            text = ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
            argv += ["--" + spec.name.replace("_", "-"), text]
    return argv


def _required(stage):
    return {s.name: "req_value" for s in stage.specs if s.required}


@pytest.mark.parametrize(("stage", "spec"), CASES, ids=[f"{st.name}.{sp.name}" for st, sp in CASES])
def test_option__settable_from_cli_toml_and_python_with_one_default(stage, spec, tmp_path, monkeypatch):
    value = _other(spec)
    parser = build_parser()
    # defaults: the CLI's and the Python API's equal the declaration's
    ns = parser.parse_args(_argv(stage, _required(stage)))
    if not spec.required:
        assert stage_values(stage, ns)[spec.name] == spec.default
        assert (
            inspect.signature(getattr(kx, stage.name.replace("-", "_"))).parameters[spec.name].default
            == spec.default
        )
    # set from the command line
    ns = parser.parse_args(_argv(stage, _required(stage) | {spec.name: value}))
    opts = stage.make(stage_values(stage, ns), where="")
    got = getattr(opts, spec.name)
    assert got == value
    # set from Python: the generated function, called with the value, runs the stage with it
    ran = []
    monkeypatch.setattr(Stage, "execute", lambda self, opts, ctx=None, **kw: ran.append(opts) or {})
    getattr(api, stage.name.replace("-", "_"))(**(_required(stage) | {spec.name: value}))
    assert [getattr(o, spec.name) for o in ran] == [value]
    monkeypatch.undo()
    # set from a pipeline file (paths resolved against its folder or the run folder)
    if not spec.meta.get("pipeline", True):
        assert spec.name == "overwrite"  # the runner sets it: a rerun replaces what it wrote
        return
    steps, _ = plan({stage.name: _required(stage) | {spec.name: value}}, base=tmp_path, source="p.toml")
    got = getattr(steps[0].options, spec.name)
    if spec.meta.get("io"):  # paths: relative to the file or the run folder
        got = tuple(Path(g).name for g in got) if isinstance(got, tuple) else Path(got).name
    assert got == value
    if not spec.required:  # and the default when the file leaves it out
        steps, _ = plan({stage.name: _required(stage)}, base=tmp_path, source="p.toml")
        default = getattr(steps[0].options, spec.name)
        assert default == spec.default or (
            spec.meta.get("io") == "out" and Path(default).name == spec.meta["run_name"]
        )


def test_help__every_stage_shows_every_option_and_an_example():
    parser = build_parser()
    for stage in STAGES.values():
        text = parser._subparsers._group_actions[0].choices[stage.name].format_help()
        assert "example:" in text
        assert "exit status" in text
        for spec in stage.specs:
            flag = spec.name if spec.meta.get("positional") else spec.name.replace("_", "-")
            assert flag in text, (stage.name, spec.name)
            if spec.default not in (None, (), False, True, dataclasses.MISSING):
                shown = (
                    ",".join(map(str, spec.default)) if isinstance(spec.default, tuple) else str(spec.default)
                )
                assert f"(default: {shown})" in " ".join(text.split()), (stage.name, spec.name)


def test_python_api__exposes_every_stage_and_the_main_objects():
    for name in (n.replace("-", "_") for n in STAGES):
        assert callable(getattr(kx, name))
        assert name in kx.__all__
    for name in ("fit", "TrainConfig", "UNet", "PatchDataset", "predict_scene", "run_pipeline", "open_cube"):
        assert getattr(kx, name) is not None
    res = subprocess.run(
        [sys.executable, "-c", "import sys, kerinci_xr; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout.strip() == "False"  # stages and torch load on first use


def test_layers__linter_fails_when_a_lower_module_imports_a_higher_one(tmp_path):
    lint = shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed")
    shutil.copytree(
        ROOT / "kerinci_xr", tmp_path / "kerinci_xr", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([lint], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout
    legend = tmp_path / "kerinci_xr" / "legend.py"
    legend.write_text(legend.read_text() + "\nfrom . import viz  # a lower module importing a higher one\n")
    bad = subprocess.run([lint], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert bad.returncode != 0
    assert "BROKEN" in bad.stdout
    assert "kerinci_xr.legend -> kerinci_xr.viz" in bad.stdout


def test_switches_on_by_default__their_no_flag_says_what_it_does():
    from kerinci_xr.cli import build_parser

    for stage in STAGES.values():
        for s in stage.specs:
            if s.base is bool and s.default is True:
                flag = f"{stage.name} --no-{s.name.replace('_', '-')}"
                assert s.meta.get("off"), f"{flag} has no help of its own"
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "--no-augment" in text
    assert "no random flips" in " ".join(text.split())


#: The library functions (and classes) each stage hands its options to, and the library's names
#: for options it spells otherwise.
_LIBRARY_OF_STAGE = {
    "prepare": ["cube.build_cube", "cube.build_series", "cube.write_cube", "vector.read_reference"],
    "sample": ["stages.sample.sample_windows", "sampling.draw_centres", "patches.write_patches"],
    "crossval": ["stages.sample.sample_windows", "sampling.draw_centres", "training.fit"],
    "train": ["training.fit", "model.UNetConfig"],
    "predict": ["prediction.predict_scene", "io.write_cog", "cube.write_cube"],
    "evaluate": ["metrics.evaluate_features", "training.evaluate_store", "vector.read_reference"],
    "design-sample": ["accuracy.allocate", "accuracy.draw_stratified"],
    "quicklook": ["viz.false_colour_png", "viz.class_map_png"],
    "map": ["viz.scene_maps"],
    "report": ["viz.report_page"],
    "change": ["changes.change_codes", "io.write_cog"],
    "export": ["io.write_image_cog"],
    "synth": ["synthetic.make_kerinci_scene", "synthetic.make_kerinci_series"],
}
_SPELT = {"chunks": "chunk", "roles": "band_roles", "rule": "polygon_rule", "values": "cog_values"}
_SPELT |= {"method": "allocation", "expected_users_accuracy": "expected_ua"}


def test_library_defaults__equal_the_stage_defaults():
    import importlib

    from kerinci_xr.training import PRESETS

    drifts = []
    for name, targets in _LIBRARY_OF_STAGE.items():
        declared = {s.name: s.default for s in kx.stages.STAGES[name].specs if not s.required}
        # an option left to the U-Net preset: the library's default is the wall-to-wall preset's
        declared |= {k: v for k, v in PRESETS["wall-to-wall"].items() if declared.get(k, 0) is None}
        if name == "crossval":  # crossval chooses its windows from the scene and labels when unset
            declared.pop("patch")
        for target in targets:
            module, attr = target.rsplit(".", 1)
            obj = getattr(importlib.import_module(f"kerinci_xr.{module}"), attr)
            if dataclasses.is_dataclass(obj):
                params = {f.name: f.default for f in dataclasses.fields(obj)}
            else:
                params = {p.name: p.default for p in inspect.signature(obj).parameters.values()}
            for param, default in params.items():
                option = _SPELT.get(param, param)
                if default in (inspect.Parameter.empty, dataclasses.MISSING) or option not in declared:
                    continue  # required in the library, or not an option of this stage
                if default != declared[option]:
                    drifts.append(f"{target}({param}={default!r}) vs {name} --{option} {declared[option]!r}")
    assert drifts == []


def test_api_stub__is_the_one_the_declarations_generate():
    from kerinci_xr import api

    stub = Path(api.__file__).with_suffix(".pyi")
    assert stub.read_text(encoding="utf-8") == api.stub_text(), "run: python -m kerinci_xr.api"
    assert "def predict(cube: PathLike, *," in stub.read_text()
    assert "chunk: int = ..." in stub.read_text()
