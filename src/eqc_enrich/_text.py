"""Text from the data as the tool keeps and shows it: bounded in length, and storable in every index.

The rows themselves are never touched (the output carries every cell as it came). What the tool keeps of
a name besides its key (the review queue's display name and sample rows, the unresolved export's example)
and what it quotes in a message is cut to a bounded length, so that a cell of 200 MB costs a few hundred
bytes there; and a NUL, which PostgreSQL cannot store in text, is shown as `␀` on every backend, so that the
same input leaves the same record in SQLite and in PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import polars as pl

__all__ = ["MAX_SHOWN_CHARS", "MAX_SHOWN_COLUMNS", "listed", "shown", "shown_row", "shown_text"]

MAX_SHOWN_CHARS: Final[int] = 300
"""The most characters of one text kept for showing (a display name, a sample cell); real names are far
shorter than that, and the key (at most 255 characters) is what identifies a name anyway."""

MAX_SHOWN_COLUMNS: Final[int] = 60
"""The most columns of one sample row kept: a month has about twenty."""

_MARKER_ROOM: Final[int] = 40
"""A text is cut only when longer than the limit by more than this, the most a marker takes: then a text
already cut is never cut again (`shown_text` is idempotent), and a cut always saves something."""

_NUL: Final[str] = "\x00"
_NUL_SHOWN: Final[str] = "\u2400"  # SYMBOL FOR NULL: visible, and one character for one


def shown_text(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """`text` as kept for showing: when longer than `limit` (and the room of a marker), its first `limit`
    characters, then `…(N characters)` with its whole length; a NUL shown as `␀`."""
    if len(text) > limit + _MARKER_ROOM:
        text = f"{text[:limit]}…({len(text)} characters)"
    return text.replace(_NUL, _NUL_SHOWN) if _NUL in text else text


def shown(column: pl.Expr, limit: int = MAX_SHOWN_CHARS) -> pl.Expr:
    """`shown_text` over a column, in polars: a cell of megabytes is cut before it ever becomes a Python string."""
    text = column.cast(pl.String)
    length = text.str.len_chars()
    cut = text.str.slice(0, limit) + pl.lit("…(") + length.cast(pl.String) + pl.lit(" characters)")
    bounded = pl.when(length > limit + _MARKER_ROOM).then(cut).otherwise(text)
    return bounded.str.replace_all(_NUL, _NUL_SHOWN, literal=True)


def shown_row(row: Mapping[str, object], *, columns: int = MAX_SHOWN_COLUMNS) -> dict[str, object]:
    """One sample row as kept: its first `columns` columns, every name and text cell through `shown_text`."""
    kept: dict[str, object] = {}
    for name, value in row.items():
        if len(kept) == columns:
            break
        kept[shown_text(str(name))] = shown_text(value) if isinstance(value, str) else value
    return kept


def listed(names: Iterable[object], *, most: int = 10, chars: int = 60) -> str:
    """Names for a one-line message: at most `most` of them, each cut to `chars` characters, quoted."""
    shown: list[str] = []
    more = 0
    for name in names:
        if len(shown) < most:
            shown.append(repr(shown_text(str(name), chars)))
        else:
            more += 1
    return ", ".join(shown) + (f" and {more:,} more" if more else "")
