"""eqc-enrich inside Dagster (issue 12): the resource, the asset factories, the worker step, the README example.

Every run here is Dagster's in-process execution against the simulator on loopback and a real index (a SQLite
file; a PostgreSQL schema with EQC_ENRICH_TEST_PG_URL). The simulator answers at once with a quota of
1000 requests a second, so a step takes a fraction of a second; nothing here compares times.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg  # the `dagster` extra, part of `dev`
import polars as pl
import pytest
from tests.conftest import IndexDb, SimFactory

from eqc_enrich.dagster import (
    EqcEnrichResource,
    WorkerFailed,
    enrich_file_asset,
    enrich_frame_asset,
    run_worker,
    worker_job,
    worker_schedule,
)
from eqc_enrich.keys import normalize_name
from eqc_enrich.simulator import Simulator, make_month, write_month
from eqc_enrich.store import IndexStore, init_index

TOKEN = "dagster-secret-7Qx2vT9k"  # distinctive, so a leak anywhere is found by a plain search
LIMIT = "1000/1s"
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def month() -> tuple[pl.DataFrame, pl.DataFrame]:
    """400 rows of 40 companies of the simulator's universe (seed 7), a few unknown to EQC."""
    return make_month(seed=7, rows=400, companies=40)


@pytest.fixture
def sim(sim_factory: SimFactory, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    """The simulator, and its token in the environment of the run, where the resource reads it."""
    monkeypatch.setenv("WDH_EQC_TOKEN", TOKEN)
    return sim_factory(tokens=(TOKEN,))


@pytest.fixture
def instance() -> Iterator[Any]:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def resource(sim_url: str, db: IndexDb, **changes: Any) -> EqcEnrichResource:
    init_index(db.url, schema=db.schema)  # what the database owner does once (PostgreSQL: no DDL in a run)
    fields: dict[str, Any] = {"db": db.url, "db_schema": db.schema, "eqc_url": sim_url, "rate_limit": LIMIT}
    return EqcEnrichResource(**{**fields, **changes})


def frame_assets(data: pl.DataFrame) -> list[Any]:
    @dg.asset
    def customers() -> pl.DataFrame:
        return data

    return [customers, enrich_frame_asset("enriched_customers", upstream="customers")]


def materialization(result: Any, node: str) -> dict[str, Any]:
    """The materialization metadata of `node`, as plain values."""
    [event] = result.asset_materializations_for_node(node)
    return {key: value.value for key, value in event.metadata.items()}


def failure(result: Any) -> Any:
    """The user failure (description, metadata) of the one step that failed."""
    [event] = result.get_step_failure_events()
    return event.step_failure_data.user_failure_data


def assert_true_ids(frame: pl.DataFrame, truth: pl.DataFrame) -> None:
    """Every row of a company EQC knows has its true id; every named row has some id."""
    joined = frame.with_row_index("row").join(truth.rename({"company_id": "expected"}), on="row")
    known = joined.filter(pl.col("expected").is_not_null())
    assert known.height > 0
    wrong = known.filter(pl.col("company_id") != pl.col("expected"))
    assert wrong.height == 0, wrong.select("客户名称", "company_id", "expected").head()
    named = joined.filter(pl.col("客户名称").is_not_null())
    assert named["company_id"].null_count() == 0


def test_the_package_root_and_the_cli_do_not_import_dagster() -> None:
    code = "import sys, eqc_enrich, eqc_enrich.cli; print('dagster' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"


def test_the_frame_asset_enriches_every_row_and_its_metadata_is_the_summary(
    month: tuple[pl.DataFrame, pl.DataFrame], sim: Simulator, index_db: IndexDb, instance: Any
) -> None:
    data, truth = month
    resources = {"eqc_enrich": resource(sim.url, index_db)}
    cold = dg.materialize(frame_assets(data), resources=resources, instance=instance)
    assert cold.success
    frame = cold.output_for_node("enriched_customers")
    assert frame.columns == [*data.columns, "company_id", "company_id_source"]
    assert_true_ids(frame, truth)

    meta = materialization(cold, "enriched_customers")
    asked = sim.stats()["accepted"]  # no 429s at this quota: one accepted request per name asked
    assert meta["status"] == "completed"
    assert meta["exit_code"] == 0
    assert meta["rows"] == meta["dagster/row_count"] == data.height
    assert meta["names_asked"] == asked > 0
    assert meta["answered_before_eqc"] + meta["names_asked"] == meta["distinct_names"]  # a cold index
    assert meta["found"] + meta["not_found"] == asked
    from_eqc = frame.filter(pl.col("company_id_source") == "eqc")
    assert meta["resolved_by"]["eqc"] == from_eqc.height
    assert meta["found"] == from_eqc["客户名称"].map_elements(normalize_name, return_dtype=pl.String).n_unique()
    assert meta["failed"] == meta["not_asked"] == 0
    assert meta["api_calls"] == asked
    assert isinstance(meta["efficiency"], float)
    store = IndexStore(index_db.url, schema=index_db.schema)
    try:
        assert store.count_entries() >= meta["found"]
    finally:
        store.close()

    warm = dg.materialize(frame_assets(data), resources=resources, instance=instance)
    warm_meta = materialization(warm, "enriched_customers")
    assert sim.stats()["accepted"] == asked  # everything came from the index
    assert warm_meta["names_asked"] == 0
    assert warm_meta["answered_before_eqc"] == warm_meta["distinct_names"] == meta["distinct_names"]
    assert warm.output_for_node("enriched_customers")["company_id"].equals(frame["company_id"])


def test_the_file_asset_writes_the_enriched_file_and_points_at_it(
    sim: Simulator, tmp_path: Path, instance: Any
) -> None:
    source = write_month(tmp_path / "202501.csv", seed=7, rows=300, companies=30)
    truth = pl.read_parquet(tmp_path / "202501.truth.parquet")
    db = IndexDb(f"sqlite:///{tmp_path / 'index.db'}", None, "sqlite")
    asset = enrich_file_asset("enriched_month", path=source)
    result = dg.materialize([asset], resources={"eqc_enrich": resource(sim.url, db)}, instance=instance)
    assert result.success
    meta = materialization(result, "enriched_month")
    target = tmp_path / "202501.enriched.csv"
    assert meta["path"] == str(target)
    assert meta["unresolved"] == str(tmp_path / "202501.unresolved.csv")
    assert meta["status"] == "completed"
    written = pl.read_csv(target, infer_schema=False)
    assert meta["rows"] == written.height == 300
    assert_true_ids(written, truth)
    unresolved = pl.read_csv(tmp_path / "202501.unresolved.csv", infer_schema=False)
    assert meta["unresolved_names"] == unresolved.height

    # run config points the same asset at another month, and its output beside it
    other = write_month(tmp_path / "202502.parquet", seed=7, rows=200, companies=20)
    out = tmp_path / "out" / "february.parquet"
    out.parent.mkdir()
    config = {"ops": {"enriched_month": {"config": {"path": str(other), "output": str(out)}}}}
    again = dg.materialize(
        [asset], resources={"eqc_enrich": resource(sim.url, db)}, instance=instance, run_config=config
    )
    assert again.success
    again_meta = materialization(again, "enriched_month")
    assert (again_meta["input"], again_meta["path"]) == (str(other), str(out))
    assert pl.read_parquet(out).height == again_meta["rows"] == 200
    assert (tmp_path / "202502.unresolved.csv").exists()


def test_an_unreachable_eqc_fails_the_step_with_the_status_and_true_figures(
    month: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path, instance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _ = month
    monkeypatch.setenv("WDH_EQC_TOKEN", TOKEN)
    db = IndexDb(f"sqlite:///{tmp_path / 'index.db'}", None, "sqlite")
    nowhere = resource("http://127.0.0.1:9", db, eqc_down_wait="0s", retries=0)  # a closed port
    result = dg.materialize(
        frame_assets(data), resources={"eqc_enrich": nowhere}, instance=instance, raise_on_error=False
    )
    assert not result.success
    assert result.get_failed_step_keys() == {"enriched_customers"}
    failed = failure(result)
    assert failed.description.startswith("eqc-enrich run ended eqc_unavailable (exit code 5): ")
    assert "names not asked: rerun to ask them" in failed.description
    meta = {key: value.value for key, value in failed.metadata.items()}
    assert meta["status"] == "eqc_unavailable"
    assert meta["exit_code"] == 5
    assert meta["rows"] == data.height
    assert meta["found"] == meta["not_found"] == 0
    assert meta["names_planned"] > 0
    assert meta["names_planned"] == meta["names_asked"] + meta["not_asked"] + meta["answered_elsewhere"]
    assert meta["not_asked"] > 0
    assert meta["message"] in failed.description
    assert result.asset_materializations_for_node("enriched_customers") == []


@pytest.mark.parametrize("accepted", [True, False], ids=["token_accepted", "token_rejected"])
def test_the_token_is_nowhere_in_the_event_log_the_run_or_the_output(
    accepted: bool,
    month: tuple[pl.DataFrame, pl.DataFrame],
    sim_factory: SimFactory,
    tmp_path: Path,
    instance: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, _ = month
    sim = sim_factory(tokens=(TOKEN if accepted else "another-token",))
    monkeypatch.setenv("WDH_EQC_TOKEN", TOKEN)
    db = IndexDb(f"sqlite:///{tmp_path / 'index.db'}", None, "sqlite")
    result = dg.materialize(
        frame_assets(data), resources={"eqc_enrich": resource(sim.url, db)}, instance=instance, raise_on_error=False
    )
    assert result.success is accepted
    logs = [entry.to_json() for entry in instance.all_logs(result.run_id)]
    run = instance.get_run_by_id(result.run_id)
    snapshot = dg.serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
    captured = capfd.readouterr()
    seen = "\n".join([*logs, dg.serialize_value(run), snapshot, captured.out, captured.err, caplog.text])
    expected = "eqc-enrich completed" if accepted else "eqc-enrich run ended token_unavailable (exit code 3)"
    assert expected in seen  # the search below looks where the run's own words are
    assert sim.url in seen  # and where its settings are
    assert TOKEN not in seen
    run_id = (materialization(result, "enriched_customers") if accepted else _failure_metadata(result))["run_id"]
    with sqlite3.connect(tmp_path / "index.db") as conn:
        dump = "\n".join(conn.iterdump())
    assert run_id in dump  # the journal holds the run, with its options
    assert TOKEN not in dump


def _failure_metadata(result: Any) -> dict[str, Any]:
    return {key: value.value for key, value in failure(result).metadata.items()}


def test_a_token_from_another_variable_is_read_when_the_step_runs(
    month: tuple[pl.DataFrame, pl.DataFrame],
    sim_factory: SimFactory,
    tmp_path: Path,
    instance: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, _ = month
    sim = sim_factory(tokens=(TOKEN,))
    db = IndexDb(f"sqlite:///{tmp_path / 'index.db'}", None, "sqlite")
    res = resource(sim.url, db, token_env="ACCOUNT_B_EQC_TOKEN")
    missing = dg.materialize(frame_assets(data), resources={"eqc_enrich": res}, instance=instance, raise_on_error=False)
    assert not missing.success
    assert failure(missing).description == (
        "eqc-enrich: ACCOUNT_B_EQC_TOKEN is not set in the environment of this run (token_env names it)"
    )
    assert sim.stats()["accepted"] == 0

    monkeypatch.setenv("ACCOUNT_B_EQC_TOKEN", TOKEN)  # set after the definitions were made: read at execution
    found = dg.materialize(frame_assets(data), resources={"eqc_enrich": res}, instance=instance)
    assert found.success
    assert materialization(found, "enriched_customers")["names_asked"] == sim.stats()["accepted"] > 0


def test_bad_input_or_settings_fail_the_step_in_one_line(sim: Simulator, tmp_path: Path, instance: Any) -> None:
    db = IndexDb(f"sqlite:///{tmp_path / 'index.db'}", None, "sqlite")
    missing = enrich_file_asset("enriched_month", path=tmp_path / "no-such.xlsx")
    result = dg.materialize(
        [missing], resources={"eqc_enrich": resource(sim.url, db)}, instance=instance, raise_on_error=False
    )
    description = failure(result).description
    assert description.startswith("eqc-enrich: ")
    assert "no-such.xlsx" in description
    assert "\n" not in description

    bad_rate = resource(sim.url, db, rate_limit="ten a minute")
    data, _ = make_month(seed=7, rows=20, companies=5)
    result = dg.materialize(
        frame_assets(data), resources={"eqc_enrich": bad_rate}, instance=instance, raise_on_error=False
    )
    assert failure(result).description.startswith("eqc-enrich: not a rate limit: 'ten a minute'")
    assert sim.stats()["accepted"] == 0


# --- the README example -------------------------------------------------------------------------------------


def readme_example() -> str:
    """The first python block of README's "Inside Dagster" section, exactly as a user copies it."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Inside Dagster\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Inside Dagster section has no python block"
    return match.group(1)


def test_the_readme_definitions_example_runs(
    sim: Simulator, index_db: IndexDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: Any
) -> None:
    """The README's code runs as written; the test only points its resource at the simulator's fast quota
    (and, on PostgreSQL, at a schema of its own) and puts the files it reads in a folder of its own."""
    monkeypatch.chdir(tmp_path)
    write_month(tmp_path / "202501规模收入数据.xlsx", seed=7, rows=300, companies=30)
    (tmp_path / "exports").mkdir()
    new_customers, truth = make_month(seed=7, rows=120, companies=12)  # the simulator's universe (seed 7)
    new_customers.write_parquet(tmp_path / "exports" / "new_customers.parquet")
    monkeypatch.setenv("EQC_ENRICH_DB", index_db.url)
    monkeypatch.setenv("WDH_EQC_BASE_URL", sim.url)

    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    defs = namespace["defs"]
    dg.Definitions.validate_loadable(defs)
    written = defs.resources["eqc_enrich"]
    fields = {name: getattr(written, name) for name in EqcEnrichResource.model_fields}
    test_fields: dict[str, Any] = {"rate_limit": LIMIT}
    if index_db.schema:
        test_fields["db_schema"] = index_db.schema
    init_index(index_db.url, schema=index_db.schema)
    res = EqcEnrichResource(**{**fields, **test_fields})  # db: the README's EnvVar; eqc_url: WDH_EQC_BASE_URL
    test_defs = dg.Definitions(
        assets=defs.assets, schedules=defs.schedules, resources={**defs.resources, "eqc_enrich": res}
    )

    result = test_defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
    assert result.success
    enriched = pl.read_excel(
        tmp_path / "202501规模收入数据.enriched.xlsx", sheet_name="规模明细", infer_schema_length=0
    )
    assert enriched.height == 300
    assert_true_ids(enriched, pl.read_parquet(tmp_path / "202501规模收入数据.truth.parquet"))
    frame = result.output_for_node("enriched_customers")
    assert_true_ids(frame, truth)
    for node in ("enriched_customers", "enriched_month"):
        assert materialization(result, node)["status"] == "completed"
    schedule = test_defs.resolve_schedule_def("eqc_enrich_worker_schedule")
    assert schedule.job_name == "eqc_enrich_worker"
    assert test_defs.resolve_job_def("eqc_enrich_worker") is not None


# --- the worker step ----------------------------------------------------------------------------------------


def test_the_schedule_asks_for_a_run_of_the_worker_job_at_each_tick(tmp_path: Path) -> None:
    schedule = worker_schedule("*/10 * * * *")
    defs = dg.Definitions(schedules=[schedule], resources={"eqc_enrich": EqcEnrichResource(db=str(tmp_path / "i.db"))})
    resolved = defs.resolve_schedule_def("eqc_enrich_worker_schedule")
    assert resolved.cron_schedule == "*/10 * * * *"
    with dg.build_schedule_context() as context:
        data = resolved.evaluate_tick(context)
    [request] = data.run_requests or []
    assert request.run_config == {}  # the settings are the resource's, the token the environment's
    assert resolved.job_name == "eqc_enrich_worker"


def test_the_worker_command_carries_the_settings_and_the_token_and_database_url_only_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACCOUNT_B_EQC_TOKEN", TOKEN)
    url = "postgresql+psycopg://etl:s3cret-pw@db/warehouse"
    res = EqcEnrichResource(
        db=url,
        db_schema="enterprise",
        eqc_url="http://127.0.0.1:8000",
        quota_key="account-b",
        rate_limit="10/60s",
        token_env="ACCOUNT_B_EQC_TOKEN",
    )
    assert res.worker_command() == [
        sys.executable, "-m", "eqc_enrich", "worker", "--once",
        "--db-schema", "enterprise",
        "--eqc-url", "http://127.0.0.1:8000", "--quota-key", "account-b", "--rate-limit", "10/60s",
    ]  # fmt: skip
    assert not any("s3cret-pw" in part or TOKEN in part for part in res.worker_command())  # `ps` shows argv
    assert res.worker_env()["WDH_EQC_TOKEN"] == TOKEN
    assert res.worker_env()["EQC_ENRICH_DB"] == url
    assert res.worker_command(max_time="50m")[5:7] == ["--max-time", "50m"]
    assert EqcEnrichResource().worker_command() == [sys.executable, "-m", "eqc_enrich", "worker", "--once"]


def test_a_worker_that_exits_non_zero_fails_the_step_with_the_last_line_of_stderr(
    tmp_path: Path, instance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index under a regular file: bad with or without a worker command (exit 2 either way). The step's
    message is what the command itself says, and every line it wrote is in the Dagster log."""
    monkeypatch.setenv("WDH_EQC_TOKEN", TOKEN)
    (tmp_path / "a-file").write_text("not a folder")
    res = EqcEnrichResource(db=str(tmp_path / "a-file" / "index.db"), eqc_url="http://127.0.0.1:9")
    direct = subprocess.run(res.worker_command(), env=res.worker_env(), capture_output=True, text=True, timeout=120)
    assert direct.returncode == 2
    last = direct.stderr.strip().splitlines()[-1]

    defs = dg.Definitions(schedules=[worker_schedule()], resources={"eqc_enrich": res})
    result = defs.resolve_job_def("eqc_enrich_worker").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failed = failure(result)
    assert failed.description == f"eqc-enrich worker --once exited 2 (bad input, option or setting): {last}"
    assert failed.metadata["exit_code"].value == 2
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert f"stderr: {last}" in messages
    assert not any(TOKEN in message for message in messages)


CHATTY = textwrap.dedent(
    """
    import sys
    for i in range(20_000):  # more than a pipe holds, on both streams at once
        print(f"out {i}", flush=i % 1000 == 0)
        print(f"err {i}", file=sys.stderr, flush=i % 1000 == 0)
    print("the last words", file=sys.stderr)
    sys.exit(4)
    """
)


def test_run_worker_streams_both_outputs_whole_and_reports_the_exit() -> None:
    seen: list[tuple[str, str]] = []
    with pytest.raises(WorkerFailed) as caught:
        run_worker([sys.executable, "-c", CHATTY], {}, lambda stream, line: seen.append((stream, line)))
    assert str(caught.value) == "eqc-enrich worker --once exited 4 (names_failed): the last words"
    assert caught.value.code == 4
    out = [line for stream, line in seen if stream == "stdout"]
    err = [line for stream, line in seen if stream == "stderr"]
    assert out == [f"out {i}" for i in range(20_000)]
    assert err == [*(f"err {i}" for i in range(20_000)), "the last words"]

    run_worker([sys.executable, "-c", "print('nothing due')"], {}, lambda stream, line: seen.append((stream, line)))
    assert seen[-1] == ("stdout", "nothing due")


STOPPABLE = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    def stop(signum, frame):
        Path(sys.argv[1]).write_text("stopped")
        sys.exit(130)
    signal.signal(signal.SIGTERM, stop)
    print("working", flush=True)
    time.sleep(60)
    """
)


class _Terminated(Exception):
    pass


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM handlers are POSIX")
def test_a_terminated_step_stops_the_worker_with_sigterm(tmp_path: Path) -> None:
    """Dagster ends a terminated run's step with an exception: the worker gets SIGTERM (its Ctrl-C), not a kill."""
    marker = tmp_path / "stopped"

    def interrupt(stream: str, line: str) -> None:
        if line == "working":
            raise _Terminated

    with pytest.raises(_Terminated):
        run_worker([sys.executable, "-c", STOPPABLE, str(marker)], {}, interrupt)
    assert marker.read_text() == "stopped"  # its SIGTERM handler ran before run_worker returned


def test_worker_job_names_its_op_after_the_job() -> None:
    job = worker_job("nightly_eqc", resource_key="eqc_b")
    assert job.name == "nightly_eqc"
    assert [node.name for node in job.nodes] == ["nightly_eqc_once"]
