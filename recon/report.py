"""Tables of results as text: one list of string cells per row, rendered as markdown or as a rich table."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], first_left: bool = True) -> list[str]:
    """Markdown lines of a table: the header, the alignment row (numbers right-aligned), one line per row."""
    align = ["---" if first_left and index == 0 else "---:" for index in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def rich_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str, caption: str | None = None) -> Table:
    """The same table for the terminal; the first column left-aligned, the rest right-aligned."""
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for index, column in enumerate(header):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table
