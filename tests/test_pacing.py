"""The client's pacing, tested directly on an injected clock: the rule, the in-memory ledger, the limiter and
the in-flight gate.

The limiter runs on a virtual-time event loop (`tests/virtual_time.py`) with `clock=loop.time`, so every
figure below is exact and no test depends on how busy the machine is. The property test drives it with any
arrival pattern and any mix of 429 answers (with and without Retry-After) and checks what the client would
have *sent*: never more than N sends in any window plus margin, and nothing sent during a Retry-After pause.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.budget import examples
from tests.virtual_time import VirtualTimeLoop, run_virtual

from eqc_enrich._durations import RateLimit
from eqc_enrich._policies import RetryPolicy
from eqc_enrich.eqc_stage import (
    ConcurrencyGate,
    MemoryLedger,
    SlidingWindowLimiter,
    Stopped,
    default_margin,
    next_send,
    sleep_unless,
)

TOLERANCE = 1e-6  # the virtual loop may run a timer up to its clock resolution (1 ns) early; float sums drift less


# --- the rule, a pure function --------------------------------------------------------------------------------


def test_below_n_sends_the_rule_lets_a_send_go_now() -> None:
    assert next_send([], 0.0, 5.0, requests=3, span_s=1.0) == 5.0
    assert next_send([4.9, 4.95], 0.0, 5.0, requests=3, span_s=1.0) == 5.0


def test_a_pause_holds_the_send_until_it_ends() -> None:
    assert next_send([], 7.5, 5.0, requests=3, span_s=1.0) == 7.5
    assert next_send([1.0, 2.0, 3.0], 7.5, 5.0, requests=3, span_s=1.0) == 7.5


def test_with_n_sends_the_next_waits_a_span_after_the_nth_last() -> None:
    # the N-th last send was at 4.5: the next may go at 5.5, not before (pacing alone would allow 5.0 + 1/3)
    assert next_send([4.5, 5.0, 5.0], 0.0, 5.0, requests=3, span_s=1.0) == 5.5


def test_with_n_sends_the_next_is_paced_one_spacing_after_the_last() -> None:
    # the window rule allows 4.0 (= 3.0 + 1.0); the spacing after the last send (4.9) says 4.9 + 0.25
    assert next_send([3.0, 3.5, 4.9], 0.0, 4.0, requests=3, span_s=0.75) == pytest.approx(4.9 + 0.25)


def test_the_rule_never_sends_before_now() -> None:
    assert next_send([0.0, 0.1, 0.2], 0.0, 50.0, requests=3, span_s=1.0) == 50.0


def test_only_the_last_n_sends_count() -> None:
    # an old burst (0, 0, 0) further back than N sends does not hold anything
    assert next_send([0.0, 0.0, 0.0, 10.0, 10.5, 11.0], 0.0, 11.0, requests=3, span_s=1.0) == 11.0 + 1 / 3


# --- the in-memory ledger ----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reserve(ledger: MemoryLedger, *, requests: int = 2, span_s: float = 1.0) -> float:
    def rule(sends: list[float], paused: float, now: float) -> float:
        return next_send(sends, paused, now, requests=requests, span_s=span_s)

    return asyncio.run(ledger.reserve(rule, recent=requests, keep_s=10 * span_s))


def test_the_ledger_returns_the_delay_and_records_the_planned_slot() -> None:
    clock = FakeClock(100.0)
    ledger = MemoryLedger(clock)
    assert reserve(ledger) == 0.0
    assert reserve(ledger) == 0.0
    assert reserve(ledger) == pytest.approx(1.0)  # two in the window: the third waits a span after the first
    clock.now = 101.3  # the caller overslept its slot (101.0) by 0.3 s
    # the pace runs from the planned slot (101.0), not the late wake-up: the next is at 101.0 + 0.5
    assert reserve(ledger) == pytest.approx(101.5 - 101.3)


def test_the_ledger_passes_only_the_recent_sends_to_the_rule() -> None:
    seen: list[list[float]] = []
    ledger = MemoryLedger(FakeClock(0.0))

    def rule(sends: list[float], paused: float, now: float) -> float:
        seen.append(list(sends))
        return now

    for _ in range(5):
        asyncio.run(ledger.reserve(rule, recent=3, keep_s=1.0))
    assert [len(sends) for sends in seen] == [0, 1, 2, 3, 3]
    asyncio.run(ledger.reserve(rule, recent=0, keep_s=1.0))
    assert seen[-1] == []  # a rule that wants no history gets none


def test_a_ledger_pause_counts_from_now_and_never_shortens() -> None:
    clock = FakeClock(10.0)
    ledger = MemoryLedger(clock)
    ledger.pause_for(5.0)
    ledger.pause_for(1.0)  # a shorter Retry-After later does not cut the first one short
    assert reserve(ledger) == pytest.approx(5.0)


# --- the limiter, on virtual time --------------------------------------------------------------------------


def send_times(limit: RateLimit, callers: int, *, margin_s: float | None = None) -> list[float]:
    """`callers` requests arriving together at t=0; returns when each was let go."""

    async def main(loop: VirtualTimeLoop) -> list[float]:
        limiter = SlidingWindowLimiter(limit, margin_s=margin_s, clock=loop.time)
        times: list[float] = []

        async def one() -> None:
            await limiter.acquire()
            times.append(loop.time())

        await asyncio.gather(*(one() for _ in range(callers)))
        return times

    return run_virtual(main)


def test_a_burst_gets_n_sends_at_once_then_one_per_spacing_after_a_full_span() -> None:
    times = send_times(RateLimit(10, 1.0), 30, margin_s=0.02)
    span = 1.02
    assert times[:10] == [0.0] * 10
    expected = [span + k * span / 10 for k in range(20)]
    assert times[10:] == pytest.approx(expected, abs=TOLERANCE)


def test_the_limiter_admits_exactly_n_in_any_span() -> None:
    limit = RateLimit(10, 1.0)
    times = send_times(limit, 45, margin_s=0.02)
    for first, later in zip(times, times[10:], strict=False):
        assert later - first >= 1.02 - TOLERANCE  # an N+1-th send inside a span would be closer


def test_the_default_margin_floor_is_half_a_percent_of_the_window_within_bounds() -> None:
    assert default_margin(RateLimit(10, 60.0)) == pytest.approx(0.3)
    assert default_margin(RateLimit(10, 600.0)) == pytest.approx(1.0)  # 3 s: capped at 1 s
    assert default_margin(RateLimit(10, 0.06)) == pytest.approx(0.0005)  # 0.3 ms: at least 0.5 ms
    limiter = SlidingWindowLimiter(RateLimit(10, 10.0))
    assert limiter.margin_s == pytest.approx(0.05)
    assert limiter.span_s == pytest.approx(10.05)
    assert limiter.effective_rate == pytest.approx(10 / 10.05)


def test_widen_adds_a_step_up_to_a_quarter_of_the_window_and_settle_takes_two_hundred_answers_per_step() -> None:
    limiter = SlidingWindowLimiter(RateLimit(10, 10.0), margin_s=0.05)
    assert limiter.widen_step_s == pytest.approx(0.1)  # 1% of the window: more than the floor
    limiter.widen()
    assert limiter.margin_s == pytest.approx(0.15)
    assert limiter.widened == 1
    for _ in range(40):
        limiter.widen()
    assert limiter.margin_s == pytest.approx(2.5)  # a quarter of the window, however many 429s
    assert limiter.widened == 41
    for _ in range(1_000):  # five steps' worth
        limiter.settle()
    assert limiter.margin_s == pytest.approx(0.05 + 2.5 - 5 * 0.1)  # the floor plus what is left of the 429s
    for _ in range(10_000):
        limiter.settle()
    assert limiter.margin_s == pytest.approx(0.05)  # back to the floor, never below


def test_a_floor_wider_than_the_step_is_the_step() -> None:
    limiter = SlidingWindowLimiter(RateLimit(10, 1.0), margin_s=0.05)
    assert limiter.widen_step_s == pytest.approx(0.05)
    limiter.widen()
    assert limiter.margin_s == pytest.approx(0.1)


def test_the_margin_follows_the_spread_of_how_late_sends_leave() -> None:
    """Sends that all leave 3 ms late need no margin for it (their arrivals move alike); sends of which a few
    leave 20 ms later than the rest need those 20 ms, or a late one's arrival comes within a window of the
    one a quota after it."""
    limiter = SlidingWindowLimiter(RateLimit(10, 1.0), margin_s=0.005)
    for _ in range(19):
        limiter.sent(0.003)
    assert limiter.margin_s == pytest.approx(0.005)  # fewer than 20 sends say nothing yet
    for _ in range(181):
        limiter.sent(0.003)
    assert limiter.timing.spread() == pytest.approx(0.0)
    assert limiter.margin_s == pytest.approx(0.005)  # late alike: no wider
    for _ in range(6):  # 3 in 100 leave 20 ms later than the rest
        limiter.sent(0.023)
    assert limiter.timing.spread() == pytest.approx(0.020)
    assert limiter.margin_s == pytest.approx(0.025)
    for _ in range(200):  # those sends leave the record: the margin narrows again
        limiter.sent(0.003)
    assert limiter.margin_s == pytest.approx(0.005)


def test_a_machine_too_busy_for_any_pace_gets_a_quarter_window_margin_not_more() -> None:
    limiter = SlidingWindowLimiter(RateLimit(10, 1.0), margin_s=0.005)
    for late in range(200):
        limiter.sent(late / 100)  # 0 to 2 s late
    assert limiter.margin_s == pytest.approx(0.25)


def test_a_send_late_against_its_slot_is_measured_on_the_limiters_clock() -> None:
    async def main(loop: VirtualTimeLoop) -> list[float]:
        limiter = SlidingWindowLimiter(RateLimit(1, 1.0), margin_s=0.0, clock=loop.time)
        slots = [await limiter.acquire(), await limiter.acquire()]
        await asyncio.sleep(0.25)  # the caller dawdles a quarter second before sending
        return [*slots, limiter.since(slots[1])]

    first, second, late = run_virtual(main)
    assert (first, second) == pytest.approx((0.0, 1.0), abs=TOLERANCE)
    assert late == pytest.approx(0.25, abs=TOLERANCE)


def test_a_widened_margin_spaces_the_sends_wider() -> None:
    async def main(loop: VirtualTimeLoop) -> list[float]:
        limiter = SlidingWindowLimiter(RateLimit(2, 1.0), margin_s=0.02, clock=loop.time)
        limiter.widen()  # margin 0.04: span 1.04
        times = []
        for _ in range(4):
            await limiter.acquire()
            times.append(loop.time())
        return times

    assert run_virtual(main) == pytest.approx([0.0, 0.0, 1.04, 1.56], abs=TOLERANCE)


def test_retry_after_holds_every_send_until_the_pause_ends() -> None:
    async def main(loop: VirtualTimeLoop) -> list[float]:
        limiter = SlidingWindowLimiter(RateLimit(5, 1.0), margin_s=0.0, clock=loop.time)
        await limiter.acquire()
        limiter.pause_for(3.0)
        times = []
        for _ in range(3):
            await limiter.acquire()
            times.append(loop.time())
        return times

    assert run_virtual(main) == pytest.approx([3.0, 3.0, 3.0], abs=TOLERANCE)


def test_a_pause_that_comes_while_a_caller_waits_for_its_slot_moves_that_caller_past_it() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        limiter = SlidingWindowLimiter(RateLimit(1, 1.0), margin_s=0.0, clock=loop.time)
        await limiter.acquire()  # t=0; the next slot is at 1.0
        waiter = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0.5)
        limiter.pause_for(2.0)  # until 2.5: the slot at 1.0 must not be used
        await waiter
        return loop.time()

    assert run_virtual(main) == pytest.approx(2.5, abs=TOLERANCE)


def test_a_stop_ends_the_wait_with_stopped_and_the_wait_is_counted() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[float, float]:
        limiter = SlidingWindowLimiter(RateLimit(1, 10.0), margin_s=0.0, clock=loop.time)
        stop: asyncio.Future[None] = loop.create_future()
        await limiter.acquire(stop)
        loop.call_later(4.0, stop.set_result, None)
        with pytest.raises(Stopped):
            await limiter.acquire(stop)
        return loop.time(), limiter.wait_s

    now, waited = run_virtual(main)
    assert now == pytest.approx(4.0)
    assert waited == pytest.approx(4.0)


def test_sleep_unless_sleeps_the_full_time_without_a_stop() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        await sleep_unless(None, 2.5)
        stop: asyncio.Future[None] = loop.create_future()
        await sleep_unless(stop, 1.5)  # never completed: the whole sleep
        return loop.time()

    assert run_virtual(main) == pytest.approx(4.0)


def test_sleep_unless_raises_at_once_for_a_stop_already_done() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        stop: asyncio.Future[None] = loop.create_future()
        stop.set_result(None)
        with pytest.raises(Stopped):
            await sleep_unless(stop, 5.0)
        return loop.time()

    assert run_virtual(main) == 0.0


def test_lookahead_bounds_the_slots_held_ahead() -> None:
    """With lookahead 1, a second caller reserves only once the first has used its slot."""

    async def main(loop: VirtualTimeLoop) -> int:
        ledger = CountingLedger(loop)
        limiter = SlidingWindowLimiter(RateLimit(1, 1.0), margin_s=0.0, clock=loop.time, ledger=ledger, lookahead=1)
        tasks = [asyncio.ensure_future(limiter.acquire()) for _ in range(3)]
        await asyncio.sleep(0.5)
        held = ledger.reservations
        await asyncio.gather(*tasks)
        return held

    assert run_virtual(main) == 2  # the one at 0.0 (used) and the one waiting for 1.0; the third waits its turn


def test_by_default_one_slot_is_held_ahead() -> None:
    async def main(loop: VirtualTimeLoop) -> int:
        ledger = CountingLedger(loop)
        limiter = SlidingWindowLimiter(RateLimit(1, 1.0), margin_s=0.0, clock=loop.time, ledger=ledger)
        tasks = [asyncio.ensure_future(limiter.acquire()) for _ in range(3)]
        await asyncio.sleep(0.5)
        held = ledger.reservations
        await asyncio.gather(*tasks)
        return held

    assert run_virtual(main) == 2


def test_the_limiter_asks_its_ledger_for_the_last_n_slots_and_to_keep_ten_spans() -> None:
    """A shared ledger prunes slots older than `keep_s`: it must keep well over one span, or other processes'
    recent slots would vanish from the rule's view."""

    async def main(loop: VirtualTimeLoop) -> list[tuple[int, float]]:
        ledger = CountingLedger(loop)
        limiter = SlidingWindowLimiter(RateLimit(4, 60.0), margin_s=1.0, clock=loop.time, ledger=ledger)
        await limiter.acquire()
        return ledger.asked

    ((recent, keep_s),) = run_virtual(main)
    assert recent == 4
    assert keep_s == pytest.approx(610.0)


def test_the_time_spent_waiting_adds_up_over_calls() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        await asyncio.sleep(100.0)  # a clock far from zero: the wait is measured, not the clock read
        limiter = SlidingWindowLimiter(RateLimit(1, 1.0), margin_s=0.0, clock=loop.time)
        for _ in range(3):
            await limiter.acquire()  # at 100 (no wait), then 101 and 102: one second each
        return limiter.wait_s

    assert run_virtual(main) == pytest.approx(2.0)


@dataclass
class CountingLedger:
    loop: VirtualTimeLoop
    inner: MemoryLedger | None = None
    reservations: int = 0
    asked: list[tuple[int, float]] = field(default_factory=list)

    async def reserve(self, rule: object, *, recent: int, keep_s: float) -> float:
        if self.inner is None:
            self.inner = MemoryLedger(self.loop.time)
        self.reservations += 1
        self.asked.append((recent, keep_s))
        return await self.inner.reserve(rule, recent=recent, keep_s=keep_s)  # type: ignore[arg-type]

    def pause_for(self, seconds: float) -> None:
        assert self.inner is not None
        self.inner.pause_for(seconds)


# --- the property: any arrivals, any retry mix ---------------------------------------------------------------


@dataclass
class Caller:
    arrive_at: float
    answers: list[float | None] = field(default_factory=list)  # one per 429 before success: its Retry-After


@dataclass
class Trace:
    sends: list[float] = field(default_factory=list)
    pauses: list[tuple[int, float, float]] = field(default_factory=list)  # (sends before it, at, seconds)
    limiter_span: float = 0.0


def drive(limit: RateLimit, callers: list[Caller], *, latency: float, seed: int) -> Trace:
    """Each caller does what the EQC stage does: take a slot, send, and on a 429 widen the margin, pause the
    quota for its Retry-After, back off by the retry policy, and take a new slot (every attempt counts)."""

    async def main(loop: VirtualTimeLoop) -> Trace:
        limiter = SlidingWindowLimiter(limit, clock=loop.time)
        trace = Trace(limiter_span=limiter.span_s)
        rng = random.Random(seed)
        policy = RetryPolicy(retries=10)

        async def one(caller: Caller) -> None:
            await asyncio.sleep(caller.arrive_at)
            for attempt, retry_after in enumerate([*caller.answers, "ok"], start=1):
                await limiter.acquire()
                trace.sends.append(loop.time())
                await asyncio.sleep(latency)
                if retry_after == "ok":
                    limiter.settle()
                    return
                limiter.widen()
                if retry_after is not None:
                    assert isinstance(retry_after, float)
                    limiter.pause_for(retry_after)
                    trace.pauses.append((len(trace.sends), loop.time(), retry_after))
                await asyncio.sleep(policy.delay(attempt, limit, rng, retry_after))

        await asyncio.gather(*(one(caller) for caller in callers))
        return trace

    return run_virtual(main)


callers_strategy = st.lists(
    st.builds(
        Caller,
        arrive_at=st.floats(0.0, 5.0, allow_nan=False),
        answers=st.lists(st.one_of(st.none(), st.floats(0.001, 3.0, allow_nan=False)), max_size=3),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=examples(150), deadline=None)
@given(
    requests=st.integers(1, 12),
    window_s=st.sampled_from([0.06, 1.0, 60.0]),
    callers=callers_strategy,
    latency_share=st.floats(0.0, 2.0, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_no_arrival_pattern_or_retry_mix_puts_more_than_n_sends_in_a_window_plus_margin(
    requests: int, window_s: float, callers: list[Caller], latency_share: float, seed: int
) -> None:
    limit = RateLimit(requests, window_s)
    trace = drive(limit, callers, latency=latency_share * window_s / requests, seed=seed)
    sends = sorted(trace.sends)
    assert len(sends) == sum(len(caller.answers) + 1 for caller in callers)  # every attempt went out, once
    span = trace.limiter_span  # window + the base margin: the widest the client promises to keep
    for first, later in zip(sends, sends[requests:], strict=False):
        assert later - first >= span - TOLERANCE * max(1.0, window_s)
    for sent_before, at, seconds in trace.pauses:
        # every send taken after a Retry-After was heard goes out once the pause is over
        assert all(t >= at + seconds - TOLERANCE for t in trace.sends[sent_before:])


def test_after_a_quiet_spell_one_send_goes_at_once_and_the_rest_are_paced() -> None:
    """The limiter waits no longer than the rule says: a fresh process sends its first N at once; once N
    sends were made it keeps them one spacing apart (bunched sends are what jitter past the server's window),
    so after a quiet spell the first goes at once and the next ones a spacing after each other."""
    trace = drive(RateLimit(3, 1.0), [Caller(0.0), Caller(0.0), Caller(0.0), *[Caller(5.0) for _ in range(3)]],
                  latency=0.0, seed=1)  # fmt: skip
    spacing = 1.005 / 3  # the default margin: 0.5% of the window
    assert trace.sends == pytest.approx([0.0, 0.0, 0.0, 5.0, 5.0 + spacing, 5.0 + 2 * spacing], abs=TOLERANCE)


# --- Retry-After in the retry policy -------------------------------------------------------------------------


def test_a_whole_second_retry_after_under_a_sub_second_window_holds_one_slot() -> None:
    """RFC 9110 has whole seconds only: `1` from a server with a 50 ms window is its wait rounded up, so it
    holds the account one slot's spacing, not twenty windows. Anything else is held as the server says."""
    policy = RetryPolicy()
    assert policy.hold_s(1.0, RateLimit(10, 0.05)) == pytest.approx(0.005)
    assert policy.hold_s(2.0, RateLimit(10, 0.05)) == pytest.approx(2.0)  # not a rounding: a real wait
    assert policy.hold_s(1.0, RateLimit(10, 1.0)) == pytest.approx(1.0)  # a window of a second: held
    assert policy.hold_s(1.0, RateLimit(10, 60.0)) == pytest.approx(1.0)
    assert policy.hold_s(0.004, RateLimit(10, 0.05)) == pytest.approx(0.004)  # a scaled simulator's fraction
    assert policy.hold_s(None, RateLimit(10, 0.05)) is None
    assert policy.hold_s(0.0, RateLimit(10, 0.05)) is None
    assert RetryPolicy(respect_retry_after=False).hold_s(3.0, RateLimit(10, 60.0)) is None
    assert policy.delay(1, RateLimit(10, 0.05), random.Random(1), 1.0) <= 0.005  # the back-off floor too


def test_retry_after_is_a_floor_of_the_back_off() -> None:
    limit = RateLimit(10, 1.0)
    rng = random.Random(3)
    for failures in range(1, 6):
        assert RetryPolicy().delay(failures, limit, rng, 7.5) >= 7.5
    ignoring = RetryPolicy(respect_retry_after=False)
    assert all(ignoring.delay(1, limit, rng, 7.5) <= 0.1 for _ in range(50))


def test_back_off_ceiling_doubles_per_failure_in_quota_slots_up_to_one_window() -> None:
    limit = RateLimit(10, 1.0)  # a slot is 0.1 s
    rng = random.Random(5)
    for failures, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        delays = [RetryPolicy().delay(failures, limit, rng) for _ in range(400)]
        assert max(delays) <= ceiling
        assert max(delays) >= 0.8 * ceiling  # full jitter reaches up to the ceiling
        assert min(delays) <= 0.2 * ceiling  # ... and down near zero


# --- the in-flight gate ----------------------------------------------------------------------------------------


def test_a_fresh_gate_has_nothing_in_flight() -> None:
    gate = ConcurrencyGate(1.0, burst=5)
    assert (gate.in_flight, gate.peak_in_flight, gate.target) == (0, 0, 5)


def test_the_gate_starts_at_the_burst_and_halves_on_a_429() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[int, int, int]:
        gate = ConcurrencyGate(10 / 60, burst=10)
        start = gate.target
        await gate.acquire()
        gate.release(None, throttled=True)
        halved = gate.target
        for _ in range(5):
            await gate.acquire()
            gate.release(None, throttled=True)
        return start, halved, gate.target

    assert run_virtual(main) == (10, 5, 1)  # never below the floor of one


def test_halving_an_odd_cap_rounds_down_to_a_whole_number() -> None:
    gate = ConcurrencyGate(1.0, burst=5)
    gate.in_flight = 1
    gate.release(None, throttled=True)
    assert gate.target == 2
    assert isinstance(gate.target, int)


def test_the_gate_grows_one_per_answer_up_to_rate_times_latency() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[int, int]:
        gate = ConcurrencyGate(10 / 60, burst=2)
        await gate.acquire()
        gate.release(40.0)
        assert gate.target == 3  # one more per answer, not more
        for _ in range(100):
            await gate.acquire()
            gate.release(40.0)  # 40 s latency at 1/6 per second: about 6.7 in flight keep the quota busy
        upper = gate.upper
        return gate.target, upper

    target, upper = run_virtual(main)
    assert upper == 12  # ceil(10/60 * 40 * 1.5) + 2
    assert target == upper


def test_the_gate_follows_latency_with_a_moving_average() -> None:
    gate = ConcurrencyGate(1.0, burst=4)
    gate._observe(10.0)
    gate._observe(20.0)
    assert gate.upper == 1 * 12 * 1.5 + 2  # ewma 0.8*10 + 0.2*20 = 12


def test_a_ceiling_caps_the_gate() -> None:
    gate = ConcurrencyGate(10.0, burst=50, ceiling=3)
    assert gate.target == 3
    gate._observe(100.0)
    assert gate.upper == 3


def test_waiters_are_served_in_order_and_the_peak_is_kept() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[list[int], int]:
        gate = ConcurrencyGate(1.0, burst=2)
        order: list[int] = []

        async def worker(index: int) -> None:
            await gate.acquire()
            order.append(index)
            await asyncio.sleep(1.0)
            gate.release_slot()

        await asyncio.gather(*(worker(i) for i in range(6)))
        return order, gate.peak_in_flight

    order, peak = run_virtual(main)
    assert order == [0, 1, 2, 3, 4, 5]
    assert peak == 2


def test_a_stopped_waiter_never_gets_a_slot() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[int, bool]:
        gate = ConcurrencyGate(1.0, burst=1)
        stop: asyncio.Future[None] = loop.create_future()
        await gate.acquire(stop)
        waiting = asyncio.ensure_future(gate.acquire(stop))
        await asyncio.sleep(0.1)
        stop.set_result(None)
        with pytest.raises(Stopped):
            await waiting
        gate.release_slot()
        with pytest.raises(Stopped):
            await gate.acquire(stop)  # already stopped: no slot either
        return gate.in_flight, stop.done()

    assert run_virtual(main) == (0, True)


def test_a_waiter_cancelled_after_being_handed_a_slot_gives_it_back() -> None:
    async def main(loop: VirtualTimeLoop) -> int:
        gate = ConcurrencyGate(1.0, burst=1)
        await gate.acquire()
        waiting = asyncio.ensure_future(gate.acquire())
        await asyncio.sleep(0)
        gate.release_slot()  # hands the slot to the waiter ...
        waiting.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return gate.in_flight

    assert run_virtual(main) == 0
