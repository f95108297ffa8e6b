"""Folding a name before it is parsed: the lookup key (width, brackets, case), then traditional to simplified.

The key is already width-folded (`keys.normalize_name`); what is left is the script. OpenCC's own binding
(`opencc`, the project's C++ converter) turns traditional characters into simplified ones with its phrase
tables, so a phrase whose characters convert differently together is converted as a phrase. Both sides of a
comparison are folded the same way, and a folded name is only compared, never stored, so a conversion that
is not what a person would write (a simplified `乾` becoming `干`) changes no answer.
"""

from __future__ import annotations

import re
from typing import Final

import opencc

from eqc_enrich.keys import normalize_name

__all__ = ["fold_key", "fold_name"]

_CONVERTER: Final = opencc.OpenCC("t2s")


def _changing_characters() -> re.Pattern[str]:
    """The CJK characters OpenCC changes on their own: a name with none of them is already simplified.

    Converting every name costs about 8 µs; most names are plain simplified Chinese, and telling them apart
    by one regex search is ten times cheaper. The characters are converted one per line, so no phrase rule
    joins two of them.
    """
    characters = [chr(code) for code in range(0x3400, 0xA000)]
    converted = _CONVERTER.convert("\n".join(characters)).split("\n")
    changing = [c for c, s in zip(characters, converted, strict=True) if c != s]
    return re.compile("[" + "".join(changing) + "]")


_TRADITIONAL: Final = _changing_characters()


def fold_name(name: str) -> str:
    """The lookup key of `name` in simplified characters; normalizing the result again changes nothing."""
    return fold_key(normalize_name(name))


def fold_key(key: str) -> str:
    """A lookup key (a fixed point of `normalize_name`) in simplified characters."""
    if _TRADITIONAL.search(key) is None:
        return key
    return normalize_name(_CONVERTER.convert(key))
