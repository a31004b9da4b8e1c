"""Locations of inputs and outputs: local paths, made absolute on the client, and URLs.

A path that goes into a Dask graph is run on a worker, whose working directory is its own: every
local location is made absolute where the user gave it, before any graph is built. URLs
(``s3://``, ``gs://``, ``az://``, ``http(s)://``) and GDAL's ``/vsi...`` paths are kept as given;
rasters open through GDAL's network drivers (:func:`gdal_path`), small files (legends) and
listings (globs) through fsspec. Credentials and endpoints come from the standard environment:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` and, for an S3-compatible server (MinIO, a local
test server), ``AWS_ENDPOINT_URL``, which is passed on to GDAL (:func:`gdal_s3_env`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .errors import InputFileNotFoundError, InvalidInputError, RasterReadError

__all__ = [
    "VECTOR_SUFFIXES",
    "Location",
    "URLPath",
    "absolute",
    "as_location",
    "filesystem",
    "gdal_path",
    "gdal_s3_env",
    "glob_url",
    "is_url",
    "location_error",
    "open_gdal",
    "read_bytes",
    "scheme",
    "split_ref",
    "version",
]

#: The endings of vector files (read with pyogrio, by the client).
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".parquet", ".geoparquet", ".fgb", ".gml", ".kml")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: URL schemes and the GDAL virtual file system that reads them (byte ranges, never whole files).
_VSI = {"s3": "/vsis3/", "gs": "/vsigs/", "gcs": "/vsigs/", "az": "/vsiaz/", "abfs": "/vsiaz/"}
_HTTP = ("http", "https")
#: What each scheme needs beyond the base install, for the error that names it.
_NEEDS = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
_CREDENTIALS = (
    "Fix: check the URL; for S3 set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL "
    "for an S3-compatible server such as MinIO)."
)


def is_url(location: str | os.PathLike) -> bool:
    """Whether ``location`` names an object by URL (or a GDAL virtual file), not a local path."""
    text = os.fspath(location)
    return bool(_URL.match(text)) or text.startswith("/vsi")


def absolute(location: str | os.PathLike) -> str:
    """``location`` as the client means it: a local path absolute (``~`` expanded, symlinks
    kept, so that what the user named is what is checked), a URL unchanged."""
    text = os.fspath(location)
    if is_url(text):
        return text
    return os.path.abspath(Path(text).expanduser())


class URLPath(os.PathLike):
    """An object-storage URL with the path operations a product's companions need
    (``.with_suffix``, ``.name``, ``/``), which ``Path`` cannot give: it folds ``s3://`` to
    ``s3:/``. ``os.fspath`` and ``str`` give the URL back."""

    __slots__ = ("_path", "_prefix")

    def __init__(self, url: str | os.PathLike) -> None:
        text = os.fspath(url)
        m = _PREFIX.match(text)
        if m is None:
            raise ValueError(f"{text}: expected a URL or a GDAL /vsi... name")
        self._prefix, self._path = m.group(0), PurePosixPath(text[m.end() :])

    def _make(self, path: PurePosixPath) -> URLPath:
        return URLPath(f"{self._prefix}{path}")

    def __fspath__(self) -> str:
        return f"{self._prefix}{self._path}"

    __str__ = __fspath__

    def __repr__(self) -> str:
        return f"URLPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, URLPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, part: str) -> URLPath:
        return self._make(self._path / part)

    @property
    def name(self) -> str:
        return self._path.name

    @property
    def stem(self) -> str:
        return self._path.stem

    @property
    def suffix(self) -> str:
        return self._path.suffix

    @property
    def parent(self) -> URLPath:
        return self._make(self._path.parent)

    def with_suffix(self, suffix: str) -> URLPath:
        return self._make(self._path.with_suffix(suffix))

    def with_name(self, name: str) -> URLPath:
        return self._make(self._path.with_name(name))


#: Where a location's own path begins: after ``s3://``, ``/vsis3/`` or ``/vsicurl/https://``.
_PREFIX = re.compile(r"^(?:/vsi[a-z0-9_]+/)?(?:[A-Za-z][A-Za-z0-9+.-]*://)?")

#: A location: a local path, or an object by URL (a GDAL ``/vsi...`` name included).
Location = Path | URLPath


def as_location(location: str | os.PathLike) -> Location:
    """A local path as a ``Path``, a URL or GDAL ``/vsi...`` name as a :class:`URLPath`
    (``Path`` would fold ``s3://`` to ``s3:/``)."""
    text = os.fspath(location)
    return URLPath(text) if is_url(text) else Path(text)


def scheme(location: str | os.PathLike) -> str:
    text = os.fspath(location)
    return urlsplit(text).scheme.lower() if _URL.match(text) else ""


def gdal_path(location: str | os.PathLike) -> str:
    """The name GDAL opens ``location`` by: ``s3://b/k`` -> ``/vsis3/b/k``, ``https://...`` ->
    ``/vsicurl/https://...``; local paths and ``/vsi...`` names unchanged."""
    text = os.fspath(location)
    s = scheme(text)
    if s in _VSI:
        if s == "s3":
            gdal_s3_env()  # the endpoint as set now (GDAL reads the environment at each open)
        return _VSI[s] + text.split("://", 1)[1]
    if s in _HTTP:
        return "/vsicurl/" + text
    if s and s != "file":
        raise InvalidInputError(
            f"{text}: expected a local path or an s3://, gs://, az:// or http(s):// URL, found the scheme "
            f"{s!r}, which GDAL cannot read. Fix: copy the file to one of those."
        )
    return text.split("://", 1)[1] if s == "file" else text


@contextlib.contextmanager
def open_gdal(location: str | os.PathLike) -> Iterator[Any]:
    """A raster opened read-only with rasterio by its GDAL name (:func:`gdal_path`). A URL is
    opened without listing its "folder" (``GDAL_DISABLE_READDIR_ON_OPEN``: one LIST request
    fewer per open on object storage); a local file keeps GDAL's sidecars (``.aux.xml``, ``.msk``,
    ``.ovr``), so the setting applies to this open only, never to the process or its children."""
    import rasterio

    config = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"} if is_url(location) else {}
    with rasterio.Env(**config), rasterio.open(gdal_path(location)) as src:
        yield src


def gdal_s3_env(environ: dict[str, str] | os._Environ = os.environ) -> None:
    """Pass ``AWS_ENDPOINT_URL`` (the variable boto3, s3fs and the AWS CLI read) on to GDAL, which
    reads its own ``AWS_S3_ENDPOINT``, ``AWS_HTTPS`` and ``AWS_VIRTUAL_HOSTING``; those already
    set are kept."""
    url = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if not url or "AWS_S3_ENDPOINT" in environ:
        return
    parts = urlsplit(url if "://" in url else f"https://{url}")
    environ["AWS_S3_ENDPOINT"] = parts.netloc + parts.path.rstrip("/")
    environ.setdefault("AWS_HTTPS", "NO" if parts.scheme == "http" else "YES")
    environ.setdefault("AWS_VIRTUAL_HOSTING", "FALSE")  # path-style, what S3-compatible servers take


def split_ref(location: str) -> tuple[str, str | None]:
    """``s3://b/cube.zarr@v3`` -> (``s3://b/cube.zarr``, ``"v3"``): a version of a product on
    object storage (a tag or snapshot id); local paths and URLs without ``@`` have none."""
    if is_url(location) and "@" in location.rsplit("/", 1)[-1]:
        head, _, ref = location.rpartition("@")
        return head, ref or None
    return location, None


def filesystem(location: str):
    """The fsspec file system of a URL's scheme (``s3fs`` for ``s3://``, with the endpoint of
    ``AWS_ENDPOINT_URL``); a clear error naming the package when it is not installed."""
    import fsspec

    s = scheme(location) or "file"
    try:
        return fsspec.filesystem(s, **_fs_options(s))
    except (ImportError, ValueError) as exc:
        need = _NEEDS.get(s, "the fsspec implementation for it")
        raise InvalidInputError(
            f"{location}: the scheme {s!r} needs {need}, which is not installed ({exc}). "
            f"Fix: pip install {need}."
        ) from exc


def _fs_options(s: str) -> dict:
    if s == "s3":  # no listing cache: a set's journals and outputs are checked as they are now
        url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return {"use_listings_cache": False} | ({"endpoint_url": url} if url else {})
    return {}


def location_error(location: str, exc: BaseException, what: str) -> Exception:
    """One line for a failed read of ``location``: not found, access refused, or unreachable."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, FileNotFoundError) or "does not exist" in low or "404" in low or "nosuchkey" in low:
        return InputFileNotFoundError(f"{location}: {what} not found there ({text}). {_CREDENTIALS}")
    if isinstance(exc, PermissionError) or "403" in low or "access denied" in low or "credentials" in low:
        return InvalidInputError(f"{location}: access to the {what} was refused ({text}). {_CREDENTIALS}")
    if any(w in low for w in ("connect", "resolve", "timed out", "timeout", "unreachable")):
        return InvalidInputError(
            f"{location}: the {what} could not be reached ({text}). Fix: check the host, or AWS_ENDPOINT_URL "
            "for an S3-compatible server, and the network."
        )
    return RasterReadError(f"{location}: the {what} could not be read ({text}). {_CREDENTIALS}")


def version(location: str | os.PathLike) -> Any:
    """A token that changes whenever the file at ``location`` does: its modification time, or
    the ETag of an object (to cache what was read from it)."""
    text = os.fspath(location)
    if not is_url(text):
        return Path(text).stat().st_mtime_ns
    try:
        return filesystem(text).info(split_ref(text)[0]).get("ETag")
    except Exception as exc:
        raise location_error(text, exc, "file") from exc


def read_bytes(location: str | os.PathLike, what: str) -> bytes:
    """The bytes of a small file (a legend, a JSON table), local or by URL."""
    text = os.fspath(location)
    if not is_url(text):
        path = Path(text)
        if not path.is_file():
            raise InputFileNotFoundError(f"{path}: {what} not found. Fix: check the path.")
        return path.read_bytes()
    fs = filesystem(text)
    try:
        with fs.open(text, "rb") as f:
            return f.read()
    except Exception as exc:
        raise location_error(text, exc, what) from exc


def glob_url(pattern: str) -> list[str]:
    """The objects a URL pattern (``s3://bucket/scenes/L8-*.tif``) matches, sorted, as URLs."""
    fs = filesystem(pattern)
    s = scheme(pattern)
    try:
        found = sorted(fs.glob(pattern))
    except Exception as exc:
        raise location_error(pattern, exc, "listing") from exc
    return [f"{s}://{p}" if s and "://" not in p else p for p in found]
