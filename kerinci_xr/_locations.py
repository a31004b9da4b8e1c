"""Locations of inputs and outputs: local paths, made absolute on the client, and URLs.

A path that goes into a Dask graph is run on a worker, whose working directory is its own: every
local location is made absolute where the user gave it, before any graph is built. URLs
(``s3://``, ``gs://``, ``az://``, ``http(s)://``) and GDAL's ``/vsi...`` paths are kept as given.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["absolute", "is_url"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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
