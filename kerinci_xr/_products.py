"""Products: every kind a stage reads or writes, and the one way a reader finds one on disk.

A product is a :class:`Kind` with one :class:`Product` entry in :data:`PRODUCTS`: what it is
called in messages, which stage makes it, and whether it is a file, a store (a folder written
as one piece) or a folder of files. Readers call :func:`locate` before they open anything: it
refuses temporaries of an unfinished write, settles an interrupted output set, and checks that
the product is there in the shape its kind has, all once. Writers write through
:mod:`._outputs`; the stage runner checks every declared output with :func:`check_outputs`
before a stage does any work. A new kind of product is one entry here plus its reader and writer.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, Literal

from . import _objects
from ._locations import VECTOR_SUFFIXES, filesystem, is_url, location_error, read_bytes, split_ref
from ._objects import StoreTarget, is_repository, read_store
from ._outputs import check_folder, check_output, claim, refuse_temporary, remote_set, settle
from .errors import InputFileNotFoundError, InvalidInputError

__all__ = [
    "PRODUCTS",
    "Kind",
    "Product",
    "check_outputs",
    "companions",
    "kind_of",
    "locate",
    "modified",
    "product_bytes",
    "product_exists",
    "read_json",
    "read_on_workers",
    "zarr_store",
]


class Kind(StrEnum):
    """The kinds of product (the keys a stage's products come under)."""

    SCENE = "scene"
    IMAGE = "image"
    STAC = "stac"
    LABELS = "labels"
    RADAR = "radar"
    MASK = "mask"
    QA_PIXEL = "qa_pixel"
    REFERENCE_POINTS = "reference_points"
    LEGEND = "legend"
    CUBE = "cube"
    QUICKLOOKS = "quicklooks"
    PATCHES = "patches"
    MANIFEST = "manifest"
    MODEL = "model"
    MODEL_LAST = "model_last"
    HISTORY = "history"
    HISTORY_JSON = "history_json"
    CROSSVAL = "crossval"
    METRICS = "metrics"
    PREDICTION = "prediction"
    COG = "cog"
    COG_STYLE = "cog_style"
    AREAS = "areas"
    AREAS_JSON = "areas_json"
    SCENE_METRICS = "scene_metrics"
    CHANGE = "change"
    CHANGE_COG = "change_cog"
    CHANGE_COG_STYLE = "change_cog_style"
    TRANSITIONS = "transitions"
    CHANGE_SUMMARY = "change_summary"
    SAMPLE_DESIGN = "sample_design"
    SUGGESTIONS = "suggestions"
    LEARNING_CURVES = "learning_curves"
    UNCERTAINTY_COG = "uncertainty_cog"
    ASSESSMENT = "assessment"
    ASSESSMENT_CSV = "assessment_csv"
    MAP_PAGE = "map_page"
    MAP_PNGS = "map_pngs"
    REPORT = "report"
    IMAGE_COG = "image_cog"


Shape = Literal["file", "store", "folder"]


@dataclass(frozen=True)
class Product:
    """What the registry knows of a kind.

    ``shape``: a ``"file"``; a ``"store"`` (a folder written and replaced as one piece: Zarr,
    the crossval folder); or a ``"folder"`` of files that are each checked and written on their
    own (quicklook PNGs), which may already exist. ``made_by``: the command that makes one (for
    the fix in a "not found" message); empty for the user's own inputs.
    """

    noun: str
    shape: Shape = "file"
    made_by: str = ""
    #: The files that belong with one (a checkpoint's history, a COG's style): an input's
    #: companions are inputs of the run too, never to be written over.
    companions: Callable[[Path], tuple[Path, ...]] = lambda p: ()
    #: A Zarr store (on object storage: an Icechunk repository).
    zarr: bool = False


def _suffixes(*suffixes: str) -> Callable[[Path], tuple[Path, ...]]:
    return lambda p: tuple(p.with_suffix(s) for s in suffixes)


def _sidecars(path: Path) -> tuple[Path, ...]:
    return (path.with_suffix(".qml"), path.with_name(path.name + ".aux.xml"))


def _checkpoint_files(path: Path) -> tuple[Path, ...]:
    return tuple(path.with_name(path.stem + s) for s in (".last.pt", ".history.csv", ".history.json"))


PRODUCTS: dict[Kind, Product] = {
    Kind.SCENE: Product("generated scene folder", "folder", "kerinci-xr synth"),
    Kind.IMAGE: Product("image raster"),
    Kind.STAC: Product("STAC document (items, catalog or collection)"),
    Kind.LABELS: Product("label raster or vector file"),
    Kind.RADAR: Product("radar raster"),
    Kind.MASK: Product("cloud or quality mask raster"),
    Kind.QA_PIXEL: Product("Landsat QA_PIXEL quality band", "file", "kerinci-xr synth --qa-pixel"),
    Kind.REFERENCE_POINTS: Product("reference points file", "file", "kerinci-xr synth --points N"),
    Kind.LEGEND: Product("legend (lc.json)"),
    Kind.CUBE: Product("cube", "store", "kerinci-xr prepare", zarr=True),
    Kind.QUICKLOOKS: Product("quicklook folder", "folder", "kerinci-xr quicklook"),
    Kind.PATCHES: Product(
        "patch store", "store", "kerinci-xr sample", _suffixes(".csv", ".parquet"), zarr=True
    ),
    Kind.MANIFEST: Product("patch manifest", "file", "kerinci-xr sample"),
    Kind.MODEL: Product("model checkpoint", "file", "kerinci-xr train", _checkpoint_files),
    Kind.MODEL_LAST: Product("last-epoch checkpoint", "file", "kerinci-xr train"),
    Kind.HISTORY: Product("training history", "file", "kerinci-xr train"),
    Kind.HISTORY_JSON: Product("training history (JSON)", "file", "kerinci-xr train"),
    Kind.CROSSVAL: Product("cross-validation folder", "store", "kerinci-xr crossval"),
    Kind.METRICS: Product("metrics report", "file", "kerinci-xr evaluate"),
    Kind.PREDICTION: Product("prediction store", "store", "kerinci-xr predict", zarr=True),
    Kind.COG: Product("class-map COG", "file", "kerinci-xr predict --cog", _sidecars),
    Kind.COG_STYLE: Product("QGIS style of the COG", "file", "kerinci-xr predict --cog"),
    Kind.AREAS: Product("class areas table", "file", "kerinci-xr predict --areas", _suffixes(".json")),
    Kind.AREAS_JSON: Product("class areas (JSON)", "file", "kerinci-xr predict --areas"),
    Kind.SCENE_METRICS: Product("whole-scene metrics", "file", "kerinci-xr predict --metrics"),
    Kind.CHANGE: Product("change store", "store", "kerinci-xr change", zarr=True),
    Kind.CHANGE_COG: Product("change COG", "file", "kerinci-xr change --cog", _sidecars),
    Kind.CHANGE_COG_STYLE: Product("QGIS style of the change COG", "file", "kerinci-xr change --cog"),
    Kind.TRANSITIONS: Product("transition table", "file", "kerinci-xr change --transitions"),
    Kind.CHANGE_SUMMARY: Product("change summary", "file", "kerinci-xr change --summary"),
    Kind.SAMPLE_DESIGN: Product("accuracy sample", "file", "kerinci-xr design-sample"),
    Kind.SUGGESTIONS: Product("points to label next", "file", "kerinci-xr suggest"),
    Kind.LEARNING_CURVES: Product(
        "active-learning results (JSON)", "file", "python benchmarks/bench_active.py"
    ),
    Kind.UNCERTAINTY_COG: Product("uncertainty COG", "file", "kerinci-xr predict --uncertainty-cog"),
    Kind.ASSESSMENT: Product("accuracy assessment", "file", "kerinci-xr assess"),
    Kind.ASSESSMENT_CSV: Product("accuracy table", "file", "kerinci-xr assess --csv"),
    Kind.MAP_PAGE: Product("map page", "file", "kerinci-xr map"),
    Kind.MAP_PNGS: Product("map PNG folder", "folder", "kerinci-xr map --png"),
    Kind.REPORT: Product("report page", "file", "kerinci-xr report"),
    Kind.IMAGE_COG: Product("image COG", "file", "kerinci-xr export"),
}

_TAGGED = re.compile(r"^(?P<kind>[a-z_]+?)_(?P<tag>\d{4})$")


def kind_of(name: str) -> Kind:
    """The kind of a product key: ``"image"``, ``"image_2023"`` (one year of a series) or
    ``"image[1]"`` (the second of several)."""
    name = name.split("[", 1)[0]
    m = _TAGGED.match(name)
    return Kind(name) if name in Kind.__members__.values() or m is None else Kind(m["kind"])


def companions(path: str | os.PathLike, kind: Kind | None) -> tuple[Path, ...]:
    """The files that belong with a product of ``kind`` at ``path`` (none for an unknown kind)."""
    if kind is None or is_url(path):
        return ()
    return PRODUCTS[kind].companions(Path(path))


#: The kinds of input the Dask workers read themselves (the others are read by the client).
_READ_ON_WORKERS = {
    Kind.IMAGE,
    Kind.LABELS,
    Kind.RADAR,
    Kind.MASK,
    Kind.CUBE,
    Kind.PATCHES,
    Kind.PREDICTION,
    Kind.CHANGE,
    Kind.MODEL,
    Kind.COG,
}


def read_on_workers(kind: Kind | None, path: Any) -> bool:
    """Whether the Dask workers read an input of ``kind`` at ``path`` themselves (a raster, a
    store, a checkpoint); vector labels, legends, STAC documents and tables are read by the client."""
    if kind == Kind.LABELS:
        return PurePosixPath(os.fspath(path)).suffix.lower() not in VECTOR_SUFFIXES
    return kind in _READ_ON_WORKERS


def locate(path: str | os.PathLike, kind: Kind) -> Any:
    """The product of ``kind`` at ``path``, ready to open: a temporary of an unfinished write is
    refused, an interrupted output set settled (its whole old or whole new version), and a
    product that is missing, or a file where a store belongs (or the reverse), refused naming the
    kind and the command that makes one. Returns a ``Path``, or for a product on object storage
    its URL (``URL@REF``: an earlier version of a store)."""
    entry = PRODUCTS[kind]
    if is_url(path):
        return _locate_url(os.fspath(path), kind)
    path = Path(path)
    refuse_temporary(path)
    settle(path)
    if not path.exists():
        fix = f"run `{entry.made_by}` first" if entry.made_by else "check the path"
        raise InputFileNotFoundError(f"{path}: {entry.noun} not found. Fix: {fix}.")
    folder = entry.shape != "file"
    if path.is_dir() != folder:
        found = "a folder" if path.is_dir() else "a file"
        expected = "a folder" if folder else "a file"
        raise InvalidInputError(
            f"{path}: expected a {entry.noun} ({expected}), found {found}. Fix: pass the {entry.noun}"
            + (f" that `{entry.made_by}` wrote." if entry.made_by else ".")
        )
    return path


def _locate_url(url: str, kind: Kind) -> str:
    """:func:`locate` on object storage: what this run wrote there itself, or what is committed."""
    entry = PRODUCTS[kind]
    refuse_temporary(url)
    part = remote_set()
    if part is not None and part.staged(url) is not None:
        return url
    settle(url)
    base, _ = split_ref(url)
    if entry.zarr:
        found = is_repository(base) and _objects.written_here(base)
    else:
        fs = filesystem(base)
        try:
            found = bool(fs.exists(base)) and (fs.isdir(base) == (entry.shape != "file"))
        except Exception as exc:
            raise location_error(base, exc, entry.noun) from exc
    if not found:
        fix = f"run `{entry.made_by}` first" if entry.made_by else "check the URL"
        raise InputFileNotFoundError(f"{url}: {entry.noun} not found there. Fix: {fix}.")
    return url


def zarr_store(location: str | os.PathLike) -> Any:
    """What ``xr.open_zarr``/``zarr.open_group`` open a located Zarr product as: its folder, or on
    object storage the read-only store of its Icechunk repository (the version this run wrote
    if it wrote one, else the committed one, or the one ``URL@REF`` names)."""
    if not is_url(location):
        return Path(location)
    part = remote_set()
    staged = part.staged(str(location)) if part is not None else None
    if isinstance(staged, StoreTarget) and staged.snapshot is not None:
        return read_store(str(location), snapshot=staged.snapshot)
    return read_store(str(location))


def product_exists(location: str | os.PathLike) -> bool:
    """Whether a product is at ``location`` (or this run has written one there)."""
    if not is_url(location):
        return Path(location).exists()
    url = os.fspath(location)
    part = remote_set()
    if part is not None and part.staged(url) is not None:
        return True
    settle(url)
    return bool(filesystem(url).exists(split_ref(url)[0]))


def modified(location: str | os.PathLike) -> float:
    """When the product at ``location`` last changed (seconds since the epoch): the newest file
    of a folder, an object's time, or the commit time of a store's latest version."""
    if not is_url(location):
        path = Path(location)
        return max([path.stat().st_mtime, *(q.stat().st_mtime for q in path.rglob("*"))])
    url = split_ref(os.fspath(location))[0]
    if is_repository(url):
        return _objects.committed_at(url)
    fs = filesystem(url)
    found = fs.find(url, detail=True) if fs.isdir(url) else {url: fs.info(url)}
    return max(_epoch(info.get("LastModified", 0)) for info in found.values())


def _epoch(value: Any) -> float:
    return value.timestamp() if hasattr(value, "timestamp") else float(value or 0)


def product_bytes(path: str | os.PathLike, kind: Kind) -> bytes:
    """The bytes of a file product (a checkpoint, a table, a report), local or on object storage
    (as this run staged it, or as committed), located through the registry first."""
    where = locate(path, kind)
    part = remote_set() if is_url(where) else None
    staged = part.staged(where) if part is not None else None
    if isinstance(staged, Path):
        return staged.read_bytes()
    return read_bytes(where, PRODUCTS[kind].noun)


def read_json(path: str | os.PathLike, kind: Kind) -> Any:
    """A JSON product (a report, a summary), located through the registry first."""
    try:
        return json.loads(product_bytes(path, kind).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        entry = PRODUCTS[kind]
        raise InvalidInputError(
            f"{path}: expected a {entry.noun} (JSON), found a file that is not JSON ({exc}). Fix: pass the "
            f"{entry.noun}" + (f" that `{entry.made_by}` wrote." if entry.made_by else ".")
        ) from exc


def _real(path: str | os.PathLike) -> PurePath:
    """``path`` with every symlink followed (also when it does not exist yet); a URL as a path
    of its own kind (``s3://b/k`` and ``/vsis3/b/k`` alike: ``/s3:/b/k``), which never meets a
    local one."""
    text = os.fspath(path)
    if is_url(text):
        base, _ = split_ref(text)
        for s, vsi in (("s3", "/vsis3/"), ("gs", "/vsigs/"), ("az", "/vsiaz/")):
            if base.startswith(vsi):
                base = f"{s}://{base[len(vsi) :]}"
        s, _, rest = base.partition("://")
        return PurePosixPath(f"/{s}:", rest)
    return Path(os.path.realpath(text))


def _overlaps(a: PurePath, b: PurePath) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_outputs(
    outputs: Mapping[str, Any],
    inputs: Mapping[str, Any],
    *,
    overwrite: bool,
    stage: str,
    inside: str | os.PathLike | None = None,
) -> None:
    """Refuse, before any work, an output that is (or lies in, or holds) one of the run's inputs
    or another of its outputs (symlinks followed), an output outside ``inside`` (a pipeline's run
    folder), or one :func:`~._outputs.check_output` refuses; then claim every output for this
    run's output set, locked from here until the set commits.

    A folder-shaped output (quicklook PNGs, a generated scene) holds files that are outputs of
    their own, or the user's: only the folder itself may not be an input.
    """
    real_in = {name: _real(p) for name, p in inputs.items()}
    folders = {name for name in outputs if PRODUCTS[kind_of(name)].shape == "folder"}
    seen: dict[str, PurePath] = {}
    for name, path in outputs.items():
        real = _real(path)
        for other, q in real_in.items():
            if real == q or (name not in folders and _overlaps(real, q)):
                raise InvalidInputError(
                    f"{stage}: the output {name} ({path}) is the input {other} ({inputs[other]}) of this run"
                    + ("" if real == q else ", or holds it, or lies inside it")
                    + "; writing it would destroy the input. Fix: choose another output path."
                )
        for other, q in seen.items():
            nested = (other in folders and real.is_relative_to(q)) or (
                name in folders and q.is_relative_to(real)
            )
            if real == q or (_overlaps(real, q) and not nested):
                raise InvalidInputError(
                    f"{stage}: the outputs {other} and {name} are both {path}"
                    + ("" if real == q else " (one inside the other)")
                    + "; one would be lost. Fix: give each output its own path."
                )
        seen[name] = real
        if inside is not None and not real.is_relative_to(_real(inside)):
            raise InvalidInputError(
                f"{stage}: the output {name} ({path}) lies outside the run folder {inside} (it resolves to "
                f"{real}). Fix: an output path inside the run folder, with no symlink leading out of it."
            )
    remote = {name: str(p) for name, p in outputs.items() if is_url(p)}
    for name, url in remote.items():  # no folders to make on object storage: keys have none
        if name not in folders:
            claim(url, overwrite=overwrite, store=PRODUCTS[kind_of(name)].zarr)
    local = {name: Path(p) for name, p in outputs.items() if name not in remote}
    new = set()
    for name in folders & set(local):
        path = local[name]
        if path.exists() and not path.is_dir():
            raise InvalidInputError(
                f"{stage}: {path}: expected a folder for the {PRODUCTS[kind_of(name)].noun}, found a file. "
                "Fix: choose another path."
            )
        check_folder(path)
        if not path.exists():
            new.add(_real(path))
    files = {name: p for name, p in local.items() if name not in folders}
    for path in files.values():  # a file in a folder this run creates cannot exist yet
        if _real(path.parent) not in new:
            check_output(path, overwrite=overwrite)
    for name in folders & set(local):
        local[name].mkdir(exist_ok=True)
    for path in files.values():
        claim(path, overwrite=overwrite)
