"""Prompt sources: read a prompt file (or a Hugging Face dataset) into a validated PromptSet.

Supported inputs (chosen by suffix, or by the ``hf:`` prefix / a folder):

- ``.jsonl`` / ``.ndjson``: one JSON object per line with a string ``text`` field and an
  optional integer ``label``; other fields go to ``meta``. Blank lines are ignored.
- ``.csv`` / ``.tsv``: a header row naming the columns; ``text_column`` is required,
  ``label_column`` optional (an empty label cell means "no label"). Other columns go to
  ``meta``. A file without a header can be read by passing column *indices* (ints, 0-based)
  as ``text_column`` / ``label_column``.
- ``.parquet``: a string text column and an optional integer label column.
- ``.txt`` (or any other suffix): one prompt per line; blank lines are ignored.
- ``hf:NAME[:split]``: a Hugging Face dataset. ``NAME`` may be a folder written by
  ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read with pyarrow from its Arrow
  files, no ``datasets`` package needed) or a hub dataset name (needs ``datasets`` and a
  network). A ``save_to_disk`` folder can also be passed without the ``hf:`` prefix.

Every problem raises :class:`InvalidInput` naming the file, the line (or row) and the
column: unreadable or empty files, missing columns, non-UTF-8 bytes, empty or whitespace-only
texts, non-integer labels. Reading is all-or-nothing: a PromptSet is returned only when every
row is valid, so callers never store part of a bad file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actstore.errors import InvalidInput
from actstore.ingest.field_errors import with_field

__all__ = ["PromptSet", "read_prompts"]

ColumnSpec = str | int


@dataclass
class PromptSet:
    """Prompts read from one source, all rows validated.

    ``texts[i]`` is a non-empty string; ``labels`` is ``None`` when the source has no label
    column, else one ``int`` (or ``None`` for a missing label) per text; ``meta`` is ``None``
    when the source has no extra fields, else one dict (possibly empty) per text.
    """

    texts: list[str]
    labels: list[int | None] | None = None
    meta: list[dict[str, Any]] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)


def read_prompts(
    path: str | Path,
    *,
    text_column: ColumnSpec = "text",
    label_column: ColumnSpec | None = "label",
) -> PromptSet:
    """Read and validate every prompt of ``path``; see the module docstring for formats.

    ``label_column=None`` ignores labels. The label column is optional unless it was named
    explicitly (anything but the default ``"label"``), in which case it must exist.
    """
    spec = str(path)
    if spec.startswith("hf:"):
        return _read_hf(spec, text_column, label_column)
    p = Path(spec).expanduser()
    if not p.exists():
        raise InvalidInput(f"prompt file {spec!r} does not exist")
    if p.is_dir():
        if _is_saved_dataset(p):
            return _read_hf_saved(p, None, text_column, label_column, spec)
        raise InvalidInput(
            f"{spec!r} is a folder but not a Hugging Face save_to_disk folder; pass a "
            ".jsonl, .csv, .tsv, .parquet or .txt file"
        )
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return _read_parquet(p, text_column, label_column)
    text = _read_utf8(p)
    if suffix in (".jsonl", ".ndjson"):
        result = _read_jsonl(p, text, text_column, label_column)
    elif suffix in (".csv", ".tsv"):
        result = _read_csv(p, text, "\t" if suffix == ".tsv" else ",", text_column, label_column)
    else:
        result = _read_txt(p, text)
    return result


# --------------------------------------------------------------------------- helpers


def _required_label(label_column: ColumnSpec | None) -> bool:
    return label_column is not None and label_column != "label"


def _read_utf8(p: Path) -> str:
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read prompt file {str(p)!r}: {e.strerror or e}") from None
    if not data.strip():
        raise InvalidInput(f"prompt file {str(p)!r} is empty: no prompts to read")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InvalidInput(
            f"{p}: line {line}, byte column {col}: not valid UTF-8 (byte 0x{data[e.start]:02x}); "
            "prompt files must be UTF-8 encoded"
        ) from None
    return text.removeprefix("\ufeff")


def _check_text(value: Any, where: str, column: ColumnSpec) -> str:
    if not isinstance(value, str):
        kind = "missing (null)" if value is None else f"a {type(value).__name__}, not a string"
        raise InvalidInput(f"{where}: text column {column!r} is {kind}")
    if not value.strip():
        raise InvalidInput(f"{where}: text column {column!r} is empty; every prompt needs text")
    return value


def _parse_label(value: Any, where: str, column: ColumnSpec) -> int | None:
    """An int label from JSON / CSV / Arrow values; None for missing; error otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: label column {column!r} is a boolean ({value}); labels must be integers")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return int(value)
    if isinstance(value, str):
        s = value.strip()
        if s == "":
            return None
        try:
            return int(s)
        except ValueError:
            pass
    raise InvalidInput(
        f"{where}: label column {column!r} has {value!r}, which is not an integer; "
        "labels must be integers (or empty for no label)"
    )


def _finish(texts: list[str], labels: list[int | None] | None, meta: list[dict] | None, source: str) -> PromptSet:
    if not texts:
        raise InvalidInput(f"prompt file {source!r} holds no prompts")
    if labels is not None and all(label is None for label in labels):
        labels = None
    if meta is not None and not any(meta):
        meta = None
    return PromptSet(texts=texts, labels=labels, meta=meta, source=source)


# --------------------------------------------------------------------------- formats


def _read_txt(p: Path, text: str) -> PromptSet:
    texts = [line.rstrip("\r") for line in text.split("\n")]
    texts = [t for t in texts if t.strip()]
    return _finish(texts, None, None, str(p))


def _read_jsonl(p: Path, text: str, text_column: ColumnSpec, label_column: ColumnSpec | None) -> PromptSet:
    texts: list[str] = []
    labels: list[int | None] = []
    meta: list[dict] = []
    seen_label = False
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{p}: line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise InvalidInput(
                f'{where}: expected a JSON object like {{"{text_column}": "..."}}, got a {type(obj).__name__}'
            )
        if text_column not in obj:
            raise InvalidInput(
                f"{where}: missing text field {text_column!r} (fields: {', '.join(map(str, obj)) or 'none'})"
            )
        texts.append(_check_text(obj[text_column], where, text_column))
        label = None
        if label_column is not None and label_column in obj:
            seen_label = True
            label = _parse_label(obj[label_column], where, label_column)
        labels.append(label)
        meta.append({k: v for k, v in obj.items() if k not in (text_column, label_column)})
    if texts and _required_label(label_column) and not seen_label:
        raise InvalidInput(f"{p}: no line has the label field {label_column!r}")
    return _finish(texts, labels, meta, str(p))


def _read_csv(
    p: Path, text: str, delimiter: str, text_column: ColumnSpec, label_column: ColumnSpec | None
) -> PromptSet:
    headerless = isinstance(text_column, int)
    if headerless and label_column == "label":
        label_column = None  # the default name means nothing without a header
    if label_column is not None and isinstance(label_column, int) != headerless:
        raise InvalidInput(
            "text_column and label_column must both be names (file with a "
            "header row) or both be 0-based indices (file without one)"
        )
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # long prompts are fine
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        rows = list(reader)
    except csv.Error as e:
        raise InvalidInput(f"{p}: line {reader.line_num}: malformed {kind} ({e})") from None
    if headerless:
        header = None
        first_line = 1
        ti, li = text_column, label_column
    else:
        if not rows:
            raise InvalidInput(f"prompt file {str(p)!r} is empty: no header row")
        header = [h.strip() for h in rows[0]]
        rows = rows[1:]
        first_line = 2
        if text_column not in header:
            raise with_field(
                InvalidInput(
                    f"{p}: line 1: no text column {text_column!r} in the header (columns: "
                    f"{', '.join(repr(h) for h in header)}); name the text column"
                ),
                "text_column",
            )
        ti = header.index(text_column)
        if label_column is not None and label_column in header:
            li = header.index(label_column)
        elif _required_label(label_column):
            raise InvalidInput(
                f"{p}: line 1: no label column {label_column!r} in the header (columns: "
                f"{', '.join(repr(h) for h in header)})"
            )
        else:
            li = None
    texts: list[str] = []
    labels: list[int | None] | None = [] if li is not None else None
    meta: list[dict] | None = [] if header is not None and len(header) > 1 + (li is not None) else None
    for offset, row in enumerate(rows):
        lineno = first_line + offset
        if not row:
            continue  # blank line
        where = f"{p}: line {lineno}"
        width = len(header) if header is not None else None
        if width is not None and len(row) != width:
            raise InvalidInput(f"{where}: {len(row)} fields where the header has {width}")
        if ti >= len(row):
            raise InvalidInput(f"{where}: no column {ti} (the row has {len(row)} fields)")
        texts.append(_check_text(row[ti], f"{where}, column {_colname(header, ti)!r}", text_column))
        if labels is not None:
            if li >= len(row):
                raise InvalidInput(f"{where}: no column {li} (the row has {len(row)} fields)")
            labels.append(_parse_label(row[li], f"{where}, column {_colname(header, li)!r}", label_column))
        if meta is not None:
            meta.append({h: v for j, (h, v) in enumerate(zip(header, row)) if j not in (ti, li)})
    return _finish(texts, labels, meta, str(p))


def _colname(header: list[str] | None, i: int) -> str | int:
    return header[i] if header is not None else i


def _read_parquet(p: Path, text_column: ColumnSpec, label_column: ColumnSpec | None) -> PromptSet:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for non-Parquet bytes
        raise InvalidInput(f"cannot read {str(p)!r} as Parquet: {e}") from None
    return _from_arrow(table, str(p), text_column, label_column)


def _from_arrow(table, source: str, text_column: ColumnSpec, label_column: ColumnSpec | None) -> PromptSet:
    """Validate an Arrow table's columns into a PromptSet (rows are 1-based in messages)."""
    import pyarrow as pa

    names = table.column_names
    if table.num_rows == 0:
        raise InvalidInput(f"{source!r} holds no rows: no prompts to read")
    if isinstance(text_column, int):
        text_column = names[text_column] if 0 <= text_column < len(names) else str(text_column)
    if isinstance(label_column, int):
        label_column = names[label_column] if 0 <= label_column < len(names) else str(label_column)
    if text_column not in names:
        raise with_field(
            InvalidInput(
                f"{source}: no text column {text_column!r} (columns: "
                f"{', '.join(repr(n) for n in names)}); name the text column"
            ),
            "text_column",
        )
    col = table.column(text_column)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise InvalidInput(f"{source}: text column {text_column!r} has type {col.type}, not string")
    raw_texts = col.to_pylist()
    texts = [_check_text(t, f"{source}: row {i + 1}", text_column) for i, t in enumerate(raw_texts)]
    labels = None
    if label_column is not None and label_column in names:
        lcol = table.column(label_column)
        t = lcol.type
        if pa.types.is_dictionary(t):  # HF ClassLabel is stored as int64; pandas categories not
            t = t.value_type
        if pa.types.is_boolean(t) or not (
            pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
        ):
            raise InvalidInput(f"{source}: label column {label_column!r} has type {lcol.type}; labels must be integers")
        labels = [_parse_label(v, f"{source}: row {i + 1}", label_column) for i, v in enumerate(lcol.to_pylist())]
    elif _required_label(label_column):
        raise InvalidInput(f"{source}: no label column {label_column!r} (columns: {', '.join(repr(n) for n in names)})")
    others = [n for n in names if n not in (text_column, label_column)]
    meta = None
    if others:
        cols = {n: table.column(n).to_pylist() for n in others}
        meta = [{n: _jsonable(cols[n][i]) for n in others} for i in range(table.num_rows)]
    return _finish(texts, labels, meta, source)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


# --------------------------------------------------------------------------- Hugging Face


def _is_saved_dataset(p: Path) -> bool:
    return (p / "state.json").exists() or (p / "dataset_dict.json").exists()


def _read_hf(spec: str, text_column: ColumnSpec, label_column: ColumnSpec | None) -> PromptSet:
    body = spec[3:]
    if not body:
        raise InvalidInput("empty Hugging Face dataset spec; use hf:NAME or hf:NAME:split")
    # A local folder may itself contain ':' (rare); try the whole body first.
    local = Path(body).expanduser()
    if local.is_dir():
        return _read_hf_saved(local, None, text_column, label_column, spec)
    name, _, split = body.rpartition(":") if ":" in body else (body, "", "")
    name, split = (name, split or None) if name else (body, None)
    local = Path(name).expanduser()
    if local.is_dir():
        return _read_hf_saved(local, split, text_column, label_column, spec)
    if local.exists() or name.startswith((".", "/", "~")):
        raise InvalidInput(f"{spec!r}: {name!r} is not a Hugging Face save_to_disk folder")
    return _read_hf_hub(name, split, text_column, label_column, spec)


def _read_hf_saved(
    folder: Path, split: str | None, text_column: ColumnSpec, label_column: ColumnSpec | None, spec: str
) -> PromptSet:
    """Read a ``save_to_disk`` folder (Dataset or DatasetDict) from its Arrow stream files."""
    import pyarrow as pa

    if (folder / "dataset_dict.json").exists():
        try:
            splits = json.loads((folder / "dataset_dict.json").read_text("utf-8"))["splits"]
        except (OSError, ValueError, KeyError) as e:
            raise InvalidInput(f"{spec!r}: unreadable dataset_dict.json ({e})") from None
        if split is None:
            if len(splits) == 1:
                split = splits[0]
            elif "train" in splits:
                split = "train"
            else:
                raise InvalidInput(f"{spec!r} has splits {', '.join(splits)}; choose one with hf:{folder}:SPLIT")
        if split not in splits:
            raise InvalidInput(f"{spec!r}: no split {split!r}; splits: {', '.join(splits)}")
        folder = folder / split
    elif split is not None:
        raise InvalidInput(f"{spec!r}: {str(folder)!r} is a single dataset without splits; drop ':{split}'")
    state_file = folder / "state.json"
    try:
        state = json.loads(state_file.read_text("utf-8"))
        files = [folder / f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidInput(f"{spec!r}: {state_file} is not a datasets state.json ({e})") from None
    if state.get("_indices_data_files"):
        raise InvalidInput(
            f"{spec!r}: the saved dataset has an indices mapping; save it again after .flatten_indices()"
        )
    tables = []
    for f in files:
        try:
            with pa.memory_map(str(f)) as src:
                try:
                    tables.append(pa.ipc.open_stream(src).read_all())
                except pa.ArrowInvalid:
                    src.seek(0)
                    tables.append(pa.ipc.open_file(src).read_all())
        except (OSError, pa.ArrowInvalid) as e:
            raise InvalidInput(f"{spec!r}: cannot read Arrow file {f.name} ({e})") from None
    if not tables:
        raise InvalidInput(f"{spec!r} holds no data files")
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return _from_arrow(table, spec, text_column, label_column)


def _read_hf_hub(
    name: str, split: str | None, text_column: ColumnSpec, label_column: ColumnSpec | None, spec: str
) -> PromptSet:
    try:
        import datasets  # noqa: F401  (optional dependency, imported lazily)
    except ImportError:
        raise InvalidInput(
            f"{spec!r}: reading a dataset from the Hugging Face Hub needs the 'datasets' "
            "package (pip install datasets) and a network; without them, pass a folder written "
            "by Dataset.save_to_disk (hf:/path/to/folder[:split]) or a .jsonl/.csv/.parquet file"
        ) from None
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # datasets raises many types (FileNotFoundError, ConnectionError, ...)
        raise InvalidInput(
            f"{spec!r}: cannot load Hugging Face dataset {name!r} (split {split or 'train'!r}): {e}"
        ) from None
    table = ds.with_format("arrow")[:]  # every row as one pyarrow Table, any index mapping applied
    return _from_arrow(table, spec, text_column, label_column)
