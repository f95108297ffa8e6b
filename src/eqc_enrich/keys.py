"""Lookup keys: normalized company names, temporary ids, id/plan-code cleaning and index lookup types.

Every index lookup, EQC query and temporary id starts from `normalize_name`, so that the many spellings
of one company in the source sheets ("公司A-已转出", "公司Ａ", " 公司A ") meet on one key. The key must be a
fixed point (normalizing it again changes nothing) and must never eat part of a real name.

A key has at most `MAX_KEY_LENGTH` (255) characters, the width of the index's `lookup_key` column. A longer
normalized name becomes its first 200 characters, `#`, and the first 16 hex digits (upper case) of the
SHA-256 of the whole normalized name (UTF-8): the same long name gives the same key every run, two long
names that share their first 200 characters still get different keys, and the shortened key is itself a
fixed point of `normalize_name`. `is_shortened_key` tells such keys apart: they can be looked up and
stored, but are not a name EQC can be asked about.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import math
import re
from decimal import Decimal
from enum import StrEnum
from typing import Final

import polars as pl

__all__ = [
    "ENTERPRISE_TYPES",
    "ID_PLACEHOLDERS",
    "INDEX_PRIORITY",
    "MAX_KEY_LENGTH",
    "NAME_PLACEHOLDERS",
    "PYTHON_WHITESPACE",
    "STATUS_MARKERS",
    "LookupType",
    "clean_company_id",
    "clean_plan_code",
    "is_real_company_id",
    "is_shortened_key",
    "is_temp_company_id",
    "normalize_name",
    "normalize_names",
    "plan_customer_key",
    "temp_company_id",
]


class LookupType(StrEnum):
    """The `lookup_type` column of the enrichment index; the values are stored, so they never change."""

    PLAN_CODE = "plan_code"
    CUSTOMER_NAME = "customer_name"
    PLAN_CUSTOMER = "plan_customer"
    FORMER_NAME = "former_name"
    ACCOUNT_NAME = "account_name"
    ACCOUNT_NUMBER = "account_number"


INDEX_PRIORITY: Final[tuple[LookupType, ...]] = (
    LookupType.PLAN_CODE,
    LookupType.CUSTOMER_NAME,
    LookupType.PLAN_CUSTOMER,
    LookupType.FORMER_NAME,
)
"""Index lookup order per row: the first type that answers wins (older account_* rows are not asked)."""

# --- vocabulary -------------------------------------------------------------------------------------

NAME_PLACEHOLDERS: Final[frozenset[str]] = frozenset({"NULL", "空白", "无", "N/A", "NAN", "NONE", "-", "--", "—", "——"})
"""Cell values that mean "no name" (compared after whitespace removal and ASCII upper-casing)."""

ID_PLACEHOLDERS: Final[frozenset[str]] = frozenset({"N", "NA", "N/A", "NONE", "NULL", "NAN"})
"""Values of an id column that only say "no id"."""

_PLAN_PLACEHOLDERS: Final[frozenset[str]] = ID_PLACEHOLDERS | NAME_PLACEHOLDERS

_NO_TEMP_ID: Final[frozenset[str]] = frozenset({"", "0", "空白"})

STATUS_MARKERS: Final[tuple[str, ...]] = tuple(
    sorted(
        {
            "已转出",
            "待转出",
            "终止",
            "转出",
            "转移",
            "保留",
            "暂停",
            "注销",
            "清算",
            "解散",
            "吊销",
            "撤销",
            "停业",
            "歇业",
            "关闭",
            "迁出",
            "迁入",
            "变更",
            "合并",
            "分立",
            "破产",
            "重整",
            "托管",
            "接管",
            "整顿",
            "清盘",
            "退出",
            "终结",
            "结束",
            "完结",
            "已作废",
            "作废",
            "存量",
            "原",
            "转移终止",
            "已终止",
            "保留账户",
            "已转移终止",
            "本部",
            "未使用",
            "集合",
            "企业年金计划",
        },
        key=lambda marker: (-len(marker), marker),
    )
)
"""Status words the source sheets attach to a name; longest first so a regex prefers `已转出` to `转出`."""

_MARKER_SET: Final[frozenset[str]] = frozenset(STATUS_MARKERS)

ENTERPRISE_TYPES: Final[tuple[str, ...]] = (
    "有限公司",
    "普通合伙",
    "有限合伙",
    "特殊普通合伙",
    "个人独资",
    "全民所有制",
    "集体所有制",
    "股份合作",
    "个体工商户",
)
"""A trailing bracket naming one of these is part of the legal name, so it is kept."""

_SEPARATORS: Final[str] = "-_~—–―‐‑‒−〜"
"""Characters that glue a status marker or a suffix to a name (`——` is two of them)."""

_TRAILING_JUNK: Final[str] = _SEPARATORS + ".。…·"
_LIST_SPLIT: Final = re.compile(r"[，,、;；/]")
_MAX_LIST_WORD: Final[int] = 6

# --- character canonicalization ---------------------------------------------------------------------


def _build_char_map() -> dict[int, str]:
    """One idempotent per-character map: full-width ASCII -> half-width, a-z -> A-Z, round brackets -> （）."""
    table: dict[int, str] = {}
    for code in range(0x21, 0x7F):
        table[code] = chr(code)
        table[code + 0xFEE0] = chr(code)
    for code in range(ord("a"), ord("z") + 1):
        table[code] = table[code + 0xFEE0] = chr(code).upper()
    for opening in "(（﹙":
        table[ord(opening)] = "（"
    for closing in ")）﹚":
        table[ord(closing)] = "）"
    return {code: char for code, char in table.items() if chr(code) != char}


_CHAR_MAP: Final[dict[int, str]] = _build_char_map()

# --- compiled patterns ------------------------------------------------------------------------------

_SEP: Final[str] = f"[{re.escape(_SEPARATORS)}]"
_MARKER_ALT: Final[str] = "|".join(re.escape(marker) for marker in STATUS_MARKERS)

_NEEDS_MAPPING: Final = re.compile("[" + re.escape("".join(map(chr, sorted(_CHAR_MAP)))) + "]")
"""Most names need no mapping; finding that out is cheaper than `str.translate` on every name."""
_INVISIBLE_RANGES: Final[tuple[tuple[int, int], ...]] = (
    (0x00, 0x1F),  # the C0 control characters (a NUL among them)
    (0x7F, 0x9F),  # DEL and the C1 control characters
    (0x061C, 0x061C),  # Arabic letter mark
    (0x200B, 0x200F),  # zero-width space, joiners, left-to-right and right-to-left marks
    (0x202A, 0x202E),  # bidirectional embeddings and overrides
    (0x2060, 0x2064),  # word joiner and the invisible operators
    (0x2066, 0x2069),  # bidirectional isolates
    (0xFEFF, 0xFEFF),  # zero-width no-break space (a byte-order mark)
)
"""The characters besides whitespace that nobody sees; one list for the text pass and the column pass."""
_INVISIBLE: Final = re.compile(
    "[\\s" + "".join(f"\\U{low:08x}-\\U{high:08x}" for low, high in _INVISIBLE_RANGES) + "]+"
)
"""Whitespace, control characters (a NUL, which PostgreSQL cannot store, among them), zero-width characters and
the bidirectional marks: nothing a reader sees, so two spellings that differ only in them meet on one key."""
_NOISE: Final = re.compile('[「」『』"]|及下属子企业|（）')
_END_SUFFIX: Final = re.compile(rf"(?:（团托）|{_SEP}+(?:养老|福利|{_MARKER_ALT})|(?<![A-Z0-9])(?:{_SEP}+[A-Z0-9]+)+)$")
_START_MARKER: Final = re.compile(rf"(?:{_MARKER_ALT}){_SEP}+")
_START_GROUP: Final = re.compile(rf"（([^（）]*)）{_SEP}*")


# --- the passes -------------------------------------------------------------------------------------


def _canonical_chars(text: str) -> str:
    """Half-width ASCII, upper case, full-width round brackets, nothing invisible: done once, never undone."""
    if _NEEDS_MAPPING.search(text) is not None:
        text = text.translate(_CHAR_MAP)
    return _INVISIBLE.sub("", text)


def _is_list_word(word: str) -> bool:
    """A short word hung on a marker, like `原单一`: allowed inside a status list, never alone."""
    return len(word) <= _MAX_LIST_WORD and (word.startswith(STATUS_MARKERS) or word.endswith(STATUS_MARKERS))


def _is_status_group(content: str) -> bool:
    """True for bracket contents that only carry status: `已转出`, or a list like `原单一，已转出`."""
    if content in _MARKER_SET:
        return True
    words = _LIST_SPLIT.split(content)
    if len(words) < 2 or not any(word in _MARKER_SET for word in words):
        return False
    return all(word in _MARKER_SET or _is_list_word(word) for word in words)


def _nested_group_start(text: str) -> int:
    """Index of the `（` matching the final `）` when groups nest, or -1 when brackets do not balance."""
    depth = 0
    for index in range(len(text) - 1, -1, -1):
        if text[index] == "）":
            depth += 1
        elif text[index] == "（":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _trailing_group_start(text: str) -> int:
    """Index of the `（` opening the group that ends `text`; -1 if there is none or it is the whole text."""
    if not text.endswith("）"):
        return -1
    start = text.rfind("（")
    if "）" in text[start + 1 : -1]:
        start = _nested_group_start(text)
    return start if start > 0 else -1


def _drop_trailing_group(text: str) -> str:
    """Drop a trailing `（...）` annotation (`（集团）`, `（已转出）`) but keep a legal form like `（普通合伙）`."""
    start = _trailing_group_start(text)
    if start < 0:
        return text
    content = text[start + 1 : -1]
    if not _is_status_group(content) and any(kind in content for kind in ENTERPRISE_TYPES):
        return text
    return text[:start]


def _drop_leading_status(text: str) -> str:
    """Remove a status prefix that is separated (`已转出-`) or bracketed (`（已转出）`); a bare `原平市` stays."""
    marker = _START_MARKER.match(text)
    if marker is not None:
        return text[marker.end() :]
    group = _START_GROUP.match(text)
    if group is not None and _is_status_group(group.group(1)):
        return text[group.end() :]
    return text


def _placeholder_to_empty(text: str) -> str:
    """Placeholders are checked every pass, so that `NULL-已转出` ends as empty, not as `NULL`."""
    return "" if text in NAME_PLACEHOLDERS else text


def _strip_pass(text: str) -> str:
    """One sweep of the deleting rules; it only ever removes characters, so repeating it terminates."""
    text = _placeholder_to_empty(text)
    text = _NOISE.sub("", text)
    text = _END_SUFFIX.sub("", text)
    text = _drop_leading_status(text)
    text = _drop_trailing_group(text)
    return _placeholder_to_empty(text.rstrip(_TRAILING_JUNK))


@functools.lru_cache(maxsize=1 << 17)
def _normalize(text: str) -> str:
    """Canonicalize, strip until a fixed point (what makes `normalize_name` idempotent), then bound the length."""
    current = _canonical_chars(text)
    while True:
        following = _strip_pass(current)
        if following == current:
            return _bounded_key(current)
        current = following


def normalize_name(text: str | None) -> str:
    """The lookup key of a customer name; "" when there is no usable name; at most `MAX_KEY_LENGTH` characters."""
    if text is None:
        return ""
    return _normalize(text)


# --- the same, for a column at once -------------------------------------------------------------------


PYTHON_WHITESPACE: Final[str] = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Every character Python's `\\s` matches in a text (tests/test_keys.py checks the list against `re`)."""
_INVISIBLE_CLASS: Final[str] = (
    "["
    + "".join(f"\\x{{{ord(char):x}}}" for char in PYTHON_WHITESPACE)
    + "".join(f"\\x{{{low:x}}}-\\x{{{high:x}}}" for low, high in _INVISIBLE_RANGES)
    + "]+"
)
"""`_INVISIBLE` in the syntax of polars' regex engine, whose `\\s` is not Python's."""
_STRIP_TRIGGERS: Final[str] = "[" + re.escape('「」『』"（）' + _SEPARATORS) + "]|及下属子企业|[.。…·]$"
"""What a deleting rule needs to find in a canonical text before it can change it: a bracket, a separator,
noise, a trailing dot. A text with none of these (and no placeholder, and short enough) is its own key."""


def normalize_names(names: pl.Series) -> pl.Series:
    """`normalize_name` of every value, each distinct value once, the common case without a Python call.

    The character pass (half-width, upper case, brackets, no whitespace) runs over the distinct values as
    polars string operations; only values in which a deleting rule could find something (a bracket, a
    separator, noise, a trailing dot, a placeholder, a length over `MAX_KEY_LENGTH`) go through
    `normalize_name`, the single definition of the key, so both give the same key for every text. Nulls
    give "".
    """
    distinct = names.cast(pl.String).drop_nulls().unique()
    canonical = distinct.str.replace_many([chr(code) for code in _CHAR_MAP], list(_CHAR_MAP.values())).str.replace_all(
        _INVISIBLE_CLASS, ""
    )
    needs_rules = (
        canonical.str.contains(_STRIP_TRIGGERS)
        | canonical.is_in(list(NAME_PLACEHOLDERS))
        | (canonical.str.len_chars() > MAX_KEY_LENGTH)
    )
    keys = canonical.to_list()
    for index in needs_rules.arg_true().to_list():
        keys[index] = normalize_name(distinct[index])
    mapped = pl.Series(values=keys, dtype=pl.String)
    return names.cast(pl.String).replace_strict(distinct, mapped, default="", return_dtype=pl.String)


# --- bounded keys -----------------------------------------------------------------------------------

MAX_KEY_LENGTH: Final[int] = 255
"""The longest key, the width of the index's `lookup_key` column; longer names are shortened (module doc)."""

_KEY_PREFIX_LENGTH: Final[int] = 200
_KEY_HASH_DIGITS: Final[int] = 16
_KEY_HASH_SEPARATOR: Final[str] = "#"
_SHORTENED_KEY: Final = re.compile(
    rf".{{{_KEY_PREFIX_LENGTH}}}{re.escape(_KEY_HASH_SEPARATOR)}[0-9A-F]{{{_KEY_HASH_DIGITS}}}", re.DOTALL
)


def _bounded_key(key: str) -> str:
    """A key that fits the index column and still tells apart long names a plain cut would merge.

    Normalizing the result changes nothing: the prefix is part of a fixed point, and the `#` plus hex
    digits that now end it match no rule that looks at the end of a name.
    """
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:_KEY_HASH_DIGITS].upper()
    return f"{key[:_KEY_PREFIX_LENGTH]}{_KEY_HASH_SEPARATOR}{digest}"


def is_shortened_key(key: str) -> bool:
    """Whether `key` is the shortened form of a name too long for the index, which is no name EQC knows.

    A real name of exactly that shape (200 characters, `#`, 16 upper-case hex digits) would be taken for
    one too; such names do not occur in the source sheets.
    """
    return _SHORTENED_KEY.fullmatch(key) is not None


# --- temporary ids ----------------------------------------------------------------------------------


def temp_company_id(name: str | None, salt: str) -> str | None:
    """A stable stand-in id for a name nobody could resolve, so that no row is left without one."""
    if name is None or name.strip() in _NO_TEMP_ID:
        return None
    message = normalize_name(name) or "__empty__"
    digest = hmac.new(salt.encode("utf-8"), message.encode("utf-8"), hashlib.sha1).digest()
    return "IN" + base64.b32encode(digest[:10]).decode("ascii").rstrip("=")


_TEMP_ID = re.compile(r"IN[A-Z2-7]{16}")


def is_temp_company_id(value: str) -> bool:
    """Whether an id has the shape `temp_company_id` gives: a stand-in, never to be learned as a company."""
    return _TEMP_ID.fullmatch(value.strip()) is not None


# --- ids and plan codes -----------------------------------------------------------------------------


def _number_text(value: float | Decimal) -> str | None:
    """Excel hands integer codes over as floats (600000001.0): print them as the integers they are."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else str(value)
    if not value.is_finite():
        return None
    return str(int(value)) if value == value.to_integral_value() else str(value)


def _cell_text(value: object) -> str | None:
    """Stripped text of a spreadsheet cell, or None when the cell holds nothing (None, NaN, a bool)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float | Decimal):
        return _number_text(value)
    return str(value).strip()


def clean_company_id(value: object) -> str | None:
    """The company id a cell really holds, or None for blanks and placeholders like `N/A`."""
    text = _cell_text(value)
    if not text or text.upper() in ID_PLACEHOLDERS:
        return None
    return text


def is_real_company_id(value: object) -> bool:
    """Whether a cell holds an id worth trusting (and learning back into the index)."""
    return clean_company_id(value) is not None


def clean_plan_code(value: object) -> str:
    """The raw plan code as stored in the index (`plan_code` keys are not normalized); "" when absent."""
    text = _cell_text(value)
    if not text or text.upper() in _PLAN_PLACEHOLDERS:
        return ""
    return text


def plan_customer_key(plan_code: str, normalized_name: str) -> str:
    """The `plan_customer` lookup key: one company can sit under several plans and vice versa."""
    return f"{plan_code}|{normalized_name}"
