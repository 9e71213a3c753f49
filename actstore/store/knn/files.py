"""Index files with checksums: what the FAISS indices persist beside a local database.

An index is saved as a few files sharing a stem (``<stem>.faiss`` plus an id array) and a
digest file ``<stem>.sha256`` (JSON: the SHA-256 of each of them), written last. Every file
is written under a temporary name (``<name>.tmp``) and renamed into place, so a reader never
sees half a file. A load reads each file whole, checks it against the digest and hands the
verified bytes to the deserialiser, so a flipped bit or a permuted id array is caught (and
the caller rebuilds the index) instead of answering wrongly.

Writes are best effort: an index is a cache of the table. On OSError (a full disk, a
read-only folder) :func:`save` logs a warning, removes its temporary files and returns
False; the caller keeps the index in memory and answers anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

__all__ = ["DIGEST_SUFFIX", "ChecksumMismatch", "digest", "load", "save", "verify", "write_bytes"]

log = logging.getLogger(__name__)

DIGEST_SUFFIX = ".sha256"
_CHUNK = 1 << 24  # bytes written per call


class ChecksumMismatch(Exception):
    """A persisted index file does not match its recorded digest (or has none)."""


def digest(data: bytes | memoryview) -> str:
    """SHA-256 of ``data``, hex."""
    return hashlib.sha256(data).hexdigest()


def write_bytes(fh: BinaryIO, data: memoryview) -> None:
    """Write ``data`` to the open binary file ``fh`` in chunks (tests fail it to simulate a full disk)."""
    for s in range(0, len(data), _CHUNK):
        fh.write(data[s : s + _CHUNK])


def _put(path: Path, data: bytes | memoryview) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write_bytes(fh, memoryview(data).cast("B"))
    os.replace(tmp, path)
    return path


def save(stem: Path, parts: Mapping[str, bytes | memoryview]) -> bool:
    """Write ``<stem><suffix>`` for each (suffix, bytes) of ``parts``, then the digest file.

    Returns True when everything was written; on OSError logs a warning, removes what it
    wrote (temporary files and parts whose digest file is missing) and returns False.
    """
    written: list[Path] = []
    digests = {suffix: digest(memoryview(data).cast("B")) for suffix, data in parts.items()}
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        for suffix, data in parts.items():
            written.append(_put(Path(f"{stem}{suffix}"), data))
        written.append(_put(Path(f"{stem}{DIGEST_SUFFIX}"), json.dumps(digests, sort_keys=True).encode()))
        return True
    except OSError as exc:
        log.warning("could not persist index %s (%s); answering from memory, it is rebuilt when needed", stem, exc)
        for path in [*written, *(Path(f"{stem}{s}") for s in (*parts, DIGEST_SUFFIX))]:
            for p in (path, path.with_name(path.name + ".tmp")):
                try:
                    p.unlink(missing_ok=True)
                except OSError:
                    pass
        return False


def load(stem: Path, suffixes: tuple[str, ...]) -> dict[str, bytes] | None:
    """The verified bytes of ``<stem><suffix>`` for each suffix; None when a file is missing.

    Raises ChecksumMismatch when the digest file is missing or unreadable or a file's SHA-256
    differs from the recorded one.
    """
    paths = {s: Path(f"{stem}{s}") for s in suffixes}
    if not all(p.exists() for p in paths.values()):
        return None
    try:
        recorded = json.loads(Path(f"{stem}{DIGEST_SUFFIX}").read_text())
    except (OSError, ValueError) as exc:
        raise ChecksumMismatch(f"index {stem} has no readable digest file ({exc})") from None
    out: dict[str, bytes] = {}
    for suffix, path in paths.items():
        data = path.read_bytes()
        if recorded.get(suffix) != digest(data):
            raise ChecksumMismatch(f"{path} does not match its recorded SHA-256")
        out[suffix] = data
    return out


def verify(digest_file: Path) -> str | None:
    """Check every file a digest file lists; None when all match, else what is wrong."""
    try:
        recorded = json.loads(digest_file.read_text())
    except (OSError, ValueError) as exc:
        return f"{digest_file.name}: unreadable ({exc})"
    stem = str(digest_file)[: -len(DIGEST_SUFFIX)]
    for suffix, want in sorted(recorded.items()):
        path = Path(stem + suffix)
        try:
            got = digest(path.read_bytes())
        except OSError as exc:
            return f"{path.name}: unreadable ({exc.strerror or exc})"
        if got != want:
            return f"{path.name}: SHA-256 {got[:12]}... differs from the recorded {want[:12]}..."
    return None
