"""Outputs written atomically: the one helper every writer of a file or store goes through."""

from __future__ import annotations

import contextlib
import contextvars
import glob
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _objects
from ._locations import Location, as_location, is_url, split_ref
from .errors import InputFileNotFoundError, InvalidInputError, OutputExistsError

try:  # POSIX; elsewhere (Windows) outputs are written atomically but not locked against a second writer
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms CI runs
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "OutputSet",
    "atomic_output",
    "atomic_store",
    "check_folder",
    "check_output",
    "claim",
    "commit_so_far",
    "output_folder",
    "output_set",
    "refuse_temporary",
    "remote_set",
    "settle",
    "temporary_of",
    "write_atomic",
    "write_text",
    "written_here",
]


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


def check_output(path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse an existing output (unless ``overwrite``), a folder this toolkit did not write (even
    with ``overwrite``: it may hold the user's data), or a missing parent folder."""
    if is_url(path):
        tx = _SET.get()
        if tx is None or split_ref(os.fspath(path))[0] not in tx.remote_part().claimed:
            _objects.check_output(os.fspath(path), overwrite=overwrite, store=False)
        return
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
    check_folder(path)


def check_folder(path: str | Path) -> None:
    """Refuse an output whose folder is missing or cannot be written to."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputFileNotFoundError(f"{path.parent}: output folder does not exist. Fix: create it first.")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise InvalidInputError(
            f"{path}: the output folder {path.parent} is not writable (no permission, or a read-only "
            "file system). Fix: choose an output path in a folder you can write to."
        )


#: Names of the temporaries next to an output ``NAME``: ``.NAME.tmp-ID`` (being written),
#: ``.NAME.old-ID`` (the previous version, kept until its set commits), ``.NAME.tx-ID`` (which set
#: replaced it), ``.NAME.lock`` (held by the writer).
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old|tx)-(?P<id>[0-9a-f]{8,32})")


def temporary_of(path: str | Path) -> str | None:
    """The output a temporary belongs to (``None`` for a real output): temporaries of an unfinished
    write are never products, and readers refuse them with this."""
    m = _TEMP.match(Path(path).name)
    return m.group("name") if m else None


def refuse_temporary(path: str | Path) -> None:
    """Readers call this: a temporary of an unfinished write is not a product."""
    name = temporary_of(path)
    if name is not None:
        raise InvalidInputError(
            f"{path}: this is a temporary of an unfinished write of {name} (interrupted, or still running), "
            f"not a product. Fix: open {Path(path).with_name(name)}; the next run writing it removes this."
        )


class _Lock:
    """An exclusive ``flock`` on ``.NAME.lock`` beside an output, for as long as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(f".{path.name}.lock")
        self.fd: int | None = None

    def acquire(self, what: Path) -> None:
        if fcntl is None:
            return
        for _ in range(5):  # the file may be removed by the last holder between open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise OutputExistsError(
                    f"{what}: another kerinci-xr run (process {holder}) is writing this output now. "
                    "Fix: wait for it to finish, or write to another path."
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
                self.fd = fd
                return
            os.close(fd)
        raise OutputExistsError(f"{what}: could not lock {self.path}. Fix: retry.")

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self.fd)
            self.fd = None


class OutputSet:
    """The outputs one stage run writes, committed as one set.

    Each output is written to a temporary and swapped into place as soon as it is complete (so
    the run can read what it wrote), but the version it replaced is kept (``.NAME.old-ID``)
    and marked (``.NAME.tx-ID``) until every output of the run is in place; then one atomic
    rename of the set's log commits them all. A run that fails puts the old versions back; a
    run that is killed leaves the marks, and the next run or reader of any of its outputs
    (:func:`settle`) sees the log uncommitted and puts the whole old set back, or sees it
    committed and removes the old versions. The log's lock tells a live run from a dead one.
    """

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.log: Path | None = None
        self.lock_fd: int | None = None
        self.entries: dict[Path, dict[str, Any]] = {}
        self.locks: list[_Lock] = []
        self.owned: set[Path] = set()  # claimed or written (and locked) by this run, across commit_so_far
        self.remote: _objects.RemoteSet | None = None  # the outputs on object storage

    def remote_part(self) -> _objects.RemoteSet:
        if self.remote is None:
            self.remote = _objects.RemoteSet(self.id)
        return self.remote

    def _open_log(self, folder: Path) -> None:
        self.log = folder / f".kerinci-set-{self.id}.json"
        lock = folder / f".kerinci-set-{self.id}.lock"
        self.lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        self._write_log("open")

    def _write_log(self, state: str) -> None:
        assert self.log is not None
        tmp = self.log.with_name(self.log.name + ".part")
        tmp.write_text(
            json.dumps({"state": state, "pid": os.getpid(), "outputs": [str(p) for p in self.entries]})
        )
        os.replace(tmp, self.log)

    def swap(self, path: Path, tmp: Path) -> None:
        """Put ``tmp`` in place of ``path``, keeping the version of before the set."""
        if self.log is None:
            self._open_log(path.parent)
        self.owned.add(_key(path))
        if path in self.entries:  # written again in this run (a checkpoint each epoch): replace ours
            if path.is_dir() and not path.is_symlink():
                _remove(path)
            os.replace(tmp, path)
            return
        existed = path.exists() or path.is_symlink()
        backup = path.with_name(f".{path.name}.old-{self.id}")
        mark = {"log": str(self.log), "backup": backup.name if existed else None}
        self.entries[path] = mark
        self._write_log("open")
        path.with_name(f".{path.name}.tx-{self.id}").write_text(json.dumps(mark))
        if existed:
            path.rename(backup)
        tmp.rename(path)

    def commit(self, *, keep_locks: bool = False) -> None:
        remote = self.remote
        if remote is not None:  # its own commit point (a journal on the object store), first
            remote.commit()
        if self.log is not None:
            self._write_log("committed")  # the commit point: one atomic rename
            for path, mark in self.entries.items():
                if mark["backup"]:
                    _remove(path.with_name(mark["backup"]))
                path.with_name(f".{path.name}.tx-{self.id}").unlink(missing_ok=True)
        if keep_locks:  # a new set begins where this one ended, the outputs still ours
            locks, owned = self.locks, self.owned
            self.locks = []
            self._close()
            self.__init__()  # type: ignore[misc]
            self.locks, self.owned = locks, owned
            self.remote = remote.next(self.id) if remote is not None else None
            return
        self._close()

    def rollback(self) -> None:
        if self.remote is not None:
            self.remote.rollback()
        for path, mark in reversed(list(self.entries.items())):
            _restore(path, mark)
            path.with_name(f".{path.name}.tx-{self.id}").unlink(missing_ok=True)
        self._close()

    def _close(self) -> None:
        for lk in self.locks:
            lk.release()
        if self.log is not None:
            self.log.unlink(missing_ok=True)
            self.log.with_name(f".kerinci-set-{self.id}.lock").unlink(missing_ok=True)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None


_SET: contextvars.ContextVar[OutputSet | None] = contextvars.ContextVar("kerinci_output_set", default=None)


@contextlib.contextmanager
def output_set():
    """Commit every output written inside the block as one set (see :class:`OutputSet`)."""
    if _SET.get() is not None:  # nested: the outer set commits
        yield _SET.get()
        return
    tx = OutputSet()
    token = _SET.set(tx)
    try:
        yield tx
    except BaseException:
        tx.rollback()
        raise
    else:
        tx.commit()
    finally:
        _SET.reset(token)


def _key(path: Path) -> Path:
    """One name per output, however the path was spelt (``a/./b``, relative or absolute)."""
    return Path(os.path.abspath(path))


def remote_set() -> _objects.RemoteSet | None:
    """The object-storage part of the run's output set (``None`` outside a set)."""
    tx = _SET.get()
    return tx.remote_part() if tx is not None else None


def claim(path: str | Path, *, overwrite: bool = False, store: bool = False) -> None:
    """Make ``path`` an output of the run's output set before any work: lock it (a second writer
    fails at once, naming this run), check it (:func:`check_output`, again under the lock, so
    a run that finished meanwhile is not replaced), settle what an interrupted run left and
    remove stale temporaries. The lock is held until the set commits, however long the run.

    On object storage (a URL; ``store``: a Zarr product, an Icechunk repository) there is no
    lock: the output is checked and what is there remembered, so that a writer that committed it
    meanwhile is found at the commit point (:class:`._objects.RemoteSet`)."""
    tx = _SET.get()
    if is_url(path):
        if tx is None:
            _objects.check_output(str(path), overwrite=overwrite, store=store)
        else:
            tx.remote_part().claim(str(path), overwrite=overwrite, store=store)
        return
    path = Path(path)
    if tx is None:
        check_output(path, overwrite=overwrite)
        return
    if _key(path) in tx.owned:
        return
    check_output(path, overwrite=overwrite)  # a missing folder is named before a lock is tried there
    lock = _Lock(path)
    lock.acquire(path)
    tx.locks.append(lock)  # released when the set commits or rolls back
    check_output(path, overwrite=overwrite)
    settle(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        _remove(stale)  # no writer is alive: we hold the lock
    tx.owned.add(_key(path))


def commit_so_far() -> None:
    """Commit the outputs written so far as one set and start the next (the run goes on, its
    outputs still locked): a training run commits each epoch's checkpoints and history, so a
    run killed in epoch 7 is found at the end of epoch 6, ready to ``--resume``."""
    tx = _SET.get()
    if tx is not None and tx.entries:
        tx.commit(keep_locks=True)


def _restore(path: Path, mark: dict[str, Any]) -> None:
    """Put the version of before an uncommitted set back (or remove what the set added)."""
    backup = path.with_name(mark["backup"]) if mark.get("backup") else None
    if backup is not None and (backup.exists() or backup.is_symlink()):
        if path.exists() or path.is_symlink():
            _remove(path)
        backup.rename(path)
    elif backup is None and (path.exists() or path.is_symlink()):
        _remove(path)  # the set created it


def _live(log: Path) -> bool:
    """Whether the run of a set's log is still running (it holds the log's lock)."""
    lock = log.with_name(log.name.replace(".json", ".lock"))
    if not lock.exists():
        return False
    if fcntl is None:  # no way to tell: a set is left alone while its lock file is there
        return True
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def settle(path: str | Path) -> None:
    """Finish what an interrupted run left around ``path``: put back the old version of an
    uncommitted set (or drop the old version of a committed one). Readers and writers call it;
    a set whose run is still alive is left alone. On object storage: finish a committed set."""
    if is_url(path):
        _objects.settle(str(path))
        return
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        return
    for mark_file in folder.glob(f".{glob.escape(path.name)}.tx-*"):
        try:
            mark = json.loads(mark_file.read_text())
        except (OSError, ValueError):
            continue
        log = Path(mark["log"])
        if log.exists() and _live(log):
            continue
        try:
            state = json.loads(log.read_text())["state"] if log.exists() else "committed"
        except (OSError, ValueError):
            state = "open"
        if state == "committed":
            if mark.get("backup"):
                _remove(path.with_name(mark["backup"]))
        else:
            _restore(path, mark)
        mark_file.unlink(missing_ok=True)
        if log.exists() and not any(
            Path(p).with_name(f".{Path(p).name}.tx-{log.stem.split('-')[-1]}").exists()
            for p in json.loads(log.read_text()).get("outputs", [])
        ):
            log.unlink(missing_ok=True)
            log.with_name(log.name.replace(".json", ".lock")).unlink(missing_ok=True)


def atomic_output(path: str | os.PathLike, *, overwrite: bool = False) -> Any:
    """Context manager: write into a temporary, then put it in place on success.

    ``with atomic_output(path, overwrite=False) as tmp: ...`` yields a local path to write to.
    A local output is written as :class:`_LocalOutput` says; an output on object storage (a URL)
    is written to a local temporary that the run's output set uploads at its commit point
    (:class:`._objects.RemoteSet`). Works for files and folders.
    """
    if is_url(path):
        return _remote_output(str(path), overwrite=overwrite)
    return _LocalOutput(path, overwrite=overwrite)


@contextlib.contextmanager
def _in_a_set() -> Any:
    """The run's output set, or (a library call outside any stage) a set of its own."""
    tx = _SET.get()
    if tx is not None:
        yield tx
        return
    with output_set() as tx:
        yield tx


@contextlib.contextmanager
def _remote_output(url: str, *, overwrite: bool) -> Any:
    with _in_a_set() as tx:
        part = tx.remote_part()
        part.claim(url, overwrite=overwrite, store=False)
        tmp = part.staging(url)
        try:
            yield tmp
        except BaseException:
            _remove(tmp)
            raise
        part.stage_file(url, tmp)


@contextlib.contextmanager
def atomic_store(path: str | os.PathLike, *, overwrite: bool = False) -> Any:
    """Context manager for a Zarr product: a local path yields the temporary folder to write the
    store into (:func:`atomic_output`); a URL yields the :class:`._objects.StoreTarget` of an
    Icechunk repository there, written on the run's own branch and made the store's version at
    the set's commit point."""
    if not is_url(path):
        with atomic_output(path, overwrite=overwrite) as tmp:
            yield tmp
        return
    with _in_a_set() as tx:
        part = tx.remote_part()
        part.claim(str(path), overwrite=overwrite, store=True)
        yield part.begin_store(str(path))


class _LocalOutput:
    """Context manager: write into a temporary sibling, then move it into place on success.

    ``with atomic_output(path, overwrite=False) as tmp: ...`` refuses an existing ``path``
    (unless ``overwrite``) before anything is written, locks it against a second writer (which
    fails at once, naming this one), finishes or undoes what an interrupted run left
    (:func:`settle`) and removes its stale temporaries, removes the temporary on error, and on
    success replaces the old output by renames, so a crash at any point leaves the old output or
    the new one, never a half-written one. Inside :func:`output_set` (every stage runs in one)
    the old version is kept until all outputs of the run are in place. Works for files and folders.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        # the suffix is kept, so that writers that pick a format by extension (GDAL) still can
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}{self.path.suffix}")
        self.lock = _Lock(self.path)

    def __enter__(self) -> Path:
        tx = self._set()
        mine = tx is not None and _key(self.path) in tx.owned
        if not mine:
            check_output(self.path, overwrite=self.overwrite)
            self.lock.acquire(self.path)
            settle(self.path)
            for stale in self.path.parent.glob(f".{glob.escape(self.path.name)}.tmp-*"):
                _remove(stale)  # no writer is alive: we hold the lock
        return self.tmp

    def _set(self) -> OutputSet | None:
        """The run's output set, unless this output lies inside another one's temporary folder
        (which is moved into place as a whole: its contents need no set of their own)."""
        if any(temporary_of(p) is not None for p in self.path.parents):
            return None
        return _SET.get()

    def __exit__(self, exc_type, exc, tb) -> None:
        tx = self._set()
        try:
            if exc_type is not None:
                # tasks already running when another failed may still write a chunk or two (a threaded
                # scheduler does not stop them), re-creating folders: remove until it stays removed
                for _ in range(50):
                    _remove(self.tmp)
                    time.sleep(0.02)
                    if not self.tmp.exists():
                        break
                return
            if tx is not None:
                tx.swap(self.path, self.tmp)
                return
            backup = None
            if self.path.exists() or self.path.is_symlink():
                backup = self.path.with_name(f".{self.path.name}.old-{uuid.uuid4().hex[:8]}")
                self.path.rename(backup)
            self.tmp.rename(self.path)
            if backup is not None:
                _remove(backup)
        finally:
            if self.lock.fd is not None:
                if tx is not None and exc_type is None:
                    tx.locks.append(self.lock)  # held until the set commits
                else:
                    self.lock.release()


def output_folder(location: str | os.PathLike) -> Location:
    """A folder of outputs, ready for its files: made if missing (on object storage a prefix,
    which needs no making)."""
    folder = as_location(location)
    if isinstance(folder, Path):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_atomic(
    path: str | os.PathLike, write: Callable[[Path], Any], *, overwrite: bool = True
) -> Location:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then move it into place."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        write(tmp)
    return as_location(path)


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Location:
    """Write a text file (UTF-8) atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()
