"""Next tokens per prompt and model: table ``next_tokens__{model_key}``.

Written at ingest (``actstore ingest --next-tokens``): for every prompt, the model's own most
probable next tokens after the last prompt token (greedy, from its LM head), top-k, most
probable first. Rows: ``prompt_id int64``, ``token_ids list<int64>``, ``tokens list<string>``
(each id decoded alone by the model's tokenizer, e.g. " the" for byte-level BPE) and
``pieces list<string>`` (the vocabulary entries, e.g. "Ġthe" / "▁the"). Writes upsert on
prompt_id in one commit, like activation writes (and in the same Lance file format).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from actstore.errors import InvalidInput, NotFound

from .models import Models
from .prompts import Prompts
from .tables import ACTS_STORAGE_VERSION, LanceTable, Tables, check_model_key

__all__ = ["NEXT_TOKENS_PREFIX", "NEXT_TOKENS_SCHEMA", "NextTokens", "next_tokens_table"]

NEXT_TOKENS_PREFIX = "next_tokens__"
NEXT_TOKENS_SCHEMA = pa.schema(
    [
        pa.field("prompt_id", pa.int64(), nullable=False),
        pa.field("token_ids", pa.list_(pa.int64()), nullable=False),
        pa.field("tokens", pa.list_(pa.string()), nullable=False),
        pa.field("pieces", pa.list_(pa.string())),
    ]
)


def next_tokens_table(model_key: str) -> str:
    return NEXT_TOKENS_PREFIX + check_model_key(model_key)


class NextTokens:
    """The stored next tokens of every model."""

    def __init__(self, tables: Tables, prompts: Prompts, models: Models):
        self._tables = tables
        self._prompts = prompts
        self._models = models

    def write(
        self,
        model_key: str,
        prompt_ids: Sequence[int] | np.ndarray,
        token_ids: np.ndarray | Sequence[Sequence[int]],
        tokens: Sequence[Sequence[str]],
        pieces: Sequence[Sequence[str]] | None = None,
    ) -> int:
        """Upsert the next tokens of ``prompt_ids`` (one commit); returns the rows written.

        ``token_ids`` [n, k] ints and ``tokens`` n lists of k decoded strings, most probable first.
        """
        ids = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        tid = [list(map(int, row)) for row in token_ids]
        tok = [list(map(str, row)) for row in tokens]
        pcs = [list(map(str, row)) for row in pieces] if pieces is not None else [None] * len(ids)
        if not (len(tid) == len(tok) == len(pcs) == len(ids)):
            raise InvalidInput(
                f"next tokens: {len(ids)} prompt ids but {len(tid)} id rows, "
                f"{len(tok)} token rows and {len(pcs)} piece rows"
            )
        if any(len(a) == 0 or len(a) != len(b) for a, b in zip(tid, tok)):
            raise InvalidInput("next tokens: each prompt needs k >= 1 ids and as many strings")
        if len(np.unique(ids)) != len(ids):
            raise InvalidInput("next tokens: prompt ids repeat")
        if len(ids) == 0:
            return 0
        self._prompts.require(ids)  # NotFound for unknown prompt ids
        batch = pa.Table.from_pydict(
            {"prompt_id": pa.array(ids, pa.int64()), "token_ids": tid, "tokens": tok, "pieces": pcs},
            schema=NEXT_TOKENS_SCHEMA,
        )
        with self._tables.write_lock:
            self._tables.upsert(
                next_tokens_table(model_key), batch, NEXT_TOKENS_SCHEMA, storage_version=ACTS_STORAGE_VERSION
            )
        return len(ids)

    def _table(self, model_key: str) -> LanceTable:
        return self._tables.open(next_tokens_table(model_key))

    def has(self, model_key: str) -> bool:
        """Whether any next tokens are stored for this model."""
        return self._table(model_key) is not None

    def version(self, model_key: str) -> int:
        """Version of the model's next-token table (changes with every write); -1 when none."""
        tbl = self._table(model_key)
        return -1 if tbl is None else int(tbl.version)

    def ids(self, model_key: str) -> np.ndarray:
        """Sorted prompt ids that have next tokens stored for this model (empty if none)."""
        tbl = self._table(model_key)
        if tbl is None:
            return np.empty(0, np.int64)
        return np.sort(self._tables.scan(tbl, ["prompt_id"])["prompt_id"].to_numpy())

    def read(
        self, model_key: str, prompt_ids: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, list[list[int]], list[list[str]]]:
        """(prompt ids ascending, token id lists, decoded token lists) of a model.

        With ``prompt_ids`` every one must have next tokens stored (NotFound names the
        missing ones); rows come back in ascending id order.
        """
        tbl = self._table(model_key)
        if tbl is None:
            self._models.get(model_key)  # unknown model -> NotFound naming the known ones
            raise NotFound(
                f"model {model_key!r} has no next tokens stored; ingest it with next_tokens",
                field="next_tokens",
                value=False,
                allowed="an ingest with next_tokens",
            )
        t = self._tables.scan(tbl)
        ids = t["prompt_id"].to_numpy()
        order = np.argsort(ids)
        ids = ids[order]
        if prompt_ids is not None:
            want = np.unique(np.asarray(prompt_ids, dtype=np.int64))
            pos = np.clip(np.searchsorted(ids, want), 0, max(len(ids) - 1, 0))
            found = (ids[pos] == want) if len(ids) else np.zeros(len(want), bool)
            if not found.all():
                missing = want[~found]
                raise NotFound(
                    f"model {model_key!r} has no next tokens for {len(missing)} prompt(s) "
                    f"(e.g. {missing[:5].tolist()}); ingest them with next_tokens",
                    field="next_tokens",
                    value=False,
                    allowed="an ingest with next_tokens",
                )
            order = order[pos]
            ids = want
        tid = t["token_ids"].take(pa.array(order)).to_pylist()
        tok = t["tokens"].take(pa.array(order)).to_pylist()
        return ids, tid, tok
