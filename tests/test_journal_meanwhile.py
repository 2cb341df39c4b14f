"""``Journal.save(order, meanwhile)``: work done while the save commits."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from kamen_router.errors import JournalError
from kamen_router.journal import Journal, open_journal
from kamen_router.orders import Order, OrderRequest


def _order() -> Order:
    return Order.receive(OrderRequest("m1", "steam-50", account="13812345678"), time.time())


def _state_on_disk(path: Path) -> str | None:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT state FROM orders WHERE order_id='m1'").fetchone()
    return None if row is None else str(row[0])


async def _hold_writer(journal: Journal, release: trio.Event) -> None:
    """Keep the writer thread busy until ``release`` is set."""
    token = trio.lowlevel.current_trio_token()

    def held(db: sqlite3.Connection) -> None:
        trio.from_thread.run(release.wait, trio_token=token)

    await journal._write(held)


async def test_meanwhile_runs_while_the_write_is_queued(tmp_path: Path) -> None:
    with trio.fail_after(20):
        journal = await open_journal(tmp_path / "j.sqlite3")
        try:
            order = _order()
            await journal.create(order)
            order.start_routing(time.time())
            release = trio.Event()
            seen: list[str | None] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_hold_writer, journal, release)
                await trio.sleep(0.05)

                def meanwhile() -> None:
                    # queued, not yet committed: the writer is held
                    seen.append(_state_on_disk(journal.path))
                    release.set()

                await journal.save(order, meanwhile)
                seen.append(_state_on_disk(journal.path))
            assert seen == ["received", "routing"]
        finally:
            await journal.close()


async def test_a_failing_meanwhile_still_waits_for_the_commit(tmp_path: Path) -> None:
    with trio.fail_after(20):
        journal = await open_journal(tmp_path / "j.sqlite3")
        try:
            order = _order()
            await journal.create(order)
            order.start_routing(time.time())

            def meanwhile() -> None:
                raise RuntimeError("boom")

            with pytest.raises(RuntimeError, match="boom"):
                await journal.save(order, meanwhile)
            assert _state_on_disk(journal.path) == "routing"
        finally:
            await journal.close()
        calls: list[int] = []
        with pytest.raises(JournalError):
            await journal.save(order, lambda: calls.append(1))
        assert calls == [1]
