"""One LanceDB connection and the table operations every repository of the store uses.

:class:`Tables` opens, creates, scans, appends to, upserts into, versions and compacts the
tables of one database (a local folder or an object-store URI), caches table handles and
holds the process-wide write lock. The repositories (prompts, models, activations, SAEs,
next tokens, results) each own their tables' schemas and go through it; none touches
LanceDB otherwise.

Consistency model: every write is one LanceDB commit (a new table version), so readers see
a table before or after a write, never half of it. Any number of processes may write one
store at once: Lance commits are atomic (put-if-not-exists of the next manifest: a
no-replace rename locally, conditional PUT on S3/GCS/Azure) and a commit that loses a race
to an append is rebased and retried by Lance; what needs more than appends (prompt ids)
is made safe by its repository (see :mod:`actstore.store.prompts`). ``write_lock``, a
process-level lock, serialises the writers inside one process. The connection uses
``read_consistency_interval=0``: every read sees the latest commit of any process.

Hot reads (a nearestNeighbors look-up) need not pay a version check per table per request
(~0.25 ms each through LanceDB's event loop): :meth:`Tables.recent` memoises what a reader
derives from a table (its version, token, row count) for ``version_check_s`` seconds
(``ACTSTORE_VERSION_CHECK_S``, default 1 s; 0 checks every time). A write through any
:class:`Tables` of the same database in this process (every write method here, and every
release of ``write_lock``) drops those memos at once; writes of other processes are seen
within ``version_check_s``. Writers and everything that keys cached answers keep exact
checks.

Measured choices kept here:

* activation tables use the legacy (v1) Lance file format (:data:`ACTS_STORAGE_VERSION`);
* a table is compacted once it has more than :data:`MAX_FRAGMENTS` fragments (many small
  ingest writes), keeping old versions :data:`KEEP_VERSIONS_FOR` for readers still on them;
* a read of up to :data:`PUSHDOWN_IDS` keys pushes ``key IN (...)`` down to Lance, larger
  ones read the whole table (:meth:`Tables.scan_for`).
"""

from __future__ import annotations

import errno
import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import lancedb
import numpy as np
import pyarrow as pa

from actstore.errors import ActstoreError, InvalidInput, NotFound, StorageUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
#: a LanceDB table handle (lancedb ships no type stubs for it)
LanceTable: TypeAlias = Any

__all__ = [
    "ACTS_PREFIX",
    "ACTS_STORAGE_VERSION",
    "KEEP_VERSIONS_FOR",
    "MAX_FRAGMENTS",
    "PUSHDOWN_IDS",
    "Tables",
    "acts_table",
    "check_model_key",
    "is_local",
    "is_vanished",
    "parse_acts_table",
    "sql_str",
    "storage_error",
    "storage_problem",
]

# Compact a table once it has more fragments than this (many small ingest writes).
MAX_FRAGMENTS = 16
# Old table versions are removed by compaction only once they are this old, so that a
# reader still scanning an older version keeps its files.
KEEP_VERSIONS_FOR = timedelta(minutes=10)
# Lance file format of activation tables. Measured with bench/store_io.py-sized data
# (20,000 x 2,048 float16): a whole-table read takes ~14 ms with the legacy (v1) format
# against 60-100 ms with the 2.x formats, whose page decoding dominates such wide
# fixed_size_list columns; on-disk size is the same.
ACTS_STORAGE_VERSION = "legacy"
# Up to this many ids, a filtered read pushes `prompt_id IN (...)` down to Lance.
PUSHDOWN_IDS = 512

ACTS_PREFIX = "acts__"
_KEY_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")


def check_model_key(key: str) -> str:
    """Return ``key`` if it is a valid model key (a slug), else raise InvalidInput (a ValueError)."""
    if not isinstance(key, str) or not _KEY_RE.match(key) or "__" in key:
        raise InvalidInput(
            f"invalid model key {key!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit, without '__'"
        )
    return key


def acts_table(model_key: str, layer: int) -> str:
    """Name of the activation table of one model and layer: ``acts__{key}__L{layer:03d}``."""
    return f"{ACTS_PREFIX}{model_key}__L{layer:03d}"


def parse_acts_table(name: str) -> tuple[str, int] | None:
    """Inverse of :func:`acts_table`; ``None`` for names that are not activation tables."""
    if not name.startswith(ACTS_PREFIX):
        return None
    key, sep, layer = name[len(ACTS_PREFIX) :].rpartition("__L")
    if not sep or not layer.isdigit():
        return None
    return key, int(layer)


def sql_str(value: str) -> str:
    """``value`` as a quoted SQL string literal for a Lance filter."""
    return "'" + value.replace("'", "''") + "'"


def is_vanished(exc: BaseException) -> bool:
    """Whether ``exc`` is Lance's answer to reading a table whose files are gone (dropped by
    another process after this one opened it: ``lance error: Not found: .../_versions``)."""
    text = str(exc)
    return (
        isinstance(exc, (RuntimeError, ValueError, OSError))
        and "Not found:" in text
        and (".lance" in text or "_versions" in text)
    )


_UNREACHABLE = (
    "Failed to connect",
    "kind: Connect",
    "error sending request",
    "dispatch failure",
    "Connection refused",
    "connection refused",
    "dns error",
    "operation timed out",
)


def storage_problem(exc: BaseException) -> str | None:
    """What failed under the store, in words, when ``exc`` is a storage failure rather than a
    bug: ``"full"`` (ENOSPC, Lance's "No space left"), ``"missing: DETAIL"`` (the object store
    answers that the bucket does not exist), ``"refused: DETAIL"`` (it answers with another S3
    error: access denied, bad keys, ...), ``"unreachable: DETAIL"`` (it does not answer); None
    otherwise."""
    text = str(exc)
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left" in text:
        return "full"
    if not isinstance(exc, (OSError, RuntimeError, ValueError)):
        return None
    answer = re.search(r"<Code>(\w+)</Code>\s*<Message>([^<]{0,200})</Message>", text.replace('\\"', '"'))
    if answer:  # the object store answered with an error (S3 XML)
        code, message = answer.groups()
        return f"{'missing' if code == 'NoSuchBucket' else 'refused'}: {code} ({message})"
    if any(m in text for m in _UNREACHABLE):
        endpoint = re.search(r"uri: Some\((https?://[^/)\s]+)", text)
        kind = re.search(r"HttpError \{ kind: (\w+)", text)
        detail = ", ".join(
            x for x in (endpoint and f"endpoint {endpoint.group(1)}", kind and f"{kind.group(1).lower()} error") if x
        )
        return f"unreachable: {detail or text.splitlines()[0][:200]}"
    return None


def storage_error(exc: BaseException, uri: str) -> ActstoreError | None:
    """The actstore error for a storage failure ``exc`` of the store at ``uri`` (see
    :func:`storage_problem`), or None when ``exc`` is not one."""
    problem = storage_problem(exc)
    return None if problem is None else _storage_error(uri, problem)


def _storage_error(uri: str, problem: str) -> ActstoreError:
    kind, _, detail = problem.partition(": ")
    if kind == "missing":
        return NotFound(
            f"no actstore store at {uri}: the object store answers {detail}; check the URI and the storage options"
        )
    if kind == "refused":
        return StorageUnavailable(
            f"the object store of {uri} refused the request: {detail}; check the credentials and the storage options"
        )
    if problem == "full":
        return StorageUnavailable(
            f"the disk holding the store {uri} is full (no space left on device): free "
            "space or move the store, then run the same write again (the failed commit "
            "left nothing behind)"
        )
    return StorageUnavailable(
        f"cannot reach the store {uri} ({problem.removeprefix('unreachable: ')}): check the "
        "URI, that the object store is running, and the storage options"
    )


def _storage_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Tables methods: a full disk or an unreachable object store becomes one clear
    StorageUnavailable naming the store, instead of a raw Lance error."""

    @functools.wraps(method)
    def wrapper(self: Tables, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except ActstoreError:
            raise
        except Exception as exc:
            problem = storage_problem(exc)
            if problem is None:
                raise
            raise _storage_error(self.uri, problem) from exc

    return wrapper


def is_local(uri: str) -> bool:
    """Whether ``uri`` names a local folder (a path or ``file://``) rather than object storage
    (``s3://``, ``gs://``, ``az://``, ...)."""
    return "://" not in uri or uri.startswith("file://")


# Writes through this process, per database URI: a memo of :meth:`Tables.recent` taken at an
# older count is stale, whichever Tables object of the process wrote.
_WRITES: dict[str, int] = {}
_WRITES_LOCK = threading.Lock()


class _WriteLock:
    """A re-entrant lock whose every release counts as a write to the database (writers hold it)."""

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._lock = threading.RLock()
        self._on_release = on_release

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        try:
            self._on_release()
        finally:
            self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Tables:
    """The tables of one LanceDB database. Thread-safe; writers take :attr:`write_lock`.

    ``Tables(uri)`` opens the database at ``uri`` (local path or object-store URI). With
    ``create=False`` a local folder that does not exist raises NotFound and nothing is
    created; with ``create=True`` (the default) it is created. ``storage_options``: Lance's
    object-store options (``aws_endpoint``, ``allow_http``, ``aws_region``, keys, ...; see
    https://lancedb.github.io/lance/guide/object_store/), all strings; without them Lance
    reads the usual ``AWS_*`` / ``GOOGLE_*`` / ``AZURE_*`` environment variables.

    On S3, Lance commits a new table version by writing its manifest with a conditional PUT
    (``If-None-Match: *``): of two writers racing for one version exactly one PUT succeeds
    and the other gets 412 and retries on the new version (appends are rebased). Stores
    without conditional PUT can use ``s3+ddb://bucket/path?ddbTableName=TABLE`` (a DynamoDB
    commit lock) instead; see docs/scale.md.
    """

    def __init__(self, uri: str | Path, *, create: bool = True, storage_options: Mapping[str, str] | None = None):
        uri = str(uri)
        #: folder of a local database; None for object storage
        self.local_path: Path | None = None
        if is_local(uri):
            path = Path(uri.removeprefix("file://")).expanduser()
            if path.exists() and not path.is_dir():
                raise InvalidInput(f"{str(path)!r} is a file, not an actstore store folder")
            if not path.exists():
                if not create:
                    raise NotFound(
                        f"no actstore store at {str(path)!r}; create one with `actstore ingest`, "
                        "`actstore import` or `actstore demo`"
                    )
                path.mkdir(parents=True, exist_ok=True)
            self.local_path = path
            uri = str(path)
        #: the database URI (a normalised local path for local databases)
        self.uri: str = uri
        #: object-store options every connection to this database needs (a copy; strings)
        self.storage_options: dict[str, str] = {str(k): str(v) for k, v in (storage_options or {}).items()}
        # read_consistency_interval=0: every read sees the latest commit of any process.
        try:
            self._db = lancedb.connect(
                self.uri, read_consistency_interval=timedelta(0), storage_options=self.storage_options or None
            )
        except Exception as exc:  # an object store that does not answer: one clear error
            problem = storage_problem(exc)
            if problem is None and self.local_path is None:
                problem = f"unreachable: {str(exc).splitlines()[0][:200]}"
            if problem is None:
                raise
            raise _storage_error(self.uri, problem) from None
        #: serialises the writers of this process (re-entrant); releasing it drops the memos of :meth:`recent`
        self.write_lock = _WriteLock(self.wrote)
        self._handles: dict[str, Any] = {}
        self._handles_lock = threading.Lock()
        #: seconds a memo of :meth:`recent` is trusted without a version check (``Settings.version_check_s``)
        self.version_check_s = 0.0
        self._memo: dict[tuple[str, str], tuple[float, int, Any]] = {}
        # Object storage has no folders: a store there exists once it holds a table.
        if self.local_path is None and not create and not self.names():
            raise NotFound(
                f"no actstore store at {self.uri!r} (no tables there); create one with "
                "`actstore ingest`, `actstore import` or `actstore demo`, or check the store URI and the "
                "storage options"
            )

    def wrote(self) -> None:
        """Record a write to this database by this process: every memo of :meth:`recent`
        (of every Tables object of the database) is stale from now on."""
        with _WRITES_LOCK:
            _WRITES[self.uri] = _WRITES.get(self.uri, 0) + 1

    def recent(self, name: str, what: str, compute: Callable[[Any], T], *, fresh: bool = False) -> T:
        """``compute(handle)`` of table ``name`` (handle None when the table does not exist),
        memoised under ``what`` for ``version_check_s`` seconds and until a write through this
        process; ``fresh=True`` computes it anew. For hot read paths that may be up to
        ``version_check_s`` behind other processes' writes (see the module docstring)."""
        key = (name, what)
        with _WRITES_LOCK:
            writes = _WRITES.get(self.uri, 0)
        now = time.monotonic()
        hit = self._memo.get(key)
        if not fresh and hit is not None and hit[1] == writes and now - hit[0] < self.version_check_s:
            memo: T = hit[2]
            return memo
        value = compute(self.open(name))
        self._memo[key] = (now, writes, value)
        return value

    def __repr__(self) -> str:
        return f"Tables({self.uri!r})"

    @_storage_errors
    def names(self) -> list[str]:
        """Names of every table of the database."""
        names: list[str] = []
        token = None
        while True:
            resp = self._db.list_tables(page_token=token)
            names.extend(resp.tables)
            token = resp.page_token
            if not token:
                return names

    def open(self, name: str) -> LanceTable:
        """The LanceDB table ``name``, or None when it does not exist. Handles are cached."""
        return self._open(name, None, None)

    @_storage_errors
    def create(self, name: str, schema: pa.Schema, storage_version: str | None = None) -> LanceTable:
        """Table ``name``, created empty with ``schema`` (and Lance file format
        ``storage_version``, e.g. :data:`ACTS_STORAGE_VERSION`) when missing."""
        return self._open(name, schema, storage_version)

    @_storage_errors
    def _open(self, name: str, schema: pa.Schema | None, storage_version: str | None) -> LanceTable:
        with self._handles_lock:
            tbl = self._handles.get(name)
            if tbl is not None:
                return tbl
            try:
                tbl = self._db.open_table(name)
            except (ValueError, FileNotFoundError):
                if schema is None:
                    return None
                options = {"new_table_data_storage_version": storage_version} if storage_version else None
                tbl = self._db.create_table(name, schema=schema, exist_ok=True, storage_options=options)
                self.wrote()
            self._handles[name] = tbl
            return tbl

    def forget(self, name: str) -> None:
        """Forget the cached handle of table ``name`` (after finding its files gone): the next
        :meth:`open` looks it up afresh."""
        with self._handles_lock:
            self._handles.pop(name, None)

    def dataset_uri(self, name: str) -> str:
        """URI of the Lance dataset of table ``name`` (``<db>/<name>.lance``), for the Lance
        fragment API (distributed writes; see :meth:`commit_append`)."""
        return f"{self.uri.rstrip('/')}/{name}.lance"

    @_storage_errors
    def commit_append(self, name: str, fragments: list[Any]) -> LanceTable:
        """Append fragments written elsewhere (``lance.fragment.write_fragments`` by other
        processes, into :meth:`dataset_uri`) to existing table ``name`` in one commit: readers
        see all their rows or none. Returns the table. A commit that races another writer's
        append is rebased and retried by Lance."""
        import lance

        tbl = self.open(name)
        if tbl is None:
            raise NotFound(f"no table {name!r} to append fragments to")
        if fragments:
            ds = tbl.to_lance()
            lance.LanceDataset.commit(
                self.dataset_uri(name),
                lance.LanceOperation.Append(list(fragments)),
                read_version=ds.version,
                storage_options=self.storage_options or None,
            )
            self.wrote()
            self._maybe_compact(tbl)
        return tbl

    def checked_version(self, name: str, recent: bool = False) -> int | None:
        """Version of table ``name`` (None when it does not exist); ``recent=True`` takes it
        from the memo of :meth:`recent` (at most ``version_check_s`` old), else checks it
        (and refreshes that memo)."""
        return self.recent(name, "version", lambda t: None if t is None else int(t.version), fresh=not recent)

    def version(self, name: str) -> int | None:
        """Version of table ``name`` (it changes with every commit), None when it does not exist."""
        tbl = self.open(name)
        return None if tbl is None else int(tbl.version)

    @staticmethod
    def scan(
        tbl: LanceTable, columns: list[str] | None = None, where: str | None = None, *, row_ids: bool = False
    ) -> pa.Table:
        """Rows of ``tbl`` (the latest version), optionally only some columns and rows;
        ``row_ids=True`` adds Lance's ``_rowid`` column (``where`` may filter on it)."""
        if columns is None and where is None and not row_ids:
            return tbl.to_arrow()
        q = tbl.search()
        if where is not None:
            q = q.where(where)
        if columns is not None:
            q = q.select(columns)
        if row_ids:
            q = q.with_row_id(True)
        return q.limit(None).to_arrow()

    @_storage_errors
    def create_seeded(
        self, name: str, data: pa.Table, schema: pa.Schema, *, stable_row_ids: bool = False
    ) -> LanceTable:
        """Table ``name``; when missing, created holding ``data`` in its first commit (so no
        reader ever sees it without those rows), with Lance *stable row ids* when asked
        (``_rowid`` assigned at commit in commit order and kept through compaction; this
        cannot be enabled on an existing table). Several processes may race to create it:
        one creation wins and the others open the winner's table."""
        tbl = self.open(name)
        if tbl is not None:
            return tbl
        options = {"new_table_enable_stable_row_ids": "true"} if stable_row_ids else None
        with self._handles_lock:
            try:
                tbl = self._db.create_table(name, data=data, schema=schema, storage_options=options)
            except Exception as exc:  # another process created it first (already exists / commit conflict)
                try:
                    tbl = self._db.open_table(name)
                except (ValueError, FileNotFoundError):
                    raise exc from None
            self._handles[name] = tbl
            self.wrote()
            return tbl

    def scan_for(
        self, tbl: LanceTable, keys: np.ndarray | None, columns: list[str] | None = None, key: str = "prompt_id"
    ) -> pa.Table:
        """Rows of ``tbl`` covering the integer ``keys``: exactly the rows whose ``key`` is one
        of them (``key IN (...)`` pushed down to Lance, only ``columns``) for up to
        :data:`PUSHDOWN_IDS` keys; above that, or with ``keys=None``, the whole table with
        every column (one sequential ``to_arrow`` read, faster than a long IN list or a
        query plan), which the caller filters."""
        if keys is not None and len(keys) <= PUSHDOWN_IDS:
            where = f"{key} IN ({','.join(map(str, keys))})" if len(keys) else "false"
            return self.scan(tbl, columns, where)
        return tbl.to_arrow()

    @_storage_errors
    def add(self, name: str, batch: pa.Table, schema: pa.Schema, storage_version: str | None = None) -> LanceTable:
        """Append ``batch`` to table ``name`` (created with ``schema`` when missing) in one
        commit, then apply the compaction rule. Returns the table."""
        tbl = self.create(name, schema, storage_version)
        tbl.add(batch)
        self._maybe_compact(tbl)
        self.wrote()
        return tbl

    @_storage_errors
    def upsert(
        self,
        name: str,
        batch: pa.Table,
        schema: pa.Schema,
        key: str = "prompt_id",
        *,
        storage_version: str | None = None,
    ) -> LanceTable:
        """Write ``batch`` to table ``name`` in one commit: rows whose ``key`` is stored already
        are replaced, the others appended. When none is stored yet it is a plain append
        (much cheaper than merge_insert's join). Then the compaction rule. Returns the table."""
        tbl = self.create(name, schema, storage_version)
        present = self.scan(tbl, [key])[key].to_numpy()
        if len(present) and np.isin(batch[key].to_numpy(), present).any():
            tbl.merge_insert(key).when_matched_update_all().when_not_matched_insert_all().execute(batch)
        else:
            tbl.add(batch)
        self._maybe_compact(tbl)
        self.wrote()
        return tbl

    @_storage_errors
    def overwrite(self, name: str, data: pa.Table) -> LanceTable:
        """Replace every row of existing table ``name`` with ``data`` (which may add columns:
        its schema becomes the table's) in one commit; readers see the old rows or the new.
        Returns the table."""
        tbl = self.open(name)
        if tbl is None:
            raise NotFound(f"no table {name!r} to overwrite")
        tbl.add(data, mode="overwrite")
        self.wrote()
        return tbl

    @_storage_errors
    def merge(self, name: str, batch: pa.Table, schema: pa.Schema, key: str) -> LanceTable:
        """Upsert ``batch`` on ``key`` with merge_insert, without first reading the stored keys
        (for small batches into tables of arbitrary size). Then the compaction rule."""
        tbl = self.create(name, schema)
        tbl.merge_insert(key).when_matched_update_all().when_not_matched_insert_all().execute(batch)
        self._maybe_compact(tbl)
        self.wrote()
        return tbl

    @_storage_errors
    def optimize(self, name: str, keep: timedelta = KEEP_VERSIONS_FOR) -> None:
        """Compact table ``name`` into few fragments (old versions kept ``keep``, by default
        :data:`KEEP_VERSIONS_FOR`)."""
        tbl = self.open(name)
        if tbl is not None:
            tbl.optimize(cleanup_older_than=keep)
            self.wrote()

    @_storage_errors
    def delete(self, name: str, where: str) -> None:
        """Delete the rows of table ``name`` matching the Lance filter ``where`` (one commit;
        nothing when the table does not exist)."""
        tbl = self.open(name)
        if tbl is not None:
            tbl.delete(where)
            self.wrote()

    @_storage_errors
    def drop(self, name: str) -> bool:
        """Drop table ``name`` and forget its handle; False when it did not exist."""
        with self._handles_lock:
            self._handles.pop(name, None)
            try:
                self._db.drop_table(name)
            except (ValueError, FileNotFoundError):
                return False
            finally:
                self.wrote()
            return True

    @staticmethod
    def _maybe_compact(tbl: LanceTable) -> None:
        """Compact ``tbl`` when it has too many fragments. Best effort: the write before it is
        committed already, and a compaction that loses a race with another process's
        compaction of the same fragments (a Lance commit conflict) is left to the next write."""
        if tbl.stats()["fragment_stats"]["num_fragments"] > MAX_FRAGMENTS:
            try:
                tbl.optimize(cleanup_older_than=KEEP_VERSIONS_FOR)
            except (OSError, RuntimeError, ValueError) as exc:
                log.warning("compaction of table %r skipped: %s", getattr(tbl, "name", tbl), exc)
