"""The README and docs/ as a newcomer reads them: every link leads to a page of this repository that exists,
and every value a row's `company_id_source` can carry is explained."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eqc_enrich import resolve
from eqc_enrich.keys import INDEX_PRIORITY
from eqc_enrich.store._schema import define

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
OUTSIDE = re.compile(r"(?<![\w.])\.\./|/work/|file://")  # a path climbing out of the repository, or the host's


def anchors(page: Path) -> set[str]:
    """The `#fragment` of each heading of a page, as GitHub makes them."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def broken_links(page: Path, root: Path) -> list[str]:
    """What is wrong with the links of one page: a target outside `root`, missing, or an unknown heading."""
    problems = []
    text = page.read_text(encoding="utf-8")
    problems += [f"{page.name}: mentions a path outside the repository: {m.group(0)!r} in {line.strip()!r}"
                 for line in text.splitlines() for m in OUTSIDE.finditer(line)]  # fmt: skip
    for target in LINK.findall(text):
        if target.startswith(("https://", "http://")):
            continue
        path_part, _, fragment = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.is_relative_to(root):
            problems.append(f"{page.name}: {target} leads outside the repository")
        elif not linked.is_file():
            problems.append(f"{page.name}: {target} does not exist")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            problems.append(f"{page.name}: {target} names no heading of {linked.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_leads_to_a_page_of_the_repository(page: Path) -> None:
    assert broken_links(page, ROOT) == []


def test_the_link_check_sees_a_link_out_of_the_repository(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("# Here\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "# Top\n[model](../shared/reference/performance-model.md) [gone](docs/gone.md) [here](docs/here.md#here)\n"
        "[nowhere](#no-such-heading) [top](#top) [site](https://example.invalid/x)\n",
        encoding="utf-8",
    )
    assert broken_links(page, tmp_path) == [
        "README.md: mentions a path outside the repository: '../' in "
        "'[model](../shared/reference/performance-model.md) [gone](docs/gone.md) [here](docs/here.md#here)'",
        "README.md: ../shared/reference/performance-model.md leads outside the repository",
        "README.md: docs/gone.md does not exist",
        "README.md: #no-such-heading names no heading of README.md",
    ]


def test_every_source_a_row_can_carry_is_explained_in_the_readme() -> None:
    """The table under "Running it on a real month": one row per value, nothing missing and nothing extra."""
    sources = {value for name, value in vars(resolve).items() if name.startswith("SOURCE_")}
    sources |= {resolve.index_source(kind) for kind in INDEX_PRIORITY}
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("| `company_id_source` | the id came from |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE)
    assert len(rows) == len(set(rows))
    assert set(rows) == sources


def test_the_readme_counts_and_names_every_table_the_grants_cover() -> None:
    """Once "the six tables above" stood beside nine: the count the grants refer to is the tool's, each named."""

    tool = [table.name for table in define(None).tool]
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    numbers = {"eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13}
    (state,) = re.findall(r"keeps its own state in (\w+) tables beside", text)
    (granted,) = re.findall(r"\| `SELECT, INSERT, UPDATE, DELETE` \| the tool's (\w+) tables above \|", text)
    assert numbers.get(state) == numbers.get(granted) == len(tool)
    section = text.split("## The production index\n", 1)[1].split("**Creating the tables, once.**", 1)[0]
    assert [name for name in tool if f"`{name}`" not in section] == []
