"""A name taken apart: region, trade name (字号), industry words, organisation form, branch with its place, notes.

The parts are read from the folded key (`fold_name`: width, brackets, case, simplified characters):

- bracketed groups come out first: a region (`华润（北京）科技`), a form (`（普通合伙）`), `（集团）`, or a note;
- a branch (`分公司`, `分行`, `支行`, `营业部`, ...) at the end, with its place: what stands between the
  organisation form and the branch word (`有限公司北京分公司`), or a region just before it (`工商银行北京分行`);
- the organisation form at the end, mapped to its canonical form (`有限责任公司` is `有限公司`), and `集团`
  before it;
- the region at the start (the most specific of a chain such as `浙江杭州`), unless it is all there is or
  the name has one in brackets (`阳江（台州）建设`: then it starts with its trade name);
- what is left is the core: industry words are the longest run of known words that ends it, the trade name
  is the rest (never empty: a core of industry words only keeps its first word as the trade name).

The same name always parses the same way, and two names with equal parts are the same name up to the rules
that cannot change the company (form equivalences, the region's place and brackets, width, script).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

from eqc_enrich.keys import normalize_name
from eqc_enrich.match_stage._fold import fold_key
from eqc_enrich.match_stage._regions import leading_region, region_label, trailing_region, within
from eqc_enrich.match_stage._vocabulary import BRACKET_FORMS, BRANCH_KINDS, FORMS, GROUP, INDUSTRY_WORDS

__all__ = ["NameParts", "parse_key", "parse_name"]

_GROUPS: Final = re.compile(r"（([^（）]*)）")
_FORMS_LONGEST_FIRST: Final[tuple[str, ...]] = tuple(sorted(FORMS, key=len, reverse=True))
_FORM_ANY: Final = re.compile("|".join(sorted((f for f in FORMS if f.endswith("公司")), key=len, reverse=True)))
_BRANCHES_LONGEST_FIRST: Final[tuple[str, ...]] = tuple(sorted(BRANCH_KINDS, key=len, reverse=True))
_LONGEST_WORD: Final[int] = max(map(len, INDUSTRY_WORDS))
_INDUSTRY_RUN_REVERSED: Final = re.compile(
    "(?:" + "|".join(word[::-1] for word in sorted(INDUSTRY_WORDS, key=lambda w: (-len(w), w))) + ")+"
)  # matched on the reversed text: anchored at its start, the end of the name, longest word first


@dataclass(frozen=True, slots=True)
class NameParts:
    """The parts of one name. `industry_known` says the industry part was read from known words; when it is
    False the industry part is empty and the trade name may carry an industry word the list lacks."""

    key: str  # the folded key the parts were read from
    region: str = ""  # the region's label ("" when the name has none)
    trade: str = ""
    industry: str = ""
    form: str = ""  # canonical organisation form ("" when none is written)
    group: bool = False  # 集团
    branch: str = ""  # the branch's kind ("" for a head office)
    branch_place: str = ""  # its place: a region's label, or the words as written
    notes: tuple[str, ...] = ()

    @property
    def core(self) -> str:
        """Trade name and industry words: what is left when region, form, branch and notes are taken away."""
        return self.trade + self.industry

    @property
    def industry_known(self) -> bool:
        return bool(self.industry)


def parse_name(name: str) -> NameParts:
    """The parts of a name as a sheet writes it."""
    return parse_key(normalize_name(name))


@functools.lru_cache(maxsize=1 << 16)
def parse_key(key: str) -> NameParts:
    """The parts of a lookup key (`normalize_name`'s output, as the index holds them)."""
    key = fold_key(key)
    text, region, form, group, notes = _brackets(key)
    text, branch, place = _branch(text)
    form_text = _ending(text, _FORMS_LONGEST_FIRST)
    if form_text:
        written = FORMS[form_text]
        form = f"{written}（{form}）" if form else written  # `事务所（特殊普通合伙）`
        text = text[: -len(form_text)]
    if text.endswith(GROUP) and len(text) > len(GROUP):
        group, text = True, text[: -len(GROUP)]
    if not region:  # `阳江（台州）建设`: with a region in brackets, the name starts with its trade name
        region, text = _leading_region(text)
    trade, industry = _split_core(text)
    return NameParts(key, region, trade, industry, form, group, branch, place, tuple(sorted(notes)))


def _brackets(key: str) -> tuple[str, str, str, bool, tuple[str, ...]]:
    """The key without its bracketed groups, and what they said: a region, a form, 集团, other notes."""
    region = form = ""
    group = False
    notes: list[str] = []
    for content in _GROUPS.findall(key):
        label = region_label(content)
        if label is not None and not region:
            region = label
        elif content in BRACKET_FORMS:
            form = BRACKET_FORMS[content]
        elif content == GROUP:
            group = True
        elif content:
            notes.append(content)
    text = _GROUPS.sub("", key).replace("（", "").replace("）", "")
    return text, region, form, group, tuple(notes)


def _branch(text: str) -> tuple[str, str, str]:
    """(the name before its branch part, the branch's kind, its place)."""
    kind = _ending(text, _BRANCHES_LONGEST_FIRST)
    if not kind or kind == text:
        return text, "", ""
    before = text[: -len(kind)]
    forms = list(_FORM_ANY.finditer(before))
    if forms:
        end = forms[-1].end()
        return before[:end], kind, _place(before[end:])
    found = trailing_region(before)
    if found is not None and found[1] < len(before):
        return before[: -found[1]], kind, found[0]
    return before, kind, ""


def _ending(text: str, words: tuple[str, ...]) -> str:
    """The longest of `words` that ends `text` ("" for none); one C-level check first, as most names have none."""
    if not text.endswith(words):
        return ""
    return next(word for word in words if text.endswith(word))


def _place(text: str) -> str:
    label = region_label(text)
    return label if label is not None else text


def _leading_region(text: str) -> tuple[str, str]:
    """The most specific region of the chain the text starts with (`浙江杭州`: each lies in the one before),
    and the rest; a region that would leave nothing, or that does not lie in the one before it, is the trade
    name instead (`中山有限公司`, `内蒙古金华建材`)."""
    region = ""
    while True:
        found = leading_region(text)
        if found is None or found[1] == len(text) or (region and not within(found[0], region)):
            return region, text
        region, text = found[0], text[found[1] :]


def _segment(text: str) -> tuple[str, str]:
    """(what is left, the longest run of industry words ending `text`)."""
    run = _INDUSTRY_RUN_REVERSED.match(text[::-1])
    if run is None:
        return text, ""
    start = len(text) - run.end()
    return text[:start], text[start:]


def _split_core(text: str) -> tuple[str, str]:
    trade, industry = _segment(text)
    if trade or not industry:
        return trade, industry
    # industry words only: the first of them is the trade name (`科技发展` -> 科技 + 发展)
    for length in range(min(_LONGEST_WORD, len(industry)), 0, -1):
        if industry[:length] in INDUSTRY_WORDS and length < len(industry):
            return industry[:length], industry[length:]
    return industry, ""
