"""Products on object storage: Zarr stores as Icechunk repositories, files as objects, and the
commit of one stage's outputs there as one set.

Object stores have neither rename nor locks, so the local output sets (:mod:`._outputs`) cannot
work there. Here:

- A Zarr product at a URL (``s3://bucket/run/cube.zarr``) is an Icechunk repository at that
  prefix. A run writes on a branch of its own (``kx-<set id>``), workers included (each writes
  its chunks into a fork of the session, merged on the client), and the branch ``main``, which
  every reader reads, is moved onto the run's last snapshot at the set's commit point with a
  compare-and-swap (``reset_branch(..., from_snapshot_id=base)``): a run that another writer
  overtook fails there, naming the product. Earlier snapshots stay: ``URL@TAG`` or
  ``URL@SNAPSHOT_ID`` reopens an earlier version.
- A file product (a checkpoint, a table, a COG) is written to a local temporary and uploaded, at
  the commit point, to a staging key beside its target (``.NAME.tmp-<set id>``).
- The commit point of the set is one PUT: a journal ``.kerinci-set-<id>.json`` beside the first
  output that lists every staged file and every store's new snapshot. Then the set is rolled
  forward (each staged object copied onto its target, each ``main`` moved) and the journal
  removed. A reader or writer of any output first rolls forward a committed journal it finds
  (:func:`settle`), so after a kill at any point a reader sees the whole old set (no journal
  yet) or the whole new set (journal found and finished). Outputs in other folders get a
  pointer to the journal, written before it.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._locations import filesystem, is_url, location_error, scheme, split_ref
from .errors import InputFileNotFoundError, InvalidInputError, OutputExistsError

__all__ = [
    "RemoteSet",
    "StoreTarget",
    "check_output",
    "committed_at",
    "is_repository",
    "open_repository",
    "read_store",
    "settle",
    "tag_stores",
    "written_here",
]

_JOURNAL = re.compile(r"^\.kerinci-set-(?P<id>[0-9a-f]{8,32})\.json$")


def parent(url: str) -> str:
    """The "folder" of an object URL (``s3://b/run/cube.zarr`` -> ``s3://b/run``)."""
    return posixpath.dirname(url.rstrip("/"))


def name(url: str) -> str:
    return posixpath.basename(url.rstrip("/"))


def _storage(url: str) -> Any:
    """The Icechunk storage of a repository at ``url``, with credentials and endpoint from the
    standard environment (``AWS_*``, ``AWS_ENDPOINT_URL`` for S3-compatible servers; Google's and
    Azure's own variables)."""
    import icechunk

    s = scheme(url)
    bucket, _, prefix = url.split("://", 1)[1].partition("/")
    prefix = prefix.rstrip("/")
    if s == "s3":
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return icechunk.s3_storage(
            bucket=bucket,
            prefix=prefix,
            region=region,
            endpoint_url=endpoint,
            allow_http=bool(endpoint and endpoint.startswith("http:")),
            force_path_style=bool(endpoint),
            from_env=True,
        )
    if s in ("gs", "gcs"):
        return icechunk.gcs_storage(bucket=bucket, prefix=prefix, from_env=True)
    if s in ("az", "abfs"):
        account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or os.environ.get("AZURE_STORAGE_ACCOUNT")
        if not account:
            raise InvalidInputError(
                f"{url}: an Azure store needs the account. Fix: set AZURE_STORAGE_ACCOUNT_NAME."
            )
        return icechunk.azure_storage(account=account, container=bucket, prefix=prefix, from_env=True)
    raise InvalidInputError(
        f"{url}: Zarr products are written to s3://, gs:// or az:// URLs (or local paths), found the "
        f"scheme {s!r}. Fix: choose one of those."
    )


def is_repository(url: str) -> bool:
    """Whether an Icechunk repository exists at ``url``."""
    import icechunk

    try:
        return bool(icechunk.Repository.exists(_storage(url)))
    except Exception as exc:  # unreachable endpoint, refused access: say so once, naming the URL
        raise location_error(url, exc, "store") from exc


def open_repository(url: str, *, create: bool = False) -> Any:
    import icechunk

    try:
        if create:
            return icechunk.Repository.open_or_create(_storage(url))
        return icechunk.Repository.open(_storage(url))
    except InvalidInputError:
        raise
    except Exception as exc:
        raise location_error(url, exc, "store") from exc


def _title(url: str) -> str | None:
    """The ``title`` of the store in the repository at ``url`` (``None``: no store committed yet,
    a repository a run made and has not committed to)."""
    import zarr

    try:
        group = zarr.open_group(open_repository(url).readonly_session(branch="main").store, mode="r")
    except (FileNotFoundError, KeyError, ValueError):
        return None
    return str(group.attrs.get("title", ""))


def written_here(url: str) -> bool:
    """Whether the repository at ``url`` holds a store this toolkit wrote (its root's ``title``)."""
    return (_title(url) or "").startswith("kerinci_xr")


def _snapshot_of(repo: Any, ref: str | None) -> dict[str, str]:
    """``readonly_session`` arguments for a ref: a tag, a branch or a snapshot id."""
    if ref is None:
        return {"branch": "main"}
    if ref in repo.list_tags():
        return {"tag": ref}
    if ref in repo.list_branches():
        return {"branch": ref}
    return {"snapshot_id": ref}


def read_store(url: str, *, snapshot: str | None = None) -> Any:
    """The read-only Zarr store of the product at ``url`` (``URL@REF`` for an earlier version;
    ``snapshot``: a version staged by this run, not yet committed)."""
    base, ref = split_ref(url)
    repo = open_repository(base)
    try:
        where = {"snapshot_id": snapshot} if snapshot else _snapshot_of(repo, ref)
        return repo.readonly_session(**where).store
    except Exception as exc:
        raise InputFileNotFoundError(
            f"{url}: no version {ref!r} in this store (tags: {sorted(repo.list_tags())}). Fix: pass a tag or "
            "snapshot id the store has, or the URL alone for the latest."
        ) from exc


def committed_at(url: str) -> float:
    """When the latest version of the store at ``url`` was committed (seconds since the epoch)."""
    repo = open_repository(url)
    return repo.lookup_snapshot(repo.lookup_branch("main")).written_at.timestamp()


def tag_stores(urls: list[str], tag: str) -> None:
    """Tag the latest version of each store (a pipeline run's name, to reopen it as ``URL@TAG``)."""
    for url in urls:
        repo = open_repository(url)
        if tag not in repo.list_tags():
            repo.create_tag(tag, repo.lookup_branch("main"))


@dataclass
class StoreTarget:
    """A Zarr product being written to an Icechunk repository on a branch of the run's own."""

    url: str
    repo: Any
    base: str  # the tip of main when the run began: the commit point checks it is still there
    branch: str
    snapshot: str | None = None  # the run's last snapshot (on its branch)

    def session(self) -> Any:
        return self.repo.writable_session(self.branch)

    def commit(self, session: Any, message: str) -> str:
        self.snapshot = session.commit(message)
        return self.snapshot

    def write_dataset(self, ds: Any, *, encoding: dict | None = None) -> None:
        """Write a Dataset: its metadata and in-memory variables in one commit, then its dask
        variables chunk by chunk from the workers (each task writes into a fork of the session;
        the forks are merged here), in a second commit on the run's branch."""
        import xarray as xr
        import zarr
        from icechunk.dask import store_dask

        session = self.session()
        ds.to_zarr(
            session.store, mode="w", zarr_format=3, consolidated=False, compute=False, encoding=encoding
        )
        self.commit(session, "metadata")
        lazy = [n for n, v in ds.variables.items() if v.chunks is not None]
        if not lazy:
            return
        session = self.session()
        group = zarr.open_group(session.fork().store, mode="r+")
        sources = [xr.conventions.encode_cf_variable(ds[n].variable, name=n).data for n in lazy]
        merged = store_dask(sources=sources, targets=[group[n] for n in lazy])  # type: ignore[misc]
        session.merge(merged)
        self.commit(session, "chunks")

    def forked(self) -> tuple[Any, Any]:
        """A session on the run's branch and a fork of it, to hand to tasks that write chunks
        themselves: each returns its fork, which :meth:`merge` folds back."""
        session = self.session()
        return session, session.fork()

    def merge(self, session: Any, forks: list[Any], message: str) -> None:
        unique = list({id(f): f for f in forks}.values())  # threads share one fork object
        if unique:
            session.merge(*unique)
        self.commit(session, message)


def check_output(url: str, *, overwrite: bool, store: bool) -> str | None:
    """Refuse an existing output at ``url`` (unless ``overwrite``), or one holding data this
    toolkit did not write (even with ``overwrite``); finish what a killed run committed there
    first. Returns the ETag of the object there (``None``: nothing, or a store)."""
    fs = filesystem(url)
    bucket = url.split("://", 1)[0] + "://" + url.split("://", 1)[1].split("/", 1)[0]
    try:
        found = bool(fs.exists(bucket))
    except Exception as exc:
        raise location_error(url, exc, "output location") from exc
    if not found:
        raise InputFileNotFoundError(
            f"{url}: the bucket {bucket} does not exist (or these credentials cannot see it). Fix: create "
            "it first (aws s3 mb), or check the URL, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and "
            "AWS_ENDPOINT_URL."
        )
    settle(url)
    try:
        exists = bool(fs.exists(url))
    except Exception as exc:
        raise location_error(url, exc, "output location") from exc
    repo = is_repository(url) if store or exists else False
    title = _title(url) if repo else None
    if repo and title is None:  # made by a run that has not committed yet: nothing to lose
        return None
    if exists and not overwrite:
        raise OutputExistsError(
            f"{url}: output exists. Fix: pass overwrite=True (--overwrite) or choose another path."
        )
    if exists and store and not (title or "").startswith("kerinci_xr"):
        raise OutputExistsError(
            f"{url}: expected an output location, found objects this toolkit did not write (they are "
            "never replaced, --overwrite or not). Fix: choose another output URL."
        )
    if exists and not store and (repo or fs.isdir(url)):
        raise OutputExistsError(
            f"{url}: expected a file output, found a folder or store. Fix: choose another output URL."
        )
    return fs.info(url).get("ETag") if exists and not repo else None


def _fs_put(fs: Any, local: Path, url: str) -> None:
    if local.is_dir():
        fs.put(str(local), url, recursive=True)
    else:
        fs.put_file(str(local), url)


def _fs_copy(fs: Any, src: str, dst: str, folder: bool) -> None:
    if folder:
        if fs.exists(dst):
            fs.rm(dst, recursive=True)
        fs.copy(src, dst, recursive=True)
    else:
        fs.copy(src, dst)


@dataclass
class RemoteSet:
    """The object-storage part of one stage run's output set (see the module docstring)."""

    id: str
    stores: dict[str, StoreTarget] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # target URL -> local staged file or folder
    claimed: dict[str, Any] = field(default_factory=dict)  # target URL -> what was there when claimed
    tmpdir: Path | None = None

    # -- before any work --------------------------------------------------------------------
    def claim(self, url: str, *, overwrite: bool, store: bool) -> None:
        """Check an output before any work: settle what a killed run committed there, refuse an
        existing output (unless ``overwrite``) and a location holding data this toolkit did not
        write (even with ``overwrite``); remember what is there, so a writer that finished
        meanwhile is found at the commit point."""
        if url in self.claimed:
            return
        self.claimed[url] = check_output(url, overwrite=overwrite, store=store)

    # -- during the run ------------------------------------------------------------------------
    def begin_store(self, url: str) -> StoreTarget:
        """A branch of the run's own in the repository at ``url`` (created if new)."""
        if url in self.stores:
            return self.stores[url]
        repo = open_repository(url, create=True)
        base = repo.lookup_branch("main")
        branch = f"kx-{self.id}"
        repo.create_branch(branch, base)
        target = StoreTarget(url, repo, base, branch)
        self.stores[url] = target
        return target

    def staging(self, url: str) -> Path:
        """A local temporary for a file output at ``url``."""
        if self.tmpdir is None:
            self.tmpdir = Path(tempfile.mkdtemp(prefix=f"kerinci-set-{self.id}-"))
        local = self.tmpdir / uuid.uuid4().hex[:8] / name(url)
        local.parent.mkdir()
        return local

    def stage_file(self, url: str, local: Path) -> None:
        self.files[url] = local

    def staged(self, url: str) -> Path | StoreTarget | None:
        """What this run has written to ``url`` so far (the run reads its own outputs)."""
        base, _ = split_ref(url)
        return self.files.get(base) or self.stores.get(base)

    # -- the commit point ---------------------------------------------------------------------
    def commit(self) -> None:
        if not self.files and not self.stores:
            self._cleanup()
            return
        self._check_unchanged()
        entries: list[dict[str, Any]] = []
        for url, local in self.files.items():
            stage = posixpath.join(parent(url), f".{name(url)}.tmp-{self.id}")
            try:
                _fs_put(filesystem(url), local, stage)
            except Exception as exc:
                raise location_error(url, exc, "output location") from exc
            entries.append({"staged": stage, "target": url, "folder": local.is_dir()})
        stores = [
            {"url": t.url, "base": t.base, "snapshot": t.snapshot, "branch": t.branch}
            for t in self.stores.values()
            if t.snapshot is not None
        ]
        targets = [e["target"] for e in entries] + [s["url"] for s in stores]
        if not targets:  # stores begun but never written: nothing to commit
            self._cleanup()
            return
        journal = {"state": "committed", "id": self.id, "files": entries, "stores": stores}
        home = posixpath.join(parent(targets[0]), f".kerinci-set-{self.id}.json")
        pointers = sorted({posixpath.join(parent(t), posixpath.basename(home)) for t in targets} - {home})
        for p in pointers:  # before the journal: a reader of any output finds it
            _put_json(p, {"home": home})
        _put_json(home, journal)  # the commit point
        _roll_forward(journal)
        for p in [home, *pointers]:
            _remove(p)
        self._cleanup()

    def _check_unchanged(self) -> None:
        """Refuse to commit over a writer that committed one of our outputs since we claimed it."""
        for url, target in self.stores.items():
            if target.repo.lookup_branch("main") != target.base:
                raise OutputExistsError(
                    f"{url}: another kerinci-xr run committed this store while this one ran; this run's "
                    "outputs are not kept. Fix: run again (with --overwrite) once the other has finished."
                )
        for url, etag in self.claimed.items():
            if url in self.stores or url not in self.files:
                continue
            fs = filesystem(url)
            now = fs.info(url).get("ETag") if fs.exists(url) else None
            if now != etag:
                raise OutputExistsError(
                    f"{url}: another kerinci-xr run wrote this output while this one ran; this run's "
                    "outputs are not kept. Fix: run again (with --overwrite) once the other has finished."
                )

    def next(self, set_id: str) -> RemoteSet:
        """The set that goes on after this one committed (a training run's next epoch): its
        outputs still this run's, as they are now."""
        claimed = dict(self.claimed)
        for url in self.files:
            claimed[url] = filesystem(url).info(url).get("ETag")
        return RemoteSet(set_id, claimed=claimed)

    def rollback(self) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        for target in self.stores.values():  # the run's branches are scratch space only
            try:
                target.repo.delete_branch(target.branch)
            except Exception:  # (already gone, or the store unreachable now): never an error of its own
                pass
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def _put_json(url: str, doc: dict) -> None:
    with filesystem(url).open(url, "w") as f:
        f.write(json.dumps(doc))


def _get_json(url: str) -> dict | None:
    """A journal (or pointer) object, ``None`` if it is gone or not JSON (being written)."""
    try:
        with filesystem(url).open(url, "r") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None


def _remove(url: str) -> None:
    fs = filesystem(url)
    try:
        fs.rm(url, recursive=fs.isdir(url))
    except FileNotFoundError:
        pass


def _roll_forward(journal: dict) -> None:
    """Finish a committed set: copy each staged object onto its target, move each store's
    ``main`` onto the set's snapshot. Idempotent: a second runner (a reader that found the
    journal) finds the work done."""
    for e in journal["files"]:
        fs = filesystem(e["target"])
        try:
            _fs_copy(fs, e["staged"], e["target"], e["folder"])
        except FileNotFoundError:
            continue  # another runner finished this set and removed its staging
    for s in journal["stores"]:
        repo = open_repository(s["url"])
        if repo.lookup_branch("main") != s["snapshot"]:
            repo.reset_branch("main", s["snapshot"], from_snapshot_id=s["base"])
    for e in journal["files"]:
        _remove(e["staged"])


def _journals(folder: str) -> Iterator[tuple[str, dict]]:
    """The set journals and pointers in a folder (one listing)."""
    try:
        names = [posixpath.basename(p) for p in filesystem(folder).ls(folder, detail=False, refresh=True)]
    except (FileNotFoundError, NotADirectoryError):
        return
    for n in filter(_JOURNAL.match, names):
        url = posixpath.join(folder, n)
        doc = _get_json(url)
        if doc is not None:
            yield url, doc


def settle(url: str) -> None:
    """Finish every committed set found beside ``url`` (its journal, or a pointer to it)."""
    if not is_url(url):
        return
    base, _ = split_ref(url)
    for journal_url, doc in _journals(parent(base)):
        home = doc.get("home")
        if home is not None:  # a pointer: the journal lives beside another output of the set
            found = _get_json(home)
            if found is None:
                continue  # not committed (or finished): nothing to do here
            doc = found
        if doc.get("state") != "committed":
            continue
        _roll_forward(doc)
        for p in {home or journal_url, journal_url}:
            _remove(p)
