"""The key forms the old tools wrote into the shared index, so that their rows are still found.

Our `normalize_name` fixed the old normalizer's defects, which means a row the old tools stored under a
damaged key is missed by the canonical key. A compatible reader looks up the canonical key first and,
for names it misses, these old forms; it never writes under one (see "Keys the old tools wrote" in
production-index.md).
"""

from __future__ import annotations

import functools

from eqc_enrich.keys import (
    _SEPARATORS,
    MAX_KEY_LENGTH,
    STATUS_MARKERS,
    _canonical_chars,
    _strip_pass,
    is_shortened_key,
    normalize_name,
)

__all__ = ["legacy_name_keys"]


def legacy_name_keys(raw_name: str) -> list[str]:
    """The old key forms of a raw name, most likely first, without the canonical key and without repeats.

    - the old normalizer's single pass, which left inner markers (`中国平安-已转出（集团）` -> `中国平安-已转出`);
    - a start marker removed although no separator followed it (`原平市鑫源煤业有限公司` -> `平市鑫源煤业有限公司`);
    - a leading bracketed group removed whatever it held (`（北京）科技有限公司` -> `科技有限公司`);
    - the raw name with only surrounding whitespace stripped (the queue worker's keys, and the rows
      stored un-normalized).

    A form no index row can have is left out: one longer than the key column (a name of megabytes would
    otherwise be a query parameter of megabytes) or holding a NUL (which PostgreSQL cannot store).
    """
    return list(_legacy_name_keys(raw_name))


@functools.lru_cache(maxsize=1 << 16)
def _legacy_name_keys(raw_name: str) -> tuple[str, ...]:
    canonical = normalize_name(raw_name)
    if is_shortened_key(canonical):  # every old form is at least as long as the whole name: none fits the column
        return ()
    one_pass = _strip_pass(_canonical_chars(raw_name))
    forms: list[str] = []
    for base in dict.fromkeys((one_pass, canonical)):
        forms.extend((base, _without_start_marker(base), _without_leading_group(base)))
    forms.append(raw_name.strip())
    return tuple(form for form in dict.fromkeys(forms) if form and form != canonical and _storable(form))


def _storable(form: str) -> bool:
    return len(form) <= MAX_KEY_LENGTH and "\x00" not in form


def _without_start_marker(key: str) -> str:
    """`key` less a status marker it starts with (the longest), as the old rule cut it even without a separator."""
    for marker in STATUS_MARKERS:  # longest first
        if key.startswith(marker) and len(key) > len(marker):
            return key[len(marker) :].lstrip(_SEPARATORS)
    return key


def _without_leading_group(key: str) -> str:
    """`key` less a leading `（...）` group, whatever it held."""
    if not key.startswith("（"):
        return key
    end = key.find("）")
    rest = key[end + 1 :].lstrip(_SEPARATORS) if end > 0 else ""
    return rest or key
