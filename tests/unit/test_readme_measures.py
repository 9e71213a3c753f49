"""The README's "Similarity measures" table lists every registered measure with its direction,
options and what it is sensitive to, exactly as the registry says. Regenerate it with
``python tests/unit/test_readme_measures.py`` after registering a measure."""

from __future__ import annotations

from pathlib import Path

from actstore.analysis import measures as registry

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- measures:start -->", "<!-- measures:end -->"


def table() -> str:
    """The Markdown table of every registered measure, in registration order."""
    rows = ["| measure | direction | options | sensitive to |", "|---|---|---|---|"]
    for m in registry.measures():
        options = ", ".join(f"`{o.name}`" for o in m.options) or "-"
        rows.append(f"| `{m.name}` | {m.direction} | {options} | {m.sensitive_to} |")
    return "\n".join(rows)


def block(text: str) -> str:
    return text[text.index(START) + len(START) : text.index(END)].strip()


def test_the_readme_lists_every_registered_measure():
    text = README.read_text()
    assert START in text and END in text, f"README.md needs a {START} ... {END} block"
    listed = block(text)
    missing = [m.name for m in registry.measures() if f"| `{m.name}` |" not in listed]
    assert not missing, f"README.md does not list {missing}: run python tests/unit/test_readme_measures.py"
    assert listed == table(), "README.md's measure table is stale: run python tests/unit/test_readme_measures.py"


if __name__ == "__main__":
    text = README.read_text()
    README.write_text(text[: text.index(START) + len(START)] + "\n" + table() + "\n" + text[text.index(END) :])
    print(f"wrote the measure table of {README}")
