"""Override files on disk: the one YAML reader every overrides file passes, and WorkDataHub's mapping folder.

Their folder (`config/mappings/company_id/`, or the folder `WDH_MAPPINGS_DIR` names, with or without the
`company_id/` level) holds three flat maps of `key: "company_id"`, applied in this order on the rows still
open: `company_id_overrides_plan.yml` and `company_id_overrides_hardcode.yml` by the plan-code column, then
`company_id_overrides_name.yml` by the customer-name column. Keys match the row's value exactly (the plan
code as cleaned, the name as normalized): they are only trimmed, never normalized, so a key their resolver
would not match matches nothing here either. A value is a company id, or `__EMPTY__`: the row's id stays
empty and resolution stops there. A missing file is an empty level; a file that cannot be read, is not a
flat map, or has a value that is neither an id nor `__EMPTY__` is a one-line error, never an empty map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from eqc_enrich._errors import ConfigError
from eqc_enrich._text import shown_text
from eqc_enrich.keys import clean_company_id

__all__ = [
    "EMPTY_ID",
    "FOLDER_FILES",
    "MAPPINGS_SUBFOLDER",
    "MAX_OVERRIDES_BYTES",
    "FolderMaps",
    "load_mapping_folder",
    "mapping_folder",
    "read_yaml",
]

EMPTY_ID: Final = "__EMPTY__"
"""An override value meaning: this row's company id stays empty, and nothing after the overrides is asked."""

MAPPINGS_SUBFOLDER: Final = "company_id"
FOLDER_FILES: Final[tuple[tuple[str, str], ...]] = (
    ("plan", "company_id_overrides_plan.yml"),
    ("hardcode", "company_id_overrides_hardcode.yml"),
    ("name", "company_id_overrides_name.yml"),
)
"""(level, file name) in the order their resolver applies them."""


def read_yaml(path: Path) -> Any:
    """The parsed YAML of an overrides file; unreadable or invalid files are one-line `ConfigError`s.

    Every overrides file (ours, and each file of their folder) is read here, so the bounds hold for all of
    them: at most `MAX_OVERRIDES_BYTES` (a device or a pipe named by mistake never ends), no aliases, and an
    error message of a line.
    """
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_OVERRIDES_BYTES + 1)
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"overrides {path}: not UTF-8 text (byte {exc.start}); save the YAML as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"overrides {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_OVERRIDES_BYTES:
        raise ConfigError(
            f"overrides {path}: more than {MAX_OVERRIDES_BYTES >> 20} MiB; an overrides file is a "
            "hand-kept map of a few thousand entries"
        )
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader that refuses aliases
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: e.g. a date like 2024-13-45
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"overrides {path}: not valid YAML: {shown_text(reason, 200)}") from exc


MAX_OVERRIDES_BYTES = 16 << 20
"""The largest overrides file read: a hand-kept map of hundreds of thousands of entries still fits."""


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases: a handful of nested ones (`b: [*a, *a, ...]`) expand to
    gigabytes, or to an error message of megabytes."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            anchor = shown_text(str(getattr(event, "anchor", "")), 40)
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{anchor}) are not allowed in an overrides file", event.start_mark
            )
        return super().compose_node(parent, index)


@dataclass(frozen=True, slots=True)
class FolderMaps:
    """The three levels of their folder, key -> company id (or `EMPTY_ID`)."""

    folder: Path
    plan: dict[str, str] = field(default_factory=dict)
    hardcode: dict[str, str] = field(default_factory=dict)
    name: dict[str, str] = field(default_factory=dict)

    @property
    def plan_codes(self) -> dict[str, str]:
        """Both plan-code levels as one map: `plan` first, so its entry wins where both name a code."""
        return {**self.hardcode, **self.plan}


def mapping_folder(path: Path) -> Path | None:
    """The folder that holds their files: `path/company_id/` (the mappings folder), or `path` itself (the
    `company_id/` folder, as one of their loaders reads `WDH_MAPPINGS_DIR`); None when neither holds any."""
    for folder in (path / MAPPINGS_SUBFOLDER, path):
        if any((folder / name).is_file() for _, name in FOLDER_FILES):
            return folder
    return None


def load_mapping_folder(path: Path) -> FolderMaps:
    folder = mapping_folder(path)
    if folder is None:
        names = ", ".join(name for _, name in FOLDER_FILES)
        raise ConfigError(
            f"overrides {path}: a folder, but neither it nor {path / MAPPINGS_SUBFOLDER} holds any of {names} "
            "(WorkDataHub's mapping folder); give an overrides YAML file, or that folder"
        )
    levels = {level: _flat_map(folder / name) for level, name in FOLDER_FILES if (folder / name).is_file()}
    return FolderMaps(folder, **levels)


def _flat_map(path: Path) -> dict[str, str]:
    """One of their files: `key: company_id` pairs (`key: "__EMPTY__"` too); comments only means no entries."""
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"overrides {path}: expected a flat map of key: company_id, got a {type(data).__name__}")
    result: dict[str, str] = {}
    for key, value in data.items():
        text = str(key).strip() if isinstance(key, str | int) and not isinstance(key, bool) else ""
        company_id = _company_id(value)
        if not text or company_id is None:
            raise ConfigError(f"overrides {path}: entry {key!r}: {value!r} is not a company id or {EMPTY_ID}")
        result[text] = company_id
    return result


def _company_id(value: Any) -> str | None:
    """A company id as text (their plan loader takes numbers too), `EMPTY_ID`, or None for anything else."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return EMPTY_ID if text == EMPTY_ID else clean_company_id(text)
