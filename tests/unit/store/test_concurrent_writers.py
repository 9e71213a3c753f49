"""Several writer processes add prompts to one store at once (issue 12: ids were shared).

Each writer process runs ROUNDS rounds; in each it adds texts of its own to its own dataset
and the same texts as every other writer to the dataset ``common``. Afterwards no id may
belong to two different texts, every id a writer got back must hold the text it added, and
every dataset must hold exactly its texts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from actstore import Store
from actstore.store.prompts import PROMPT_CLAIMS, PROMPTS, PROMPTS_SCHEMA

WRITERS = 4
ROUNDS = 8
OWN = 6  # texts per writer and round in its own dataset
COMMON = 3  # texts per round that every writer adds to "common"

WRITER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from actstore import Store

    uri, w, rounds, own, common, go = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6]), Path(sys.argv[6])
    store = Store.open(uri)
    while not go.exists():  # start every writer at the same moment
        time.sleep(0.005)
    out = []
    for r in range(rounds):
        texts = [f"writer {w} round {r} text {k}" for k in range(own)]
        out += [[f"ds{w}", t, i] for t, i in zip(texts, store.add_prompts(f"ds{w}", texts))]
        shared = [f"common round {r} text {k}" for k in range(common)]
        out += [["common", t, i] for t, i in zip(shared, store.add_prompts("common", shared))]
    print(json.dumps(out))
    """
)


def _run_writers(uri: Path, tmp_path: Path) -> list[list]:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(uri), str(w), str(ROUNDS), str(OWN), str(COMMON), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WRITERS)
    ]
    time.sleep(1.0)  # let every writer import and open the store
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out))
    return results


def test_concurrent_writer_processes_never_share_a_prompt_id(tmp_path):
    uri = tmp_path / "db"
    seeded = Store.open(uri).add_prompts("before", ["stored before the writers", "another"])
    assert seeded == [0, 1]

    results = _run_writers(uri, tmp_path)

    store = Store.open(uri)
    text_of_id: dict[int, tuple[str, str]] = {}
    id_of_text: dict[tuple[str, str], int] = {}
    for got in results:
        assert len(got) == ROUNDS * (OWN + COMMON)
        for dataset, text, pid in got:
            # one id per (dataset, text), one (dataset, text) per id, across all writers
            assert text_of_id.setdefault(pid, (dataset, text)) == (dataset, text)
            assert id_of_text.setdefault((dataset, text), pid) == pid
    assert len(text_of_id) == WRITERS * ROUNDS * OWN + ROUNDS * COMMON == 216
    assert not set(text_of_id) & {0, 1}  # ids stored before the log existed are not handed out again

    records = store.prompts.get(sorted(text_of_id))
    assert [(r.dataset, r.text) for r in records] == [text_of_id[i] for i in sorted(text_of_id)]
    for w in range(WRITERS):
        page = store.prompts.page(f"ds{w}", limit=1000)
        assert sorted(p.text for p in page) == sorted(
            f"writer {w} round {r} text {k}" for r in range(ROUNDS) for k in range(OWN)
        )
    common = store.prompts.page("common", limit=1000)
    assert sorted(p.text for p in common) == sorted(
        f"common round {r} text {k}" for r in range(ROUNDS) for k in range(COMMON)
    )
    assert [p.text for p in store.prompts.page("before")] == ["stored before the writers", "another"]
    assert len(store.prompts.all_ids()) == 2 + 216
    # the seed, one claim per own-dataset call, one or more per round of common texts (a writer
    # that finds them stored claims nothing); the log was compacted on the way (> 16 fragments)
    claims = store.tables.open(PROMPT_CLAIMS)
    n_claims = claims.count_rows()
    assert 1 + WRITERS * ROUNDS + ROUNDS <= n_claims <= 1 + WRITERS * ROUNDS * 2
    assert claims.stats()["fragment_stats"]["num_fragments"] < n_claims


def test_ids_of_a_store_from_before_the_claims_log_are_never_reused(tmp_path):
    store = Store.open(tmp_path / "db")
    assert store.add_prompts("a", ["x", "y", "z"]) == [0, 1, 2]
    store.tables.drop(PROMPT_CLAIMS)  # a store written before the log existed
    store = Store.open(tmp_path / "db")
    assert store.add_prompts("b", ["x", "w"]) == [3, 4]
    assert store.add_prompts("a", ["y", "v"]) == [1, 5]


def test_claims_keep_their_order_through_compaction(tmp_path):
    store = Store.open(tmp_path / "db")
    ids = [store.add_prompts("d", [f"t{i}a", f"t{i}b"]) for i in range(20)]
    assert ids == [[2 * i, 2 * i + 1] for i in range(20)]
    store.tables.optimize(PROMPT_CLAIMS)
    assert store.tables.open(PROMPT_CLAIMS).stats()["fragment_stats"]["num_fragments"] == 1
    assert store.add_prompts("d", ["after", "t3b"]) == [40, 7]
    assert Store.open(tmp_path / "db").add_prompts("e", ["t3b"]) == [41]


def test_a_text_claimed_by_two_writers_gets_the_earliest_claims_id(tmp_path):
    """Writer B claims a text that writer A claimed first but has not stored yet: B returns A's
    id and stores the row itself; when A's row lands too, the catalog keeps one."""
    store = Store.open(tmp_path / "db")
    assert store.add_prompts("d", ["first"]) == [0]
    a = Store.open(tmp_path / "db")
    claimed = a.prompts._claim("d", [_sha("shared"), _sha("only a")], a.prompts._catalog())
    assert claimed == {_sha("shared"): 1, _sha("only a"): 2}
    b = Store.open(tmp_path / "db")
    assert b.add_prompts("d", ["own", "shared"], labels=[5, 7]) == [3, 1]
    # A stores its rows late, with another label for the shared text
    row = pa.table(
        {
            "prompt_id": [1, 2],
            "dataset": ["d", "d"],
            "text": ["shared", "only a"],
            "text_sha256": [_sha("shared"), _sha("only a")],
            "label": [9, None],
            "split": [None, None],
            "meta": [None, None],
        },
        schema=PROMPTS_SCHEMA,
    )
    a.tables.add(PROMPTS, row, PROMPTS_SCHEMA)
    reader = Store.open(tmp_path / "db")
    assert reader.prompts.ids("d").tolist() == [0, 1, 2, 3]
    assert [(p.id, p.text, p.label) for p in reader.prompts.page("d")] == [
        (0, "first", None),
        (1, "shared", 7),
        (2, "only a", None),
        (3, "own", 5),
    ]
    # B's claim reserved 3..4 and used 3 (its "shared" is A's 1): 4 stays unused
    assert reader.add_prompts("d", ["shared", "only a", "new"]) == [1, 2, 5]
    np.testing.assert_array_equal(reader.prompts.labels([1, 3]), [7.0, 5.0])


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def test_a_dropped_datasets_claims_give_no_ids(tmp_path):
    store = Store.open(tmp_path / "db")
    assert store.add_prompts("d", ["x", "y"]) == [0, 1]
    store.tables.delete(PROMPTS, "dataset = 'd'")
    assert store.add_prompts("d", ["x"]) == [0]  # still claimed: the same text gets its id back
    store.tables.delete(PROMPTS, "dataset = 'd'")
    store.prompts.forget_claims("d")
    assert store.add_prompts("d", ["x", "z"]) == [3, 4]
    assert store.add_prompts("e", ["x"]) == [5]
