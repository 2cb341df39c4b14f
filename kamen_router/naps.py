"""Naps: many tasks sleeping until a time or until woken, at little memory.

Every order the router follows (an attempt PENDING at its supplier) spends
nearly all its time asleep until its next query is due, or until a callback
wakes it. With ``trio.move_on_after`` and a ``trio.Event`` per sleeper that
costs about 1.4 KB more per order than parking the task directly, which is
what this does: one heap of wake-up times, one timer task for all of them,
and each sleeper parked with ``trio.lowlevel.wait_task_rescheduled``.

A nudge for a key nobody is napping on is remembered, once, while the key is
known (from ``expect`` or its first nap until ``forget``): the next nap on it
returns at once, so a wake-up that arrives between two naps, or before the
first, is not lost.
"""

from __future__ import annotations

import heapq
import math

import outcome
import trio
import trio.lowlevel


class Naps:
    """Sleeps keyed by a string, on trio's clock; ``run`` must be running
    for them to end on time (a nudge or a cancellation ends one regardless)."""

    def __init__(self) -> None:
        #: (due, ticket, key); entries whose ticket is no longer the key's
        #: are stale (woken early) and dropped when they come up
        self._due: list[tuple[float, int, str]] = []
        #: key -> (sleeping task, its ticket)
        self._parked: dict[str, tuple[trio.lowlevel.Task, int]] = {}
        #: key -> whether a nudge is waiting for its next nap
        self._known: dict[str, bool] = {}
        self._tickets = 0
        self._timer: trio.CancelScope | None = None

    def __len__(self) -> int:
        """Tasks napping now."""
        return len(self._parked)

    async def nap(self, key: str, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True when a nudge ended it (or one
        was waiting), False when the time ran out. One nap per key at a time."""
        if self._known.get(key):
            self._known[key] = False
            await trio.lowlevel.checkpoint()
            return True
        if key in self._parked:
            raise RuntimeError(f"{key!r} is napping already")
        self._known[key] = False
        if seconds <= 0:
            await trio.lowlevel.checkpoint()
            return False
        self._tickets += 1
        ticket = self._tickets
        due = trio.current_time() + seconds
        heapq.heappush(self._due, (due, ticket, key))
        self._parked[key] = (trio.lowlevel.current_task(), ticket)
        if self._timer is not None and due < self._timer.deadline:
            self._timer.deadline = due

        def abort(_: object) -> trio.lowlevel.Abort:
            self._parked.pop(key, None)
            return trio.lowlevel.Abort.SUCCEEDED

        woken: bool = await trio.lowlevel.wait_task_rescheduled(abort)
        return woken

    def nudge(self, key: str) -> None:
        """End the nap on ``key``, or the next one if none is under way (when
        the key is known)."""
        parked = self._parked.pop(key, None)
        if parked is not None:
            trio.lowlevel.reschedule(parked[0], outcome.Value(True))
        elif key in self._known:
            self._known[key] = True

    def expect(self, key: str) -> None:
        """The key will nap: from now on a nudge for it is remembered even
        before its first nap (a callback can overtake the task on its way
        to it)."""
        self._known.setdefault(key, False)

    def forget(self, key: str) -> None:
        """The key will not nap again: drop what is remembered of it."""
        self._known.pop(key, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wake each sleeper when its time comes, until cancelled."""
        task_status.started()
        while True:
            now = trio.current_time()
            while self._due and self._due[0][0] <= now:
                _due, ticket, key = heapq.heappop(self._due)
                parked = self._parked.get(key)
                if parked is not None and parked[1] == ticket:
                    del self._parked[key]
                    trio.lowlevel.reschedule(parked[0], outcome.Value(False))
            with trio.CancelScope(deadline=self._due[0][0] if self._due else math.inf) as self._timer:
                await trio.sleep_forever()
            self._timer = None


__all__ = ["Naps"]
