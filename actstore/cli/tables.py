"""Tables on a terminal of any width that never cut a value.

A rich table squeezed into 80 columns ellipsises its cells (``minil…``, ``smoll…``), and two
model keys that differ only at the end read the same. :func:`print_records` prints a table when
every cell fits whole; otherwise each row as a block: its first value (the key) alone on its
own line, then one ``column: value`` line per other cell, long values wrapped (folded), never cut.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["print_records"]


def print_records(console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` (strings, one per column) under ``title``: a table when it fits
    ``console.width`` with every cell whole, else one block per row, the first cell on its
    own line. Nothing is ellipsised at any width."""
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    # each column: its widest cell plus one space of padding either side and a border
    natural = 1 + sum(3 + max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns))
    if natural <= console.width:
        console.print(table)
        return
    console.print(Text(title, style="italic"), overflow="fold")
    width = max(len(c) for c in columns[1:]) if len(columns) > 1 else 0
    for row in rows:
        console.print(Text(row[0], style="bold"), overflow="fold", soft_wrap=False)
        for col, value in zip(columns[1:], row[1:]):
            console.print(Text(f"  {col.ljust(width)}  {value}"), overflow="fold")
