"""The worker's Dagster schedule end to end: its job runs `eqc-enrich worker --once` against the simulator and
a real index (SQLite; PostgreSQL with EQC_ENRICH_TEST_PG_URL) in Dagster's in-process execution.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl
import pytest
from tests.conftest import IndexDb, SimFactory

from eqc_enrich.dagster import EqcEnrichResource, enrich_frame_asset, worker_schedule
from eqc_enrich.simulator import Simulator, make_month
from eqc_enrich.store import init_index

TOKEN = "dagster-worker-secret-Vb83"
LIMIT = "1000/1s"


@pytest.fixture
def sim(sim_factory: SimFactory, monkeypatch: pytest.MonkeyPatch) -> Simulator:
    monkeypatch.setenv("WDH_EQC_TOKEN", TOKEN)
    return sim_factory(tokens=(TOKEN,))


@pytest.fixture
def instance() -> Iterator[Any]:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def worker_defs(sim: Simulator, db: IndexDb, **changes: Any) -> tuple[dg.Definitions, EqcEnrichResource]:
    init_index(db.url, schema=db.schema)
    fields: dict[str, Any] = {"db": db.url, "db_schema": db.schema, "eqc_url": sim.url, "rate_limit": LIMIT}
    res = EqcEnrichResource(**{**fields, **changes})
    # --max-time as an hourly schedule would use it: never reached here, but the worker must take it
    schedule = worker_schedule(max_time="50m")
    return dg.Definitions(schedules=[schedule], resources={"eqc_enrich": res}), res


def run_job(defs: dg.Definitions, instance: Any) -> tuple[Any, list[str]]:
    result = defs.resolve_job_def("eqc_enrich_worker").execute_in_process(instance=instance, raise_on_error=False)
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    return result, messages


def test_the_scheduled_job_runs_the_worker_once_and_succeeds_when_nothing_is_due(
    sim: Simulator, index_db: IndexDb, instance: Any
) -> None:
    defs, _ = worker_defs(sim, index_db)
    result, messages = run_job(defs, instance)
    assert result.success, [m for m in messages if m.startswith("stderr: ")]
    assert "eqc-enrich worker --once exited 0: everything due is done" in messages
    assert sim.stats()["accepted"] == 0  # a fresh index: nothing to ask
    assert not any(TOKEN in message for message in messages)


def test_the_worker_asks_the_names_a_run_left_over_budget(sim: Simulator, index_db: IndexDb, instance: Any) -> None:
    """Assumes the worker's queue holds the names a run left with temporary ids because of `--budget`
    ("a rerun asks them"): after one `worker --once`, the index answers every name of the month."""
    data, _ = make_month(seed=7, rows=400, companies=40)
    defs, res = worker_defs(sim, index_db, budget=3)

    @dg.asset
    def customers() -> pl.DataFrame:
        return data

    enriched = enrich_frame_asset("enriched_customers", upstream="customers")
    first = dg.materialize([customers, enriched], resources={"eqc_enrich": res}, instance=instance)
    [event] = first.asset_materializations_for_node("enriched_customers")
    over_budget = event.metadata["over_budget"].value
    assert isinstance(over_budget, int)
    assert over_budget > 0
    asked_by_run = sim.stats()["accepted"]

    result, messages = run_job(defs, instance)
    assert result.success, [m for m in messages if m.startswith("stderr: ")]
    assert sim.stats()["accepted"] >= asked_by_run + over_budget

    after = res.enrich(data, enrichment=False)  # no EQC call: what the index answers now
    assert after.summary.answered_before_eqc == after.summary.distinct_names
