"""The pipeline runner: a TOML file of stage sections, validated whole, wired and run in order.

Each section is a stage (``[prepare]``, ``[sample]`` ...) whose keys are that stage's options,
type-checked against its declaration before anything runs. Input paths a section leaves unset
are taken from the stage that writes that kind of product (the cube for ``sample``, the model
for ``predict``); stages run in the order their inputs and outputs require. Input paths are
relative to the pipeline file (or name a product of the run by its name in the run folder),
outputs to the run folder (``[pipeline] out_dir``), where unset
outputs get their declared names. A stage whose products are newer than its inputs and were
made with the same options is skipped (unless ``force``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from ._locations import Location, URLPath, as_location, is_url
from ._objects import tag_stores
from ._options import OptionSpec, check, option, specs
from ._outputs import output_folder, write_text
from ._products import PRODUCTS, kind_of, modified, product_exists
from .cluster import dask_scheduler
from .errors import InputFileNotFoundError, InvalidInputError, OutputExistsError
from .stages import STAGES, Stage
from .stages._base import RECORD, Context, flat, options_record, read_record

__all__ = ["Step", "demo_config", "load_pipeline", "plan", "run_pipeline"]

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class PipelineOptions:
    name: str = option("pipeline", "a name for the run")
    out_dir: str = option("run", "run folder, relative to the pipeline file")
    outputs_anywhere: bool = option(
        False, "let outputs lie outside the run folder (they stay inside by default)"
    )


@dataclass(frozen=True)
class Step:
    """One stage of a planned pipeline, with its options complete."""

    stage: Stage
    options: Any
    #: The run folder every output must resolve to (``None`` with ``outputs_anywhere``).
    inside: Location | None = None


#: The recipes shipped inside the package (``kerinci_xr/pipelines/NAME.toml``).
RECIPES = ("demo", "kerinci")


def recipe(name: str) -> dict[str, Any]:
    """A packaged recipe as a mapping: ``demo`` (the embedded default) or ``kerinci`` (the original
    study, reading ``data/kerinci/`` where it runs). Its relative paths are relative to where it runs."""
    if name not in RECIPES:
        raise InvalidInputError(f"pipeline recipe: expected one of {', '.join(RECIPES)}, found {name!r}.")
    return tomllib.loads(files(__package__).joinpath("pipelines", f"{name}.toml").read_text(encoding="utf-8"))


def demo_config() -> dict[str, Any]:
    """The embedded default: the packaged ``pipelines/demo.toml`` as a mapping."""
    return recipe("demo")


def pipeline_config(source: str | Path, changes: Sequence[str] = ()) -> tuple[dict[str, Any], Path]:
    """The mapping of a pipeline file, or of a packaged recipe named ``source`` when no such file
    exists, with ``changes`` (``SECTION.KEY=VALUE``, the value read as TOML, else as a string)
    applied; and the folder its relative input paths are relative to (the file's, or the
    working directory for a recipe)."""
    if Path(source).is_file():
        raw, base = load_pipeline(source)
    elif str(source) in RECIPES:
        raw, base = recipe(str(source)), Path.cwd()
    else:
        raise InputFileNotFoundError(
            f"{source}: pipeline file not found. Fix: give a pipeline file (.toml), or one of the "
            f"recipes shipped with the package: {', '.join(RECIPES)}."
        )
    for change in changes:
        where, sep, text = change.partition("=")
        section, dot, key = where.strip().rpartition(".")
        if not (sep and dot and section and key):
            raise InvalidInputError(
                f"--set {change!r}: expected SECTION.KEY=VALUE (e.g. train.epochs=2 or prepare.chunk=512)."
            )
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text  # a bare string: a path, a name
        raw.setdefault(section, {})[key] = value
    return raw, base


def load_pipeline(path: str | Path) -> tuple[dict[str, Any], Path]:
    """Read a pipeline TOML file; returns the mapping and the folder its paths are relative to."""
    path = Path(path)
    if not path.is_file():
        raise InputFileNotFoundError(f"{path}: pipeline file not found.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), path.parent.resolve()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            f"{path}: expected a TOML pipeline file, found invalid TOML ({exc})."
        ) from exc


def _section(config: Mapping[str, Any], name: str, options: Any, source: str) -> dict[str, Any]:
    values = config.get(name) or {}
    if not isinstance(values, Mapping):
        raise InvalidInputError(f"{source}: [{name}] must be a table, found {values!r}.")
    return check(options, values, where=f"{source}: [{name}]")


def plan(
    config: Mapping[str, Any],
    *,
    base: Path,
    out_dir: str | os.PathLike | None = None,
    source: str = "<config>",
) -> tuple[list[Step], Location]:
    """Validate a whole pipeline and return its steps in running order, and the run folder."""
    head, stages = _sections(config, source)
    given = out_dir if out_dir is not None else head.out_dir
    root = as_location(given) if is_url(given) else base / given
    values = {st.name: _paths(st, _section(config, st.name, _in_files(st), source), root) for st in stages}
    if not head.outputs_anywhere:  # a stage of a pipeline never writes outside its run folder by accident
        _check_inside(stages, values, root, source)
    made = {st.name: st.products(_partial(st, values[st.name])) for st in stages}
    _one_writer(made, source)
    products = {p for paths in made.values() for p in flat(paths)}
    steps = []
    for st in stages:
        vals = _wire_inputs(st, values[st.name], made, products, root=root, base=base, source=source)
        if any(s.name == "overwrite" for s in st.specs):
            vals["overwrite"] = True  # a rerun replaces what the pipeline wrote before
        inside = None if head.outputs_anywhere else root
        steps.append(Step(st, st.make(vals, where=f"{source}: [{st.name}]"), inside))
    return _order(steps, source), root


def _sections(config: Mapping[str, Any], source: str) -> tuple[PipelineOptions, list[Stage]]:
    """The ``[pipeline]`` options and the stages of a pipeline file, in file order."""
    if not isinstance(config, Mapping):
        raise InvalidInputError(f"{source}: expected a table of sections, found {type(config).__name__}.")
    unknown = [s for s in config if s != "pipeline" and s not in STAGES]
    if unknown:
        raise InvalidInputError(
            f"{source}: unknown section(s) {unknown}; expected [pipeline] and some of {list(STAGES)}."
        )
    head = PipelineOptions(**_section(config, "pipeline", specs(PipelineOptions), source))
    stages = [STAGES[name] for name in config if name != "pipeline"]
    if not stages:
        raise InvalidInputError(f"{source}: expected at least one stage section, e.g. [synth] or [prepare].")
    return head, stages


def _check_inside(
    stages: Sequence[Stage], values: Mapping[str, Mapping[str, Any]], root: Location, source: str
) -> None:
    """Refuse an output outside the run folder (unless ``outputs_anywhere``)."""
    for st in stages:
        for s in st.specs:
            if s.meta.get("io") != "out":
                continue
            outside = [
                v
                for v in _many(values[st.name].get(s.name))
                if v is not None
                and not is_url(v)
                and not Path(os.path.normpath(v)).is_relative_to(os.path.normpath(root))
            ]
            if outside:
                raise InvalidInputError(
                    f"{source}: [{st.name}] {s.name} = {outside[0]} lies outside the run folder {root}. "
                    "Fix: a path inside it, or [pipeline] outputs_anywhere = true."
                )


def _wire_inputs(
    st: Stage,
    vals: dict[str, Any],
    made: Mapping[str, Mapping[str, Any]],
    products: set[Path],
    *,
    root: Location,
    base: Path,
    source: str,
) -> dict[str, Any]:
    """A stage's inputs: given ones resolved (the run's own products, else next to the file), and
    those left out taken from the one stage that writes that kind of product."""
    for s in st.specs:
        if s.meta.get("io") != "in":
            continue
        kind = s.meta.get("kind")
        if vals.get(s.name) is not None:
            given = vals[s.name]
            resolved = [
                v if is_url(v) else str(root / v if root / v in products else base / v) for v in _many(given)
            ]
            vals[s.name] = tuple(resolved) if isinstance(given, tuple) else resolved[0]
            continue
        if not kind:
            continue
        makers = [m for m in made if m != st.name and kind in made[m]]
        if len(makers) > 1:
            raise InvalidInputError(f"{source}: [{st.name}] {s.name}: {makers} all write a {kind}; set it.")
        if makers:
            made_path = made[makers[0]][kind]
            vals[s.name] = tuple(map(str, made_path)) if isinstance(made_path, tuple) else str(made_path)
    return vals


def _one_writer(made: Mapping[str, Mapping[str, Any]], source: str) -> None:
    """Refuse two stages that write one path (symlinks followed): one output would be lost."""
    seen: dict[str, str] = {}
    for name, paths in made.items():
        for p in flat(dict(paths)):
            real = _real(p)
            if real in seen and seen[real] != name:
                raise InvalidInputError(
                    f"{source}: [{seen[real]}] and [{name}] both write {p}; one would be lost. "
                    "Fix: give each output its own path."
                )
            seen[real] = name


def _real(path: Any) -> str:
    """A path with its symlinks followed; a URL as it is."""
    return os.fspath(path) if is_url(path) else os.path.realpath(path)


def _in_record(path: Any, root: Location) -> Any:
    """How the record names a product: relative to the run folder when it lies inside it (the
    record then reads the same from any working directory, and the folder can move), else as
    an absolute path or URL; several paths (one per date) as a list."""
    if isinstance(path, tuple):
        return [_in_record(p, root) for p in path]
    if is_url(path) or is_url(root):
        return str(path)
    full = Path(os.path.abspath(path))
    try:
        return str(full.relative_to(os.path.abspath(root)))
    except ValueError:
        return str(full)


def _many(value: Any) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _in_files(stage: Stage) -> list[OptionSpec]:
    """The options a pipeline file may set (the runner sets ``overwrite`` itself)."""
    return [s for s in stage.specs if s.meta.get("pipeline", True)]


def _paths(stage: Stage, vals: dict[str, Any], root: Location) -> dict[str, Any]:
    """Outputs made absolute in the run folder (unset ones get their usual names)."""
    for s in stage.specs:
        if s.meta.get("io") == "out" and vals.get(s.name) is None and s.meta.get("run_name"):
            vals[s.name] = s.meta["run_name"]
        if s.meta.get("io") == "out" and vals.get(s.name) is not None:
            given = vals[s.name]
            inside = [v if is_url(v) else str(root / v) for v in _many(given)]
            vals[s.name] = tuple(inside) if isinstance(given, tuple) else inside[0]
    return vals


def _partial(stage: Stage, vals: dict[str, Any]) -> Any:
    """Options with placeholders for inputs not wired yet (only to ask for products)."""
    fill = {s.name: "" for s in stage.specs if s.required and vals.get(s.name) is None}
    return stage.options(**(vals | fill))


def _order(steps: list[Step], source: str) -> list[Step]:
    """Stages in an order where each runs after those that write its inputs (file order otherwise)."""
    writes = {step.stage.name: set(flat(step.stage.products(step.options))) for step in steps}
    todo, done, out = list(steps), set(), []
    while todo:
        for step in todo:
            needs = set(step.stage.inputs(step.options).values())
            if all(not (needs & writes[o.stage.name]) or o.stage.name in done for o in todo if o is not step):
                out.append(step)
                done.add(step.stage.name)
                todo.remove(step)
                break
        else:
            raise InvalidInputError(
                f"{source}: the stages {[s.stage.name for s in todo]} need each other's outputs."
            )
    return out


def _up_to_date(step: Step, record: Mapping[str, Any]) -> bool:
    """Products newer than the inputs, made with the same options (local or on object storage)."""
    outputs = flat(step.stage.products(step.options))
    if not all(product_exists(p) for p in outputs):
        return False
    if record.get(step.stage.name, {}).get("params") != options_record(step.options):
        return False
    inputs = [
        modified(p)
        for p in step.stage.inputs(step.options).values()
        if (not is_url(p) or str(p).startswith(("s3://", "gs://", "az://"))) and product_exists(p)
    ]
    return not inputs or min(modified(p) for p in outputs) >= max(inputs)


def run_pipeline(
    config: Mapping[str, Any] | str | Path,
    *,
    force: bool = False,
    progress: bool = False,
    out_dir: str | os.PathLike | None = None,
    echo: Callable[[str], Any] = log.info,
    workers: int | None = None,
    scheduler: str | None = None,
    base: str | os.PathLike | None = None,
    source: str | None = None,
) -> dict[str, dict[str, Path]]:
    """Run a pipeline (a TOML path or a mapping); return each stage's products by kind.

    ``workers`` (a LocalCluster) or ``scheduler`` (a running cluster's address) is where the
    stages compute, unless a section names its own. ``base``: the folder a mapping's relative
    input paths are relative to (default: the working directory); ``source`` names it in errors.
    """
    if isinstance(config, (str, Path)):
        (raw, folder), source = load_pipeline(config), str(config)
    else:
        raw, folder, source = dict(config), Path(base or Path.cwd()).resolve(), source or "<config>"
    steps, root = plan(raw, base=folder, out_dir=out_dir, source=source)
    written = {p for step in steps for p in flat(step.stage.products(step.options))}
    for step in steps:
        for key, path in step.stage.inputs(step.options).items():
            if path not in written and not is_url(path) and not path.exists():  # (URLs: by their readers)
                raise InputFileNotFoundError(
                    f"[{step.stage.name}] {key}: {path} not found. Fix: check the path."
                )
    _only_ours(steps, root)
    output_folder(root)
    cluster = workers is not None or scheduler is not None
    with dask_scheduler(workers=workers, address=scheduler) if cluster else contextlib.nullcontext():
        return _run_steps(steps, root, force=force, ctx=Context(progress=progress, echo=echo))


def _only_ours(steps: list[Step], root: Location) -> None:
    """Refuse, before any stage runs, an existing output that this run folder's record does not
    list as a product of an earlier run: a pipeline replaces what it wrote, never a user's file."""
    record = read_record(root) if isinstance(root, URLPath) or root.is_dir() else {}
    ours = {_real(p) for st in record.values() for p in st.get("paths", st.get("products", {}).values())}
    for step in steps:
        for path in flat(step.stage.products(step.options)):
            exists = product_exists(path) or (not is_url(path) and path.is_symlink())
            if exists and _real(path) not in ours:
                raise OutputExistsError(
                    f"[{step.stage.name}] {path}: exists, and the run folder's record ({root / RECORD}) "
                    "does not list it as written by this pipeline; it is never replaced. Fix: move it "
                    "away, or choose another out_dir."
                )


def _run_steps(steps: list[Step], root: Location, *, force: bool, ctx: Context) -> dict[str, dict[str, Path]]:
    record = read_record(root)
    results: dict[str, dict[str, Path]] = {}
    for step in steps:
        name, products = step.stage.name, step.stage.products(step.options)
        if not force and _up_to_date(step, record):
            ctx.echo(f"[{name}] up to date, skipped (use --force to redo)")
        else:
            ctx.echo(f"[{name}] running")
            step.stage.execute(step.options, ctx, inside=step.inside)
        record[name] = {
            "params": options_record(step.options),
            "products": {k: _in_record(p, root) for k, p in products.items()},
            "paths": [_in_record(p, root) for p in flat(products)],
            "relative_to": "run folder",  # a product inside the run folder is named from it
        }
        write_text(root / RECORD, json.dumps(record, indent=2))
        results[name] = products
    stores = [
        str(p)
        for products in results.values()
        for kind, paths in products.items()
        if PRODUCTS[kind_of(kind)].zarr
        for p in _many(paths)
        if is_url(p)
    ]
    if stores:  # one tag across the run's stores on object storage: reopen them as URL@TAG
        tag = "run-" + _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        tag_stores(stores, tag)
        ctx.echo(f"tagged the stores of this run {tag} (open an earlier run's as URL@TAG)")
    return results
