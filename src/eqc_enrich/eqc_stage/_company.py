"""What one EQC answer teaches `base_info`: the company it names, with the columns WorkDataHub's ETL fills.

From the top search item: `company_id`, `company_full_name`, `unite_code`, `type`, `_score`, `rank_score`;
the whole search body goes to `raw_data`, the name asked to `search_key_word`, `search` to `data_source`.
From findDepart's `businessInfodto`: `name` (company_name), `le_rep` (legal_person_name), `reg_cap`
(registerCaptial without 万元 / 万 / 元 and commas, as a number), `est_date` (registered_date), `province`,
`registered_status`, `organization_code`, `company_en_name`, `company_former_name`; the body goes to
`raw_business_info`. findLabels' body goes to `raw_biz_label`. What an answer does not carry stays None,
which the upsert never writes over a stored value.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from eqc_enrich.eqc import BusinessInfo, LabelSet, SearchHit, SearchResult
from eqc_enrich.store import CompanyRecord

__all__ = ["DATA_SOURCE_SEARCH", "company_record", "details_record", "parse_capital"]

DATA_SOURCE_SEARCH = "search"  # `data_source` of a company found by a name search, as their ETL writes it
_CAPITAL_NOISE = ("万元", "万", "元", ",", "，")


def company_record(
    asked: str,
    search: SearchResult | None,
    hit: SearchHit,
    business: BusinessInfo | None = None,
    labels: LabelSet | None = None,
) -> CompanyRecord:
    """The company a search answered (its top item), with the details fetched beside it, if any."""
    item = hit.raw
    return replace(
        details_record(hit.company_id, business, labels),
        search_key_word=asked or None,
        company_full_name=hit.full_name or None,
        unite_code=hit.unite_code or None,
        type=hit.match_type or None,
        score=_number(item.get("_score")),
        rank_score=_number(item.get("rank_score")),
        data_source=DATA_SOURCE_SEARCH,
        raw_data=search.raw if search is not None else None,
    )


def details_record(company_id: str, business: BusinessInfo | None, labels: LabelSet | None) -> CompanyRecord:
    """A company's findDepart and findLabels answers (either may be None: not fetched, or nothing known)."""
    info = business.raw.get("businessInfodto") if business is not None else None
    dto: dict[str, Any] = info if isinstance(info, dict) else {}
    return CompanyRecord(
        company_id=company_id,
        name=_text(dto.get("company_name")),
        le_rep=_text(dto.get("legal_person_name")),
        reg_cap=parse_capital(dto.get("registerCaptial")),
        est_date=_text(dto.get("registered_date")),
        province=_text(dto.get("province")),
        registered_status=_text(dto.get("registered_status")),
        organization_code=_text(dto.get("organization_code")),
        company_en_name=_text(dto.get("company_en_name")),
        company_former_name=_text(dto.get("company_former_name")),
        raw_business_info=business.raw if business is not None else None,
        raw_biz_label=labels.raw if labels is not None else None,
    )


def parse_capital(value: Any) -> float | None:
    """`80000.00万元` -> 80000.0 (the unit words and thousands separators dropped, as their parser does);
    None for anything that is not a finite number then."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    text = str(value).strip()
    for noise in _CAPITAL_NOISE:
        text = text.replace(noise, "")
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
