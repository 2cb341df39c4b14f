"""Naps end on time, on a nudge, or on cancellation, and remember a nudge
that came between two naps (on trio's mock clock, jumping ahead whenever
every task sleeps: exact times)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
import trio
from trio.testing import MockClock

from kamen_router.naps import Naps


async def _with_naps(nursery: trio.Nursery) -> Naps:
    naps = Naps()
    await nursery.start(naps.run)
    return naps


async def test_naps_end_when_due_in_order(nursery: trio.Nursery, autojump_clock: MockClock) -> None:
    naps = await _with_naps(nursery)
    start = trio.current_time()
    ended: list[tuple[str, float, bool]] = []

    async def sleeper(key: str, seconds: float) -> None:
        woken = await naps.nap(key, seconds)
        ended.append((key, trio.current_time() - start, woken))

    async with trio.open_nursery() as inner:
        for key, seconds in (("c", 30.0), ("a", 5.0), ("b", 12.5)):
            inner.start_soon(sleeper, key, seconds)
    assert ended == [("a", 5.0, False), ("b", 12.5, False), ("c", 30.0, False)]
    assert len(naps) == 0


async def test_a_nudge_ends_a_nap_early(nursery: trio.Nursery, autojump_clock: MockClock) -> None:
    naps = await _with_naps(nursery)
    start = trio.current_time()
    result: list[tuple[float, bool]] = []

    async def sleeper() -> None:
        woken = await naps.nap("k", 600)
        result.append((trio.current_time() - start, woken))

    async with trio.open_nursery() as inner:
        inner.start_soon(sleeper)
        await trio.sleep(7)
        naps.nudge("k")
    assert result == [(7.0, True)]
    # its stale wake-up time passes without waking the next nap early
    assert await naps.nap("k", 1000) is False
    assert trio.current_time() - start == pytest.approx(1007)


async def test_a_nudge_between_naps_is_kept_once(nursery: trio.Nursery, autojump_clock: MockClock) -> None:
    naps = await _with_naps(nursery)
    naps.nudge("never-napped")  # unknown keys are not remembered
    assert await naps.nap("never-napped", 3) is False
    assert await naps.nap("k", 1) is False
    naps.nudge("k")
    naps.nudge("k")
    before = trio.current_time()
    assert await naps.nap("k", 100) is True
    assert trio.current_time() == before
    assert await naps.nap("k", 2) is False
    naps.forget("k")
    naps.nudge("k")
    assert await naps.nap("k", 2) is False


async def test_a_nudge_before_the_first_nap_is_kept_once_the_key_is_expected(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    """A callback can arrive between the submit reply and the follower's
    first nap: once the key is expected, that nudge ends the first nap."""
    naps = await _with_naps(nursery)
    naps.expect("k")
    naps.nudge("k")
    before = trio.current_time()
    assert await naps.nap("k", 120) is True
    assert trio.current_time() == before
    naps.expect("k")  # expecting again forgets no nudge, and adds none
    assert await naps.nap("k", 2) is False
    naps.nudge("k")
    naps.expect("k")
    assert await naps.nap("k", 120) is True


async def test_cancelling_a_nap_leaves_no_sleeper(nursery: trio.Nursery, autojump_clock: MockClock) -> None:
    naps = await _with_naps(nursery)
    with trio.move_on_after(5):
        await naps.nap("k", 50)
    assert len(naps) == 0
    naps.nudge("k")  # remembered for the next nap, harmlessly
    assert await naps.nap("k", 50) is True


async def test_an_earlier_nap_moves_the_timer_forward(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    naps = await _with_naps(nursery)
    start = trio.current_time()
    ends: dict[str, float] = {}

    async def sleeper(key: str, seconds: float) -> None:
        await naps.nap(key, seconds)
        ends[key] = trio.current_time() - start

    async with trio.open_nursery() as inner:
        inner.start_soon(sleeper, "late", 500)
        await trio.sleep(1)
        inner.start_soon(sleeper, "early", 2)
    assert ends == {"early": 3.0, "late": 500.0}


async def test_a_key_naps_once_at_a_time(nursery: trio.Nursery, autojump_clock: MockClock) -> None:
    naps = await _with_naps(nursery)
    async with trio.open_nursery() as inner:
        inner.start_soon(naps.nap, "k", 10)
        await trio.sleep(1)
        with pytest.raises(RuntimeError, match="napping already"):
            await naps.nap("k", 10)


async def test_a_sleeper_costs_less_than_an_event_and_a_cancel_scope(nursery: trio.Nursery) -> None:
    """The reason this module exists: 2,000 sleepers parked here take less
    memory than 2,000 sleeping on an Event under move_on_after."""
    naps = await _with_naps(nursery)
    count = 2000

    async def with_event() -> None:
        with trio.move_on_after(600):
            await trio.Event().wait()

    async def measure(sleeper: object) -> int:
        gc.collect()
        before = tracemalloc.take_snapshot()
        async with trio.open_nursery() as inner:
            for i in range(count):
                inner.start_soon(sleeper, f"k{i}")  # type: ignore[arg-type]
            await trio.sleep(0.05)
            gc.collect()
            after = tracemalloc.take_snapshot()
            inner.cancel_scope.cancel()
        return sum(d.size_diff for d in after.compare_to(before, "filename"))

    tracemalloc.start()
    try:
        parked = await measure(lambda key: naps.nap(key, 600))
        evented = await measure(lambda key: with_event())
    finally:
        tracemalloc.stop()
    assert parked < evented * 0.8, (parked / count, evented / count)
