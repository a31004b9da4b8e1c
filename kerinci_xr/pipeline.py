"""Pipeline stages (synth, prepare, sample, train, evaluate, predict, quicklook) and their runner.

A pipeline file names its inputs and the options of each stage; the runner validates the
whole file before touching anything, then runs the stages in order, skipping a stage whose
outputs are newer than its inputs and were made with the same options (unless ``force``).
"""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputFileNotFoundError, InvalidInputError
from .legend import Legend

__all__ = [
    "DEMO_CONFIG",
    "layout_of",
    "load_pipeline",
    "map_page",
    "open_prediction",
    "predict",
    "prepare",
    "quicklooks",
    "run_pipeline",
    "sample",
    "validate_config",
]

log = logging.getLogger(__name__)

_NUM = (int, float)
#: section -> key -> (accepted types, default). ``None`` as default means optional.
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "pipeline": {"name": ((str,), "pipeline"), "out_dir": ((str,), "run")},
    "synth": {
        "out": ((str,), "scene"),
        "height": ((int,), 1500),
        "width": ((int,), 1500),
        "seed": ((int,), 0),
        "radar": ((bool,), True),
    },
    "inputs": {
        "image": ((str,), None),
        "labels": ((str,), None),
        "legend": ((str,), None),
        "radar": ((str,), None),
        "bands": ((list,), None),
        "radar_bands": ((list,), ["HH", "HV"]),
    },
    "prepare": {
        "out": ((str,), "cube.zarr"),
        "scale": (_NUM, 1e-4),
        "offset": (_NUM, 0.0),
        "nodata": (_NUM, None),
        "radar_scale": (_NUM, 1e-3),
        "chunk": ((int,), 1024),
        "sensor": ((str,), "auto"),
        "align_labels": ((bool,), False),
        "strict": ((bool,), False),
    },
    "sample": {
        "out": ((str,), "patches.zarr"),
        "manifest": ((str,), "patches.csv"),
        "per_class": ((int,), 20),
        "patch": ((int,), 128),
        "seed": ((int,), 0),
        "max_nodata": (_NUM, 0.0),
        "fractions": ((list,), [0.7, 0.15, 0.15]),
        "block": ((int,), None),
        "buffer": ((int,), 0),
    },
    "train": {
        "out": ((str,), "model.pt"),
        "epochs": ((int,), 30),
        "batch_size": ((int,), 16),
        "lr": (_NUM, 2e-3),
        "class_weights": ((str,), "inverse_sqrt"),
        "dice": (_NUM, 0.0),
        "patience": ((int,), 8),
        "seed": ((int,), 0),
        "device": ((str,), "auto"),
        "depth": ((int,), 4),
        "base": ((int,), 32),
        "norm": ((str,), "batch"),
        "dropout": (_NUM, 0.1),
    },
    "evaluate": {"split": ((str,), "test"), "out": ((str,), "metrics.json")},
    "predict": {
        "out": ((str,), "prediction.zarr"),
        "cog": ((str,), "map.tif"),
        "areas": ((str,), "areas.csv"),
        "metrics": ((str,), "metrics_scene.json"),
        "chunk": ((int,), 2048),
        "device": ((str,), "auto"),
    },
    "report": {"out": ((str,), "report.html"), "max_size": ((int,), 1000)},
    "quicklook": {
        "out_dir": ((str,), "quicklooks"),
        "max_size": ((int,), 2048),
        "percentiles": ((list,), [2.0, 98.0]),
    },
}

#: The embedded default: a generated 1500 x 1500 Kerinci-like scene (as ``pipelines/demo.toml``).
DEMO_CONFIG: dict[str, dict[str, Any]] = {
    "pipeline": {"name": "demo", "out_dir": "."},
    "synth": {"out": "scene", "height": 1500, "width": 1500, "seed": 0, "radar": True},
    "prepare": {"out": "cube.zarr", "scale": 1e-4, "radar_scale": 1e-3, "chunk": 512},
    "quicklook": {"out_dir": "quicklooks"},
    "sample": {"out": "patches.zarr", "manifest": "patches.csv", "per_class": 20, "patch": 128, "seed": 0},
    "train": {"out": "model.pt", "epochs": 8, "batch_size": 16, "depth": 3, "base": 16, "lr": 3e-3},
    "evaluate": {"split": "test", "out": "metrics.json"},
    "predict": {
        "out": "prediction.zarr",
        "cog": "map.tif",
        "areas": "areas.csv",
        "metrics": "metrics_scene.json",
    },
    "report": {"out": "report.html"},
}


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join("number" if t is float else t.__name__ for t in types)


def validate_config(config: Mapping[str, Any], *, source: str = "<config>") -> dict[str, dict]:
    """Check sections, keys and types; return the config with defaults filled in."""
    if not isinstance(config, Mapping):
        raise InvalidInputError(f"{source}: expected a table of sections, found {type(config).__name__}.")
    unknown = [s for s in config if s not in SCHEMA]
    if unknown:
        raise InvalidInputError(
            f"{source}: unknown section(s) {unknown}; expected some of {sorted(SCHEMA)}. "
            "Fix: check the spelling."
        )
    out: dict[str, dict] = {}
    for section, keys in SCHEMA.items():
        given = config.get(section)
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise InvalidInputError(f"{source}: [{section}] must be a table, found {given!r}.")
        bad = [k for k in given if k not in keys]
        if bad:
            raise InvalidInputError(
                f"{source}: unknown key(s) {bad} in [{section}]; expected some of {sorted(keys)}."
            )
        values = {}
        for key, (types, default) in keys.items():
            value = given.get(key, default)
            if value is not None and (
                not isinstance(value, types) or (bool not in types and isinstance(value, bool))
            ):
                raise InvalidInputError(
                    f"{source}: [{section}] {key} must be a {_type_name(types)}, "
                    f"found {type(value).__name__} {value!r}."
                )
            values[key] = value
        out[section] = values
    if "inputs" not in out and "synth" not in out:
        raise InvalidInputError(
            f"{source}: expected an [inputs] section (image, labels, legend) or a [synth] section."
        )
    if "inputs" in out and "synth" not in out and not out["inputs"].get("image"):
        raise InvalidInputError(f"{source}: [inputs] image is required.")
    inputs = out.get("inputs", {})
    if inputs.get("labels") and not inputs.get("legend"):
        raise InvalidInputError(f"{source}: [inputs] labels given without legend.")
    for key in ("bands", "radar_bands"):
        if inputs.get(key) is not None and not all(isinstance(b, str) for b in inputs[key]):
            raise InvalidInputError(f"{source}: [inputs] {key} must be a list of strings.")
    fr = out.get("sample", {}).get("fractions")
    if fr is not None and (len(fr) != 3 or not all(isinstance(f, _NUM) for f in fr)):
        raise InvalidInputError(f"{source}: [sample] fractions must be three numbers, found {fr!r}.")
    pct = out.get("quicklook", {}).get("percentiles")
    if pct is not None and (len(pct) != 2 or not all(isinstance(p, _NUM) for p in pct)):
        raise InvalidInputError(f"{source}: [quicklook] percentiles must be two numbers, found {pct!r}.")
    out.setdefault("pipeline", {k: d for k, (_, d) in SCHEMA["pipeline"].items()})
    return out


def load_pipeline(path: str | Path) -> dict[str, dict]:
    """Read and validate a pipeline TOML file; relative paths are resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"{path}: pipeline file not found.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            f"{path}: expected a TOML pipeline file, found invalid TOML ({exc})."
        ) from exc
    config = validate_config(raw, source=str(path))
    base = path.parent.resolve()
    config["pipeline"]["out_dir"] = str(base / config["pipeline"]["out_dir"])
    for key in ("image", "labels", "legend", "radar"):
        value = config.get("inputs", {}).get(key)
        if value:
            config["inputs"][key] = str(base / value)
    return config


# ---- stages ----------------------------------------------------------------------------
def prepare(
    image: str | Path,
    *,
    out: str | Path,
    labels: str | Path | None = None,
    legend: str | Path | None = None,
    radar: str | Path | None = None,
    bands: Sequence[str] | None = None,
    radar_bands: Sequence[str] | None = ("HH", "HV"),
    scale: float = 1e-4,
    offset: float = 0.0,
    nodata: float | None = None,
    radar_scale: float = 1e-3,
    chunk: int = 1024,
    sensor: str = "auto",
    align_labels: bool = False,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Build the cube from files, check label codes against the legend, and write it.

    Everything that can be wrong with the inputs is checked before the output is touched;
    with ``strict=True`` label codes missing from the legend are an error, otherwise a warning.
    """
    from .io import open_raster
    from .legend import read_legend
    from .preprocess import check_label_codes, label_code_counts
    from .store import build_cube, check_output, write_cube

    check_output(out, overwrite=overwrite)  # refuse an existing output before any work
    lg = read_legend(legend) if legend is not None else None
    if labels is not None and lg is None:
        raise InvalidInputError("--labels given without --legend. Fix: pass the lc.json legend.")
    lraw = open_raster(labels, chunks=chunk) if labels is not None else None
    ds = build_cube(
        image,
        labels,
        legend=lg,
        radar=radar,
        bands=bands,
        radar_bands=radar_bands,
        scale=scale,
        offset=offset,
        nodata=nodata,
        radar_scale=radar_scale,
        align_labels=align_labels,
        chunks=chunk,
        sensor=sensor,
    )
    if lraw is not None and lg is not None:
        counts = label_code_counts(lraw)
        unknown = check_label_codes(
            counts, lg, nodata=lraw.attrs.get("nodata"), strict=strict, source=str(labels)
        )
        prov = json.loads(ds.attrs["provenance"])
        prov["legend_file"] = str(legend)
        prov["unknown_label_codes"] = {str(k): v for k, v in unknown.items()}
        ds.attrs["provenance"] = json.dumps(prov)
    return write_cube(ds, out, overwrite=overwrite, progress=progress)


def sample(
    cube: str | Path,
    *,
    out: str | Path,
    manifest: str | Path | None = None,
    per_class: int = 20,
    patch: int = 128,
    seed: int = 0,
    max_nodata: float = 0.0,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    block: int | None = None,
    buffer: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> tuple[Path, Path]:
    """Draw patch centres from a cube, save the manifest and extract the patch store.

    Returns the store and manifest paths. Both outputs are checked before any work, and both
    are written atomically.
    """
    from .patches import write_patches
    from .sampling import sample_centres, write_manifest
    from .store import check_output, open_cube

    out = Path(out)
    manifest = Path(manifest) if manifest is not None else out.with_suffix(".csv")
    check_output(out, overwrite=overwrite)
    check_output(manifest, overwrite=overwrite)
    ds = open_cube(cube)
    if "labels" not in ds:
        raise InvalidInputError(
            f"{cube}: the cube has no labels to sample from. Fix: prepare it with --labels."
        )
    table = sample_centres(
        ds,
        per_class=per_class,
        patch=patch,
        seed=seed,
        max_nodata=max_nodata,
        fractions=fractions,
        block=block,
        buffer=buffer,
    )
    split = {"seed": seed, "fractions": [float(f) for f in fractions], "block": block or 4 * patch}
    write_patches(
        ds, table, out, overwrite=overwrite, progress=progress, attrs={"cube": str(cube), "split": split}
    )
    write_manifest(table, manifest)
    return out, manifest


def layout_of(patches: str | Path, shape: tuple[int, int]):
    """The split layout a patch store was sampled with (to evaluate per split area)."""
    from .patches import open_patches
    from .sampling import split_layout

    split = open_patches(patches).attrs.get("split")
    if not split:
        raise InvalidInputError(f"{patches}: the patch store records no split layout.")
    return split_layout(
        shape, block=int(split["block"]), fractions=split["fractions"], seed=int(split["seed"])
    )


def predict(
    cube: str | Path,
    *,
    model: str | Path,
    out: str | Path,
    cog: str | Path | None = None,
    areas: str | Path | None = None,
    metrics: str | Path | None = None,
    patches: str | Path | None = None,
    chunk: int | None = None,
    device: str = "auto",
    probabilities: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Path]:
    """Predict a cube, write ``prediction.zarr`` and optionally the COG, class areas and metrics.

    Every output is checked before any work. The map is computed once (into the Zarr store);
    the COG, the areas (prediction and, if the cube has labels, the reference, as CSV plus
    JSON) and the whole-scene metrics (per split area when ``patches`` gives the sampling's
    layout) are read back from it.
    """
    from .metrics import area_table, evaluate_prediction, write_report
    from .predict import predict_scene
    from .store import check_output, cube_legend, open_cube, write_cube

    outputs = {"prediction": Path(out)}
    for key, value in (("cog", cog), ("areas", areas), ("metrics", metrics)):
        if value is not None:
            outputs[key] = Path(value)
    for p in outputs.values():
        check_output(p, overwrite=overwrite)
    ds = open_cube(cube)
    if metrics is not None and "labels" not in ds:
        raise InvalidInputError(f"{cube}: metrics need labels, and the cube has none.")
    layout = layout_of(patches, (ds.sizes["y"], ds.sizes["x"])) if patches is not None else None
    pred = predict_scene(ds, model, chunk=chunk, device=device, probabilities=probabilities)
    pred.attrs["cube"] = str(cube)
    write_cube(pred, outputs["prediction"], overwrite=overwrite, progress=progress)
    stored = open_prediction(outputs["prediction"])
    legend = Legend.from_json(stored.attrs["legend"])
    if cog is not None:
        from .io import write_cog

        write_cog(stored["class"], outputs["cog"], legend=legend, overwrite=overwrite)
    labels = ds["labels"] if "labels" in ds else None
    if areas is not None:
        table = area_table(stored["class"], legend, labels)
        tmp = outputs["areas"].with_name(f".{outputs['areas'].name}.tmp")
        table.to_csv(tmp, index=False, float_format="%.4f")
        tmp.replace(outputs["areas"])
        js = outputs["areas"].with_suffix(".json")
        js.write_text(table.to_json(orient="records", indent=2))
        outputs["areas_json"] = js
    if metrics is not None and labels is not None:
        cube_lg = cube_legend(ds)
        report = evaluate_prediction(stored["class"], labels, cube_lg, layout=layout)
        report["source"] = {"prediction": str(out), "cube": str(cube), "model": str(model)}
        write_report(report, outputs["metrics"])
    return outputs


def open_prediction(path: str | Path):
    """Reopen a ``prediction.zarr`` lazily (checks it is one)."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise InputFileNotFoundError(f"{path}: prediction not found. Fix: run `kerinci-xr predict` first.")
    ds = xr.open_zarr(path, consolidated=False, decode_coords="all")
    if "class" not in ds:
        raise InvalidInputError(f"{path}: expected a prediction store with a 'class' variable.")
    return ds


def map_page(
    cube: str | Path,
    *,
    out: str | Path,
    prediction: str | Path | None = None,
    patches: str | Path | None = None,
    max_size: int = 1000,
    png: str | Path | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Linked interactive maps as a standalone HTML file, and optionally PNG quick-looks."""
    from .store import check_output, cube_legend, open_cube
    from .viz import class_map_png, error_png, false_colour_png, save_html, scene_maps

    check_output(out, overwrite=overwrite)
    ds = open_cube(cube)
    pred = None
    if prediction is not None:
        pds = open_prediction(prediction)
        pred = pds["class"]
        pred.attrs["legend"] = pds.attrs.get("legend", "")
    store = None
    if patches is not None:
        from .patches import open_patches

        store = open_patches(patches)
    written = [
        save_html(
            scene_maps(ds, prediction=pred, patches=store, max_size=max_size),
            out,
            title=f"kerinci_xr map: {Path(cube).name}",
        )
    ]
    if png is not None:
        folder = Path(png)
        folder.mkdir(parents=True, exist_ok=True)
        written.append(false_colour_png(ds["image"], folder / "false_colour.png", max_size=2 * max_size))
        legend = cube_legend(ds) if ds.attrs.get("legend") else None
        if "labels" in ds and legend is not None:
            written.append(class_map_png(ds["labels"], legend, folder / "labels.png", max_size=2 * max_size))
        if pred is not None:
            plg = legend or Legend.from_json(pred.attrs["legend"])
            written.append(class_map_png(pred, plg, folder / "prediction.png", max_size=2 * max_size))
            if "labels" in ds:
                written.append(error_png(ds["labels"], pred, folder / "errors.png", max_size=2 * max_size))
    return written


def quicklooks(
    cube: str | Path,
    out_dir: str | Path,
    *,
    max_size: int = 2048,
    percentiles: Sequence[float] = (2.0, 98.0),
) -> list[Path]:
    """Write ``false_colour.png`` (NIR-SWIR1-SWIR2) and, with labels, ``labels.png``."""
    from .store import cube_legend, open_cube
    from .viz import class_map_png, false_colour_png

    ds = open_cube(cube)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lo, hi = (float(p) for p in percentiles)
    written = [
        false_colour_png(ds["image"], out_dir / "false_colour.png", percentiles=(lo, hi), max_size=max_size)
    ]
    if "labels" in ds and ds.attrs.get("legend"):
        written.append(
            class_map_png(ds["labels"], cube_legend(ds), out_dir / "labels.png", max_size=max_size)
        )
    return written


# ---- runner ----------------------------------------------------------------------------
@dataclass
class _Stage:
    name: str
    inputs: list[Path]
    outputs: list[Path]
    params: dict[str, Any]
    run: Callable[[], Any]


def _newest(paths: Sequence[Path]) -> float:
    times = []
    for p in paths:
        if p.is_dir():
            times.extend(q.stat().st_mtime for q in p.rglob("*"))
        times.append(p.stat().st_mtime)
    return max(times)


def _oldest(paths: Sequence[Path]) -> float:
    return min(p.stat().st_mtime for p in paths)


def _up_to_date(stage: _Stage, record: Mapping[str, Any]) -> bool:
    if not all(p.exists() for p in stage.outputs):
        return False
    if record.get(stage.name) != json.loads(json.dumps(stage.params, default=str)):
        return False
    if not stage.inputs:
        return True
    return _oldest(stage.outputs) >= _newest([p for p in stage.inputs if p.exists()])


def _train_stage(store: Path, model: Path, tr: dict[str, Any], progress: bool) -> None:
    from .train import TrainConfig, fit

    cfg = TrainConfig.from_dict({k: v for k, v in tr.items() if k != "out"})
    fit(store, model, config=cfg, overwrite=True, progress=progress)


def _evaluate_stage(store: Path, model: Path, out: Path, split: str, echo: Callable[[str], Any]) -> None:
    from .metrics import format_report, write_report
    from .train import evaluate_store

    report = evaluate_store(store, model, split=split)
    echo(format_report(report))
    write_report(report, out)


def _stages(
    config: dict[str, dict], *, progress: bool, echo: Callable[[str], Any] = log.info
) -> list[_Stage]:
    from .synthetic import make_kerinci_scene

    out_dir = Path(config["pipeline"]["out_dir"])
    stages: list[_Stage] = []
    inputs = dict(config.get("inputs", {}))
    if "synth" in config:
        s = config["synth"]
        scene_dir = out_dir / s["out"]
        files = [scene_dir / n for n in ("Landsat_Kerinci_2023_v1.tif", "LC_Image_v1.tif", "lc.json")]
        if s["radar"]:
            files.append(scene_dir / "Palsar_Kerinci_2023_v1.tif")
        stages.append(
            _Stage(
                "synth",
                [],
                files,
                s,
                lambda: make_kerinci_scene(
                    scene_dir,
                    height=s["height"],
                    width=s["width"],
                    seed=s["seed"],
                    radar=s["radar"],
                    overwrite=True,
                ),
            )
        )
        inputs.setdefault("image", str(files[0]))
        inputs["image"] = inputs["image"] or str(files[0])
        inputs["labels"] = inputs.get("labels") or str(files[1])
        inputs["legend"] = inputs.get("legend") or str(files[2])
        if s["radar"]:
            inputs["radar"] = inputs.get("radar") or str(files[3])
        inputs.setdefault("radar_bands", ["HH", "HV"])
    p = config.get("prepare") or {k: d for k, (_, d) in SCHEMA["prepare"].items()}
    cube = out_dir / p["out"]
    in_paths = [Path(inputs[k]) for k in ("image", "labels", "legend", "radar") if inputs.get(k)]
    stages.append(
        _Stage(
            "prepare",
            in_paths,
            [cube],
            {
                **p,
                **{k: inputs.get(k) for k in ("image", "labels", "legend", "radar", "bands", "radar_bands")},
            },
            lambda: prepare(
                inputs["image"],
                out=cube,
                labels=inputs.get("labels"),
                legend=inputs.get("legend"),
                radar=inputs.get("radar"),
                bands=inputs.get("bands"),
                radar_bands=inputs.get("radar_bands"),
                scale=p["scale"],
                offset=p["offset"],
                nodata=p["nodata"],
                radar_scale=p["radar_scale"],
                chunk=p["chunk"],
                sensor=p["sensor"],
                align_labels=p["align_labels"],
                strict=p["strict"],
                overwrite=True,
                progress=progress,
            ),
        )
    )
    if "sample" in config:
        sp = config["sample"]
        store, table = out_dir / sp["out"], out_dir / sp["manifest"]
        stages.append(
            _Stage(
                "sample",
                [cube],
                [store, table],
                sp,
                lambda: sample(
                    cube,
                    out=store,
                    manifest=table,
                    per_class=sp["per_class"],
                    patch=sp["patch"],
                    seed=sp["seed"],
                    max_nodata=sp["max_nodata"],
                    fractions=sp["fractions"],
                    block=sp["block"],
                    buffer=sp["buffer"],
                    overwrite=True,
                    progress=progress,
                ),
            )
        )
    if "train" in config:
        if "sample" not in config:
            raise InvalidInputError("[train] needs a [sample] section (the patch store it trains on).")
        tr = config["train"]
        model = out_dir / tr["out"]
        stages.append(_Stage("train", [store], [model], tr, lambda: _train_stage(store, model, tr, progress)))
        if "evaluate" in config:
            ev = config["evaluate"]
            metrics = out_dir / ev["out"]
            stages.append(
                _Stage(
                    "evaluate",
                    [store, model],
                    [metrics],
                    ev,
                    lambda: _evaluate_stage(store, model, metrics, ev["split"], echo),
                )
            )
    if "predict" in config:
        if "train" not in config:
            raise InvalidInputError("[predict] needs a [train] section (the model it predicts with).")
        pr = config["predict"]
        pouts = [out_dir / pr[k] for k in ("out", "cog", "areas", "metrics")]
        stages.append(
            _Stage(
                "predict",
                [cube, model, store],
                pouts,
                pr,
                lambda: predict(
                    cube,
                    model=model,
                    out=pouts[0],
                    cog=pouts[1],
                    areas=pouts[2],
                    metrics=pouts[3],
                    patches=store,
                    chunk=pr["chunk"],
                    device=pr["device"],
                    overwrite=True,
                    progress=progress,
                ),
            )
        )
    if "quicklook" in config:
        q = config["quicklook"]
        qdir = out_dir / q["out_dir"]
        outs = [qdir / "false_colour.png"] + ([qdir / "labels.png"] if inputs.get("labels") else [])
        stages.append(
            _Stage(
                "quicklook",
                [cube],
                outs,
                q,
                lambda: quicklooks(cube, qdir, max_size=q["max_size"], percentiles=q["percentiles"]),
            )
        )
    if "report" in config:
        rp = config["report"]
        page = out_dir / rp["out"]
        inputs_r = [p for st in stages for p in st.outputs if p.suffix in (".zarr", ".json", ".csv")]
        stages.append(
            _Stage("report", inputs_r, [page], rp, lambda: _report_stage(out_dir, page, rp["max_size"]))
        )
    return stages


def _report_stage(run_dir: Path, page: Path, max_size: int) -> None:
    from .viz import report_page

    report_page(run_dir, page, max_size=max_size)


def run_pipeline(
    config: Mapping[str, Any] | str | Path,
    *,
    force: bool = False,
    progress: bool = False,
    out_dir: str | Path | None = None,
    echo: Callable[[str], Any] = log.info,
) -> dict[str, list[Path]]:
    """Run the stages of a pipeline (a TOML path or a config mapping); return each stage's outputs."""
    cfg = load_pipeline(config) if isinstance(config, (str, Path)) else validate_config(config)
    if out_dir is not None:
        cfg["pipeline"]["out_dir"] = str(out_dir)
    for key in ("image", "labels", "legend", "radar"):
        value = cfg.get("inputs", {}).get(key)
        if value and not Path(value).exists():
            raise InputFileNotFoundError(f"[inputs] {key}: {value} not found. Fix: check the path.")
    stages = _stages(cfg, progress=progress, echo=echo)
    root = Path(cfg["pipeline"]["out_dir"])
    root.mkdir(parents=True, exist_ok=True)
    record_path = root / ".kerinci-stages.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    results: dict[str, list[Path]] = {}
    for stage in stages:
        if not force and _up_to_date(stage, record):
            echo(f"[{stage.name}] up to date, skipped (use --force to redo)")
        else:
            echo(f"[{stage.name}] running")
            stage.run()
            record[stage.name] = json.loads(json.dumps(stage.params, default=str))
            tmp = record_path.with_name(record_path.name + ".tmp")
            tmp.write_text(json.dumps(record, indent=2))
            tmp.replace(record_path)
        results[stage.name] = stage.outputs
    return results
