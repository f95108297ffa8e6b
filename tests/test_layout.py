"""The architecture, checked: layers that import only downwards, no cycles, packages that keep their insides.

Layers, lowest first (a module may import its own layer and the ones below, never above):

0. shared types and pure rules: errors, durations, keys, policies, the performance model;
1. parts that stand alone: the EQC client, the index store, the simulator, reading and writing tables, override files,
   the WDH_* settings, the route to EQC (proxies, PAC, trust);
2. how to reach EQC and share its quota (`config`);
3. the stages: index, local match, EQC (with its write-back), resolve, and the summary built from their reports; a
   run's options; the progress display and the event log;
4. jobs made of stages: a run (`enrich`), `plan`, the standing worker, the review page, the QR login;
5. the faces: the command line, the benchmark, the demo, the Dagster integration, the package root.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "eqc_enrich"

_FOUNDATION = {"_errors", "_durations", "_signals", "_jsonable", "_text", "keys", "_legacy_keys", "_policies", "model"}
_FOUNDATION |= {"_input_size"}
_PARTS = {"eqc", "store", "simulator", "read", "output", "settings", "_mapping_files", "network"}
_STAGES = {"options", "resolve", "index_stage", "match_stage", "eqc_stage", "resolve_stage", "followup", "summary"}
_STAGES |= {"progress", "events"}  # what shows a run as it goes
_JOBS = {"enrich", "planning", "worker", "review", "login"}
_FACES = {"__init__", "__main__", "cli", "_cli_options", "_cli_index", "_cli_sandbox", "_cli_worker", "_exit_codes"}
_FACES |= {"_cli_token"}
_FACES |= {"bench", "dagster", "demo"}
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names) for names in (_FOUNDATION, _PARTS, {"config"}, _STAGES, _JOBS, _FACES)
)
PACKAGES = ("eqc", "store", "simulator", "eqc_stage", "match_stage", "review", "worker", "bench")

# package -> the modules of the tool it may import besides its own (the small shared error and duration types)
STANDALONE = {
    "eqc": {"eqc_enrich._errors"},
    "simulator": {"eqc_enrich._errors", "eqc_enrich._durations", "eqc_enrich.output"},
    # `index import/export` (_admin) reads and writes files and normalizes the keys it imports; what is kept
    # of a name for showing is bounded by the one rule of `_text`
    "store": {"eqc_enrich._errors", "eqc_enrich.keys", "eqc_enrich.read", "eqc_enrich.output", "eqc_enrich._text"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    return {
        module_name(path): {m for m in imported_modules(path) if m.startswith("eqc_enrich")}
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def top_level(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(module: str) -> int:
    name = top_level(module)
    for number, members in enumerate(LAYERS):
        if name in members:
            return number
    raise AssertionError(f"{module} is in no layer: add its top-level name to LAYERS")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_sits_in_a_layer_and_imports_only_its_own_layer_or_below() -> None:
    upward = {
        (module, target)
        for module, targets in graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
    }
    assert upward == set()


def test_no_module_imports_itself_round_a_cycle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_nothing_outside_a_package_imports_its_private_modules(package: str) -> None:
    own = f"eqc_enrich.{package}"
    reaching_in = {
        (module, target)
        for module, targets in graph().items()
        if not (module == own or module.startswith(own + "."))
        for target in targets
        if target.startswith(own + "._")
    }
    assert reaching_in == set()


@pytest.mark.parametrize("package", sorted(STANDALONE))
def test_a_standalone_package_imports_only_itself_and_the_shared_types(package: str) -> None:
    own = f"eqc_enrich.{package}"
    outside = {
        (path.name, module)
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for module in imported_modules(path)
        if module.startswith("eqc_enrich") and not module.startswith(own) and module not in STANDALONE[package]
    }
    assert outside == set()


def test_the_eqc_stage_is_one_folder_and_the_run_is_short() -> None:
    stage = {path.name for path in (PACKAGE / "eqc_stage").glob("*.py")}
    assert {"_lookup.py", "_writeback.py", "_pacing.py", "_stage.py"} <= stage
    for gone in ("lookup.py", "writeback.py", "_pacing.py", "_eqc_stage.py", "_tokens.py", "_outage.py"):
        assert not (PACKAGE / gone).exists()
    assert len((PACKAGE / "enrich.py").read_text(encoding="utf-8").splitlines()) < 300


def test_only_the_builder_makes_a_run_summary() -> None:
    """The summary is a value of the stages' reports: nothing but `build_summary` constructs or changes one."""
    makers = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "RunSummary":
                makers.add(path.name)
            if isinstance(node, ast.Assign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    value = target.value if isinstance(target, ast.Attribute) else None
                    if isinstance(value, ast.Attribute) and value.attr == "summary":  # x.summary.field = ...
                        makers.add(path.name)
    assert makers == {"summary.py"}


def test_public_modules_declare_their_surface() -> None:
    """Every module whose name has no leading underscore says what it exports (`__all__`)."""
    missing = sorted(
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if not path.name.startswith("_") and path.name != "__main__.py"
        and "__all__" not in path.read_text(encoding="utf-8")
    )  # fmt: skip
    assert missing == []


def test_the_layout_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    planted = tmp_path / "m.py"
    planted.write_text("from eqc_enrich.settings import load_settings\nimport eqc_enrich.eqc._client\n")
    assert imported_modules(planted) == {"eqc_enrich.settings", "eqc_enrich.eqc._client"}
    assert layer_of("eqc_enrich.cli") > layer_of("eqc_enrich.enrich") > layer_of("eqc_enrich.eqc_stage._lookup")
