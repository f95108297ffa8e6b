"""Values as plain JSON with their real types: what the journal, `--log-json` and summaries record."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import PurePath
from typing import Any

from eqc_enrich._durations import RateLimit

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """A value as plain JSON with its real type, so a log shipper can filter on it without parsing reprs.

    Bools, numbers and None stay themselves (a non-finite float becomes None: JSON has no NaN); dataclasses
    become objects; a rate limit becomes the `10/60s` text the options take; durations become seconds;
    paths, dates and anything else become text.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, RateLimit):
        return str(value)
    if isinstance(value, Enum):
        return jsonable(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    return str(value)
