"""Outputs written atomically: the one helper every writer of a file or store goes through."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import InputFileNotFoundError, OutputExistsError

__all__ = ["atomic_output", "check_output", "write_atomic", "write_text", "written_here"]


#: The file that marks a folder of several products as this toolkit's (``{"title": "kerinci_xr ..."}``).
MARKER = ".kerinci-xr.json"


def written_here(path: Path) -> bool:
    """Whether a folder is a store this toolkit wrote (its Zarr root's ``title`` says so, or, for a
    folder of several products, its :data:`MARKER` file)."""
    for meta in (path / ".zattrs", path / "zarr.json", path / MARKER):
        if meta.is_file():
            try:
                attrs = json.loads(meta.read_text())
            except (OSError, ValueError):
                return False
            attrs = attrs.get("attributes", attrs) if meta.name == "zarr.json" else attrs
            return str(attrs.get("title", "")).startswith("kerinci_xr")
    return False


def check_output(path: str | Path, *, overwrite: bool = False) -> None:
    """Refuse an existing output (unless ``overwrite``), a folder this toolkit did not write (even
    with ``overwrite``: it may hold the user's data), or a missing parent folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path}: output exists. Fix: pass overwrite=True (--overwrite) or choose another path."
        )
    if path.is_dir() and not path.is_symlink() and not written_here(path):
        raise OutputExistsError(
            f"{path}: expected an output path, found a folder this toolkit did not write (it is never "
            "replaced, --overwrite or not). Fix: choose another output path."
        )
    if not path.parent.is_dir():
        raise InputFileNotFoundError(f"{path.parent}: output folder does not exist. Fix: create it first.")


class atomic_output:
    """Context manager: write into a temporary sibling, then move it into place on success.

    ``with atomic_output(path, overwrite=False) as tmp: ...`` refuses an existing ``path``
    (unless ``overwrite``) before anything is written, removes the temporary sibling on error,
    and on success replaces the old output by two renames, so a crash at any point leaves
    either the old output or the new one, never a half-written one. Works for files and folders.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        # the suffix is kept, so that writers that pick a format by extension (GDAL) still can
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}{self.path.suffix}")

    def __enter__(self) -> Path:
        check_output(self.path, overwrite=self.overwrite)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            # tasks already running when another failed may still write a chunk or two (a threaded
            # scheduler does not stop them), re-creating folders: remove until it stays removed
            for _ in range(50):
                _remove(self.tmp)
                time.sleep(0.02)
                if not self.tmp.exists():
                    break
            return
        backup = None
        if self.path.exists() or self.path.is_symlink():
            backup = self.path.with_name(f".{self.path.name}.old-{uuid.uuid4().hex[:8]}")
            self.path.rename(backup)
        self.tmp.rename(self.path)
        if backup is not None:
            _remove(backup)


def write_atomic(path: str | Path, write: Callable[[Path], Any], *, overwrite: bool = True) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then move it into place."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """Write a text file (UTF-8) atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
