"""Typed views of EQC answers; each keeps the raw JSON so it can be stored as it came."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JsonObject = dict[str, Any]

EXACT_MATCH = "全称精确匹配"
FUZZY_MATCH = "模糊匹配"
PINYIN_MATCH = "拼音"

_CONFIDENCE_BY_MATCH = {EXACT_MATCH: 1.00, FUZZY_MATCH: 0.80, PINYIN_MATCH: 0.60}
_OTHER_MATCH_CONFIDENCE = 0.70


def match_confidence(match_type: str | None) -> float:
    """Confidence the enrichment index records for an EQC match type."""
    return _CONFIDENCE_BY_MATCH.get(match_type or "", _OTHER_MATCH_CONFIDENCE)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def split_former_names(value: Any) -> tuple[str, ...]:
    """`company_former_name` is one comma-separated string (half- or full-width commas)."""
    text = _text(value).replace("，", ",")
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One usable item of a search answer."""

    company_id: str
    full_name: str
    match_type: str
    confidence: float
    unite_code: str
    former_names: tuple[str, ...]
    raw: JsonObject = field(repr=False, compare=False)

    @classmethod
    def from_item(cls, item: JsonObject) -> SearchHit | None:
        """None for an item without a company id or full name: the API documents those as unusable."""
        company_id = _text(item.get("companyId"))
        full_name = _text(item.get("companyFullName"))
        if not company_id or not full_name:
            return None
        match_type = _text(item.get("type"))
        return cls(
            company_id=company_id,
            full_name=full_name,
            match_type=match_type,
            confidence=match_confidence(match_type),
            unite_code=_text(item.get("unite_code")),
            former_names=split_former_names(item.get("company_former_name")),
            raw=item,
        )


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The answer to a name search; `best` is None when EQC knows no such company."""

    key: str
    hits: tuple[SearchHit, ...]
    total: int
    raw: JsonObject = field(repr=False, compare=False)

    @property
    def best(self) -> SearchHit | None:
        return self.hits[0] if self.hits else None


@dataclass(frozen=True, slots=True)
class BusinessInfo:
    """findDepart's `businessInfodto`: the registry record (工商信息) of one company."""

    company_id: str
    company_name: str
    credit_code: str
    registered_status: str
    former_names: tuple[str, ...]
    raw: JsonObject = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Label:
    category: str
    company_id: str
    levels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LabelSet:
    """findLabels' answer; a label without its own company id belongs to the company asked for."""

    company_id: str
    labels: tuple[Label, ...]
    raw: JsonObject = field(repr=False, compare=False)


def parse_search(key: str, body: Any) -> SearchResult:
    items = body.get("list") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ValueError("search answer has no `list`")
    hits = tuple(hit for item in items if isinstance(item, dict) and (hit := SearchHit.from_item(item)))
    total = body.get("total")
    return SearchResult(key=key, hits=hits, total=int(total) if isinstance(total, int) else len(items), raw=body)


def parse_business_info(body: Any) -> BusinessInfo | None:
    if not isinstance(body, dict):
        raise ValueError("findDepart answer is not an object")
    info = body.get("businessInfodto")
    if not info:
        return None
    if not isinstance(info, dict):
        raise ValueError("`businessInfodto` is not an object")
    return BusinessInfo(
        company_id=_text(info.get("company_id")),
        company_name=_text(info.get("company_name")),
        credit_code=_text(info.get("credit_code")),
        registered_status=_text(info.get("registered_status")),
        former_names=split_former_names(info.get("company_former_name")),
        raw=body,
    )


def parse_labels(company_id: str, body: Any) -> LabelSet:
    if not isinstance(body, dict):
        raise ValueError("findLabels answer is not an object")
    groups = body.get("labels")
    if groups is None:
        groups = []
    if not isinstance(groups, list):
        raise ValueError("`labels` is not a list")
    labels: list[Label] = []
    for group in groups:
        if not isinstance(group, dict):
            raise ValueError("a label group is not an object")
        category = _text(group.get("type"))
        for entry in group.get("labels") or []:
            if not isinstance(entry, dict):
                raise ValueError("a label is not an object")
            levels = tuple(_text(entry.get(f"lv{n}Name")) for n in range(1, 5))
            owner = _text(entry.get("companyId")) or company_id
            labels.append(Label(category=category, company_id=owner, levels=tuple(v for v in levels if v)))
    return LabelSet(company_id=company_id, labels=tuple(labels), raw=body)
