"""EqcOutage on its own, with an injected clock: which unanswered requests make an outage, and which belong to
one already counted (on a busy machine, requests in flight when EQC went away fail only after it is back)."""

from __future__ import annotations

from eqc_enrich import RateLimit
from eqc_enrich._policies import OutagePolicy
from eqc_enrich.eqc import CertificateError, UnreachableError
from eqc_enrich.eqc_stage import EqcOutage

REFUSED = UnreachableError("connection refused", endpoint="search")
LIMIT = RateLimit(10, 60.0)  # one slot: 6 s; the first probe one slot after the trip


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def outage() -> tuple[EqcOutage, FakeClock, list[str]]:
    clock, seen = FakeClock(), []
    watch = EqcOutage(OutagePolicy(unreachable_in_a_row=5), LIMIT, clock=clock, events=lambda k, _: seen.append(k))
    return watch, clock, seen


def test_five_unanswered_in_a_row_trip_and_an_answer_in_between_starts_the_count_again() -> None:
    watch, _, seen = outage()
    for _ in range(4):
        watch.unanswered(REFUSED, sent_in=watch.epoch)
    watch.answered()
    for _ in range(4):
        watch.unanswered(REFUSED, sent_in=watch.epoch)
    assert not watch.down
    watch.unanswered(REFUSED, sent_in=watch.epoch)
    assert watch.down
    assert (watch.outages, seen) == (1, ["eqc_down"])


def test_requests_in_flight_when_eqc_went_away_failing_after_it_came_back_make_no_second_outage() -> None:
    watch, clock, seen = outage()
    before = watch.epoch
    for _ in range(5):
        watch.unanswered(REFUSED, sent_in=before)
    assert watch.down
    clock.now += 6.0
    watch.answered()  # the probe found EQC back
    for _ in range(10):  # sent before the outage, their failure reported only now
        watch.unanswered(REFUSED, sent_in=before)
    assert not watch.down
    assert watch.in_a_row == 0
    assert (watch.outages, seen) == (1, ["eqc_down", "eqc_back"])
    # requests sent after the comeback count again: a real second outage is one
    for _ in range(5):
        watch.unanswered(REFUSED, sent_in=watch.epoch)
    assert watch.down
    assert watch.outages == 2


def test_late_failures_of_requests_sent_before_the_trip_do_not_push_the_next_probe_back() -> None:
    watch, clock, _ = outage()
    before = watch.epoch
    for _ in range(5):
        watch.unanswered(REFUSED, sent_in=before)
    tripped = watch._next_probe_at
    assert tripped == clock.now + 6.0
    clock.now += 1.0
    for _ in range(5):
        watch.unanswered(REFUSED, sent_in=before)
    assert watch._next_probe_at == tripped
    watch.unanswered(REFUSED, sent_in=watch.epoch)  # a probe that failed: the next one waits longer
    assert watch._next_probe_at == clock.now + 12.0


def test_a_certificate_failure_is_fatal_whenever_the_request_was_sent() -> None:
    watch, _, _ = outage()
    watch.unanswered(CertificateError("certificate not trusted"), sent_in=watch.epoch - 1)
    assert watch.down
    assert watch.reason == "certificate not trusted"


def test_an_answer_to_a_request_sent_before_the_trip_does_not_end_the_outage_only_a_probe_does() -> None:
    """A server shutting down answers some requests in flight after others were already refused: that is no
    comeback, and treating it as one counted a second outage for one stop (seen on a busy machine)."""
    watch, clock, seen = outage()
    before = watch.epoch
    for _ in range(5):
        watch.unanswered(REFUSED, sent_in=before)
    watch.answered(sent_in=before)
    assert watch.down
    for _ in range(5):  # the port is closed now
        watch.unanswered(REFUSED, sent_in=before)
    clock.now += 6.0
    watch.answered(sent_in=watch.epoch)  # the probe
    assert not watch.down
    assert (watch.outages, seen) == (1, ["eqc_down", "eqc_back"])
