"""Prompt sources: every supported format, and clear errors for bad prompt files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actstore.errors import InvalidInput
from actstore.ingest.sources import read_prompts

# ----------------------------------------------------------------------------- formats


def test_jsonl_text_label_meta(tmp_path):
    f = tmp_path / "p.jsonl"
    rows = [{"text": "good film", "label": 1, "src": "a"}, {"text": "bad film", "label": 0}, {"text": "no label here"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    ps = read_prompts(f)
    assert ps.texts == ["good film", "bad film", "no label here"]
    assert ps.labels == [1, 0, None]
    assert ps.meta == [{"src": "a"}, {}, {}]


def test_jsonl_without_labels(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"text": "a b"}\n{"text": "c d"}\n', encoding="utf-8")
    ps = read_prompts(f)
    assert ps.texts == ["a b", "c d"] and ps.labels is None and ps.meta is None


def test_csv_and_tsv_named_columns(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text('sentence,y,extra\n"hello, world",1,x\nsecond one,0,y\n', encoding="utf-8")
    ps = read_prompts(f, text_column="sentence", label_column="y")
    assert ps.texts == ["hello, world", "second one"]
    assert ps.labels == [1, 0]
    assert ps.meta == [{"extra": "x"}, {"extra": "y"}]
    t = tmp_path / "p.tsv"
    t.write_text('text\tlabel\nit \'s fine .\t1\nnot "quoted" here\t0\n', encoding="utf-8")
    ps = read_prompts(t)
    assert ps.texts == ["it 's fine .", 'not "quoted" here'] and ps.labels == [1, 0]


def test_headerless_csv_by_index(tmp_path):
    f = tmp_path / "news.csv"
    f.write_text('"3","Title a","Body a"\n"1","Title b","Body b"\n', encoding="utf-8")
    ps = read_prompts(f, text_column=2, label_column=0)
    assert ps.texts == ["Body a", "Body b"] and ps.labels == [3, 1]


def test_parquet(tmp_path):
    f = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["x y", "z w"], "label": pa.array([2, 5], pa.int32()), "lang": ["en", "fr"]}), f)
    ps = read_prompts(f)
    assert ps.texts == ["x y", "z w"] and ps.labels == [2, 5]
    assert ps.meta == [{"lang": "en"}, {"lang": "fr"}]


def test_plain_text_one_prompt_per_line(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("first prompt\r\nsecond prompt\n\nthird\n", encoding="utf-8")
    ps = read_prompts(f)
    assert ps.texts == ["first prompt", "second prompt", "third"] and ps.labels is None


def _save_to_disk_folder(folder: Path, table: pa.Table) -> None:
    """The layout datasets' save_to_disk writes: Arrow stream files + state.json."""
    folder.mkdir(parents=True)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (folder / "state.json").write_text(
        json.dumps(
            {
                "_data_files": [{"filename": "data-00000-of-00001.arrow"}],
                "_fingerprint": "0",
                "_format_columns": None,
                "_format_kwargs": {},
                "_format_type": None,
                "_output_all_columns": False,
                "_split": None,
            }
        )
    )
    (folder / "dataset_info.json").write_text("{}")


def test_hf_save_to_disk_folder_without_datasets(tmp_path):
    root = tmp_path / "sst2_saved"
    root.mkdir()
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation"]}))
    _save_to_disk_folder(root / "train", pa.table({"sentence": ["t1", "t2"], "label": [0, 1]}))
    _save_to_disk_folder(root / "validation", pa.table({"sentence": ["v1"], "label": [1]}))
    ps = read_prompts(f"hf:{root}:validation", text_column="sentence")
    assert ps.texts == ["v1"] and ps.labels == [1]
    ps = read_prompts(f"hf:{root}", text_column="sentence")  # defaults to train
    assert ps.texts == ["t1", "t2"] and ps.labels == [0, 1]
    ps = read_prompts(root / "train", text_column="sentence")  # a folder without hf:
    assert ps.texts == ["t1", "t2"]
    with pytest.raises(InvalidInput, match=r"no split 'test'.*train, validation"):
        read_prompts(f"hf:{root}:test", text_column="sentence")


def test_hf_hub_name_without_datasets_package_is_clear(monkeypatch):
    # None in sys.modules makes `import datasets` raise ImportError, installed or not
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(InvalidInput, match=r"needs the 'datasets' package.*save_to_disk"):
        read_prompts("hf:stanfordnlp/sst2:validation")


def test_real_sst2_and_toxigen_files(text_sets):
    """The real SST-2 and ToxiGen files of ../shared/data, or generated ones in their format."""
    sst2 = text_sets("sst2")  # 872 rows either way; first_text: "it 's a charming" when real
    ps = read_prompts(sst2.path, text_column="sentence")
    assert len(ps) == 872 == sst2.rows and set(ps.labels) == {0, 1}
    assert ps.texts[0].startswith(sst2.first_text)
    toxigen = text_sets("toxigen")  # quoted: '"unicorn third"' when real
    tox = read_prompts(toxigen.path)
    assert len(tox) > 500 and len(tox) == toxigen.rows and set(tox.labels) <= {0, 1}
    assert {"label_name", "target_group"} <= set(tox.meta[0])
    # a quoted field with embedded "" quotes (CSV quoting inside the TSV)
    assert any(toxigen.quoted in t for t in tox.texts)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name,content,pattern",
    [
        ("empty.jsonl", b"", r"empty\.jsonl' is empty"),
        ("blank.csv", b"\n \n", r"blank\.csv' is empty"),
        (
            "cols.csv",
            b"sentence,label\nhello,1\n",
            r"line 1: no text column 'text' in the header \(columns: 'sentence', 'label'\)",
        ),
        (
            "cols.jsonl",
            b'{"text": "ok"}\n{"sentence": "x"}\n',
            r"line 2: missing text field 'text' \(fields: sentence\)",
        ),
        (
            "enc.csv",
            b"text,label\nfine,1\n" + b"caf\xe9 au lait,0\n",
            r"enc\.csv: line 3, byte column 4: not valid UTF-8",
        ),
        ("enc.txt", b"ok\n\xff\xfebad\n", r"line 2, byte column 1: not valid UTF-8"),
        ("emptytext.jsonl", b'{"text": "a"}\n{"text": "   "}\n', r"line 2: text column 'text' is empty"),
        ("emptytext.csv", b"text,label\nfine,1\n,0\n", r"line 3, column 'text': text column 'text' is empty"),
        (
            "label.csv",
            b"text,label\nfine,1\nbad,positive\n",
            r"line 3, column 'label': label column 'label' has 'positive', which is not an integer",
        ),
        ("label.jsonl", b'{"text": "a", "label": 1.5}\n', r"line 1: label column 'label' has 1\.5"),
        ("json.jsonl", b'{"text": "a"}\n{"text": \n', r"line 2: not valid JSON"),
        ("width.csv", b"text,label\na,1\nb,0,extra\n", r"line 3: 3 fields where the header has 2"),
        ("null.jsonl", b'{"text": null}\n', r"line 1: text column 'text' is missing \(null\)"),
    ],
)
def test_bad_prompt_files_name_file_line_column(tmp_path, name, content, pattern):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(InvalidInput, match=pattern) as exc:
        read_prompts(f)
    assert name in str(exc.value)


def test_missing_file_and_parquet_errors(tmp_path):
    with pytest.raises(InvalidInput, match=r"'.*nope\.jsonl' does not exist"):
        read_prompts(tmp_path / "nope.jsonl")
    f = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": ["a", ""]}), f)
    with pytest.raises(InvalidInput, match=r"bad\.parquet: row 2: text column 'text' is empty"):
        read_prompts(f)
    g = tmp_path / "lab.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": ["1", "x"]}), g)
    with pytest.raises(InvalidInput, match=r"row 2: label column 'label' has 'x'"):
        read_prompts(g)
    h = tmp_path / "notparquet.parquet"
    h.write_text("text\nhello\n")
    with pytest.raises(InvalidInput, match="cannot read .* as Parquet"):
        read_prompts(h)


def test_explicit_label_column_must_exist(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("text\nhello\n", encoding="utf-8")
    assert read_prompts(f).labels is None  # the default 'label' column is optional
    with pytest.raises(InvalidInput, match=r"no label column 'sentiment'"):
        read_prompts(f, label_column="sentiment")
