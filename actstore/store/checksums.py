"""Checksums of activation rows: the ``digest`` column (xxh3-64 of each vector's stored bytes,
:func:`~actstore.store.vectors.row_digests`), how rows are checked against it, and the error
for rows that fail (see :mod:`actstore.store.activations`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from actstore.errors import DataCorrupted

from .checks import preview
from .vectors import arrow_digests

__all__ = ["DIGEST", "check_digests", "corrupted"]

# Column of an activation table holding each vector's checksum.
DIGEST = "digest"


def check_digests(name: str, t: pa.Table, d_model: int) -> tuple[np.ndarray, int]:
    """Prompt ids (sorted) of the rows of ``t`` (columns prompt_id, vector[, digest], read
    from activation table ``name``) whose vector does not match its stored digest, and the
    number of rows without a digest (all of them when ``t`` has no digest column)."""
    if DIGEST not in t.column_names:
        return np.empty(0, np.int64), t.num_rows
    # 0 is never a digest (row_digests maps it to 1): it marks a row without one (the legacy
    # Lance format stores a null uint64 as 0).
    want = t[DIGEST].fill_null(0).to_numpy().astype(np.uint64)
    present = want != 0
    bad = (want != arrow_digests(t["vector"], d_model)) & present
    return np.sort(t["prompt_id"].to_numpy()[bad]), int((~present).sum())


def corrupted(name: str, ids: np.ndarray) -> DataCorrupted:
    """The refusal of rows that fail their checksum."""
    return DataCorrupted(
        f"activation table {name}: the stored vectors of prompt id(s) {preview(ids)} do not match their "
        "checksums (a damaged data file); they are not served. Run `actstore verify`, then drop the "
        "model and store its activations again"
    )
