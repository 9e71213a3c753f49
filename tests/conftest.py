"""Shared fixtures.

Real labelled text lives in ``../shared/data`` next to the repository (never copied in). The
environment variable ``ACTSTORE_TEST_SHARED`` (read only by the tests) names another folder to
use instead of ``../shared``; point it at an empty folder to run as a clone without the data.
When a real text set is absent, :func:`text_set` generates a stand-in with the same file format,
the same row count and the same label balance from templates with a fixed seed (no real text),
so the tests that read these files run, and assert the same properties, in any clone.
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from actstore import Store

SHARED = Path(os.environ.get("ACTSTORE_TEST_SHARED") or Path(__file__).resolve().parents[2] / "shared")
SHARED_DATA = SHARED / "data"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    from actstore import Store  # imported here so that tests of actstore.analysis need no store

    return Store.open(tmp_path / "db")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ----------------------------------------------------------------------------- text sets
@dataclass(frozen=True)
class TextSet:
    """One labelled text file: the real one under ``SHARED_DATA`` or a generated stand-in.

    ``rows``: data rows (TSV files, header excluded) or lines (wikitext); ``first_text``: how
    the first text starts; ``quoted``: a fragment of some text that holds double quotes (so the
    file has a CSV-quoted field with ``""`` inside), or None.
    """

    name: str
    path: Path
    real: bool
    rows: int
    first_text: str
    quoted: str | None = None


# name -> (path under the data folder, facts of the real file from its PROVENANCE.txt)
_REAL = {
    "sst2": ("sst2/dev.tsv", dict(rows=872, first_text="it 's a charming")),
    "toxigen": (
        "toxigen_demonstrations/toxigen_demonstrations.tsv",
        dict(rows=587, first_text="", quoted='"unicorn third"'),
    ),
    "wikitext2": ("wikitext2_raw/wiki.test.raw", dict(rows=2891, first_text=" = ")),
}


def text_set(name: str, scratch: Path) -> TextSet:
    """The real text set ``name`` ("sst2", "toxigen", "wikitext2") when ``SHARED_DATA`` has it,
    else a generated one with the same format written under ``scratch`` (reused if there)."""
    rel, facts = _REAL[name]
    real = SHARED_DATA / rel
    if real.is_file():
        return TextSet(name, real, True, **facts)
    path = scratch / rel
    made = _GENERATORS[name](path)
    return TextSet(name, path, False, **made)


@pytest.fixture(scope="session")
def text_sets(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], TextSet]:
    """``text_sets("sst2")`` -> :class:`TextSet` (real, or generated once per session)."""
    scratch = tmp_path_factory.mktemp("text_sets")
    cache: dict[str, TextSet] = {}

    def get(name: str) -> TextSet:
        if name not in cache:
            cache[name] = text_set(name, scratch)
        return cache[name]

    return get


def _unique(make: Callable[[], str], n: int) -> list[str]:
    """``n`` distinct texts from ``make`` in the order first made."""
    out: dict[str, None] = {}
    for _ in range(100 * n):
        out.setdefault(make(), None)
        if len(out) == n:
            return list(out)
    raise AssertionError(f"the templates give fewer than {n} distinct texts")


def _sst2_like(path: Path) -> dict:
    """GLUE SST-2 dev.tsv format: header ``sentence<TAB>label``, lower-case tokenised sentences
    ending in a space before the tab, label 1 = positive / 0 = negative, no quote characters;
    872 rows, 444 positive / 428 negative, in seeded random order."""
    rnd = random.Random(20240601)
    subjects = [
        "the film",
        "this movie",
        "the story",
        "the cast",
        "the script",
        "its second half",
        "the director 's new picture",
        "the soundtrack",
        "the ending",
        "the lead performance",
        "this sequel",
        "the dialogue",
    ]
    nouns = [
        "ride",
        "portrait",
        "comedy",
        "drama",
        "journey",
        "character study",
        "thriller",
        "piece of work",
        "romance",
        "experience",
    ]
    pos = [
        "charming",
        "moving",
        "witty",
        "gorgeous",
        "smart",
        "tender",
        "rousing",
        "funny",
        "honest",
        "thrilling",
        "warm",
        "inventive",
    ]
    neg = [
        "tedious",
        "bland",
        "clumsy",
        "dull",
        "shallow",
        "muddled",
        "lifeless",
        "predictable",
        "grating",
        "sloppy",
        "pointless",
        "overlong",
    ]
    tails = [
        "",
        ".",
        "from start to finish .",
        ", and it shows .",
        "that never lets up .",
        "-- and that 's saying something .",
        "for most of its running time .",
    ]
    forms = [
        "{s} is a {a} {n} {t}",
        "{s} feels {a} {t}",
        "a {a} {n} , {s} does n't stop {t}",
        "{a} , {a2} and {s} makes it work {t}",
    ]

    def make(words: list[str]) -> Callable[[], str]:
        def one() -> str:
            a, a2 = rnd.sample(words, 2)
            text = rnd.choice(forms).format(
                s=rnd.choice(subjects), n=rnd.choice(nouns), a=a, a2=a2, t=rnd.choice(tails)
            )
            return " ".join(text.split()) + " "

        return one

    rows = [(t, 1) for t in _unique(make(pos), 444)] + [(t, 0) for t in _unique(make(neg), 428)]
    rnd.shuffle(rows)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return dict(rows=len(rows), first_text=rows[0][0][:16])


def _toxigen_like(path: Path) -> dict:
    """The collector's toxigen_demonstrations.tsv format: header ``text label label_name
    target_group source_file`` (tab-separated, CSV quoting where a text holds ``"``), label
    1 / 0 with label_name "hate" / "neutral"; 587 rows, 317 / 270. The generated texts are
    harmless generalisations about made-up hobby groups, not hateful statements."""
    rnd = random.Random(20240602)
    groups = {
        "birdwatchers": "bird watchers",
        "chess_players": "chess players",
        "cyclists": "cyclists",
        "gardeners": "gardeners",
        "drummers": "drummers",
        "night_owls": "night owls",
        "stamp_collectors": "stamp collectors",
        "surfers": "surfers",
        "knitters": "knitters",
        "runners": "runners",
        "sailors": "weekend sailors",
        "gamers": "board gamers",
    }
    label1 = [
        "{g} are always late and never say sorry",
        "you can never trust {g} with a schedule",
        "{g} think they are better than everyone else",
        "all {g} talk too loudly at dinner",
        "{g} should stay out of the {p}",
        "nobody wants {g} at the {p}",
        'they call {g} "the {w} crowd" and mean it as an insult',
    ]
    label0 = [
        "{g} often meet at the {p} on {d}",
        "many {g} started their hobby as children",
        "{g} share tips with each other at the {p}",
        "some {g} travel far to meet friends",
        "{g} come from every kind of background",
        'the {p} newsletter calls {g} "the {w} crowd"',
    ]
    places = ["park", "library", "harbour", "community hall", "town square", "old station", "market"]
    days = ["mondays", "saturdays", "sunday mornings", "weekday evenings"]
    words = ["early", "loud", "patient", "muddy", "careful", "cheerful"]

    def make(templates: list[str], group: str) -> Callable[[], str]:
        def one() -> str:
            text = rnd.choice(templates).format(
                g=groups[group], p=rnd.choice(places), d=rnd.choice(days), w=rnd.choice(words)
            )
            return text[0].upper() + text[1:] if rnd.random() < 0.5 else text

        return one

    rows: list[tuple[str, int, str]] = []
    for label, templates, total in ((1, label1, 317), (0, label0, 270)):
        per = [total // len(groups) + (i < total % len(groups)) for i in range(len(groups))]
        for group, k in zip(groups, per):
            rows += [(t, label, group) for t in _unique(make(templates, group), k)]
    quoted = next(t for t, _, _ in rows if '"' in t)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["text", "label", "label_name", "target_group", "source_file"])
            for text, label, group in rows:
                kind = "hate" if label else "neutral"
                w.writerow([text, label, kind, group, f"generated/{kind}_{group}.txt"])
    return dict(rows=len(rows), first_text=rows[0][0][:16], quoted=quoted[quoted.index('"') :])


def _wikitext_like(path: Path) -> dict:
    """The copy's wiki.test.raw format: UTF-8, CRLF line endings, no blank lines; heading lines
    `` = Title = `` / `` = = Section = = ``, paragraph lines starting with a space, tokens split
    by spaces with `` @-@ `` / `` @,@ `` inside words and numbers. 30 made-up articles."""
    rnd = random.Random(20240603)
    firsts = ["Alder", "Brook", "Corran", "Dunmore", "Elsworth", "Fenwick", "Galloway", "Hartley"]
    kinds = ["bridge", "lighthouse", "railway station", "canal", "mill", "observatory", "market hall"]
    regions = ["the north of the county", "the river valley", "the eastern coast", "the old town"]
    sentences = [
        "The {name} is a {kind} in {region} .",
        "It was built in {year} to a design by the engineer {person} , and opened to the public in {year2} .",
        "Local newspapers described it as a well @-@ known landmark , and it appeared on post cards for decades .",
        "During the {war} war the {kind} was used as a store , and part of its roof was damaged by fire .",
        "Repairs cost about £ {money} @,@ 000 and were paid for by a public appeal .",
        "In {year2} the {kind} was listed , which protects it from demolition .",
        "Visitors can reach it by a footpath from the village of {place} , about {km} km away .",
        "The building has a stone front , a slate roof and a small garden on its south side .",
    ]
    lines: list[str] = []
    for i in range(30):
        name = f"{rnd.choice(firsts)} {rnd.choice(kinds).title()}"
        lines.append(f" = {name} {i + 1} = ")
        for section in ("History", "Description"):
            lines.append(f" = = {section} = = ")
            for _ in range(4):
                picks = rnd.sample(sentences, 3)
                kw = dict(
                    name=name,
                    kind=rnd.choice(kinds),
                    region=rnd.choice(regions),
                    year=rnd.randint(1780, 1900),
                    year2=rnd.randint(1901, 1990),
                    person=f"{rnd.choice(firsts)} {rnd.choice(firsts)}son",
                    war=rnd.choice(["first world", "second world"]),
                    money=rnd.randint(2, 90),
                    place=rnd.choice(firsts) + "ton",
                    km=rnd.randint(2, 9),
                )
                lines.append(" " + " ".join(s.format(**kw) for s in picks) + " ")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes("".join(ln + "\r\n" for ln in lines).encode("utf-8"))
    return dict(rows=len(lines), first_text=" = ")


_GENERATORS: dict[str, Callable[[Path], dict]] = {
    "sst2": _sst2_like,
    "toxigen": _toxigen_like,
    "wikitext2": _wikitext_like,
}
