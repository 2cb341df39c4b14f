"""The journal commits in groups: writes that arrive while a commit is on its
way to disk share the next one, and each still returns only once its own
transaction has committed."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from kamen_router.crypto import FieldCipher, write_new_key
from kamen_router.errors import JournalError
from kamen_router.journal import Journal, open_journal
from kamen_router.orders import AttemptState, Order, OrderRequest, State
from kamen_router.outcome import Deliverables, Delivered, Pending


def _order(i: int) -> Order:
    return Order.receive(OrderRequest(f"o{i}", "steam-50", account="13812345678"), time.time())


async def _hold_writer(journal: Journal, seconds: float, started: trio.Event) -> None:
    """Keep the writer thread busy, as a slow fsync would."""

    token = trio.lowlevel.current_trio_token()

    def slow(db: sqlite3.Connection) -> None:
        trio.from_thread.run_sync(started.set, trio_token=token)
        time.sleep(seconds)

    await journal._write(slow)


def _on_disk(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT order_id FROM orders")}


async def test_writes_that_wait_share_one_commit(tmp_path: Path) -> None:
    with trio.fail_after(20):
        journal = await open_journal(tmp_path / "j.sqlite3")
        try:
            started = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_hold_writer, journal, 0.3, started)
                await started.wait()
                for i in range(20):
                    nursery.start_soon(journal.create, _order(i))
            stats = journal.statistics()
            assert stats.writes == 21
            assert stats.commits == 2, stats
            assert stats.largest_group == 20
            assert _on_disk(journal.path) == {f"o{i}" for i in range(20)}
        finally:
            await journal.close()


async def test_a_write_returns_only_once_committed(tmp_path: Path) -> None:
    with trio.fail_after(20):
        journal = await open_journal(tmp_path / "j.sqlite3")
        try:
            order = _order(1)
            await journal.create(order)
            order.start_routing(time.time())
            order.start_attempt("s1", "P1", Decimal("48.50"), time.time())
            await journal.save(order)
            # another connection (another process would do the same) sees it
            with sqlite3.connect(journal.path) as db:
                assert db.execute("SELECT state FROM orders").fetchone()[0] == "submitted"
                assert db.execute("SELECT count(*) FROM attempts").fetchone()[0] == 1
        finally:
            await journal.close()


async def test_a_failing_write_does_not_fail_its_group(tmp_path: Path) -> None:
    with trio.fail_after(20):
        journal = await open_journal(tmp_path / "j.sqlite3")
        outcomes: dict[str, object] = {}

        async def create(i: int) -> None:
            outcomes[f"o{i}"] = await journal.create(_order(i))

        async def bad() -> None:
            try:
                await journal._write(lambda db: db.execute("INSERT INTO no_such_table VALUES (1)"))
            except JournalError as exc:
                outcomes["bad"] = exc

        try:
            started = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_hold_writer, journal, 0.3, started)
                await started.wait()
                nursery.start_soon(create, 1)
                nursery.start_soon(bad)
                nursery.start_soon(create, 2)
            assert isinstance(outcomes["bad"], JournalError)
            assert outcomes["o1"] is None and outcomes["o2"] is None
            assert _on_disk(journal.path) == {"o1", "o2"}
        finally:
            await journal.close()


async def test_a_cancelled_caller_still_waits_for_its_commit(tmp_path: Path) -> None:
    with trio.fail_after(20):
        journal = await open_journal(tmp_path / "j.sqlite3")
        try:
            started = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_hold_writer, journal, 0.3, started)
                await started.wait()
                with trio.move_on_after(0.01):
                    await journal.create(_order(7))
                # the create was on its way: it committed before returning
                assert _on_disk(journal.path) == {"o7"}
        finally:
            await journal.close()


async def test_close_finishes_what_was_written(tmp_path: Path) -> None:
    with trio.fail_after(20):
        journal = await open_journal(tmp_path / "j.sqlite3")
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(journal.create, _order(i))
            await trio.lowlevel.checkpoint()
        await journal.close()
        await journal.close()  # idempotent
        assert len(_on_disk(journal.path)) == 10
        with pytest.raises(JournalError, match="closed"):
            await journal.create(_order(99))


async def test_orders_and_attempts_read_back_whole(tmp_path: Path) -> None:
    with trio.fail_after(20):
        write_new_key(tmp_path / "k")
        cipher = FieldCipher.from_files(tmp_path / "k")
        journal = await open_journal(tmp_path / "j.sqlite3", cipher)
        try:
            order = _order(1)
            await journal.create(order)
            now = time.time()
            order.start_routing(now)
            first = order.start_attempt("s1", "P1", Decimal("48.50"), now)
            order.record(first, Pending(supplier_ref="S1-1"), now, 12.5)
            await journal.save(order)
            order.end_attempt(first, AttemptState.FAILED, "not_found", now + 1)
            second = order.start_attempt("s2", "P2", Decimal("49.125"), now + 2)
            order.record(second, Delivered(Deliverables(receipt="SN1"), Decimal("49.10")), now + 3, 30.0)
            await journal.save(order)
            loaded = await journal.load("o1")
            assert loaded == order
            assert loaded is not None and loaded.state is State.DELIVERED
            assert [a.seq for a in loaded.attempts] == [1, 2]
            assert (await journal.open_orders()) == []
            assert (await journal.orders_in(State.DELIVERED)) == [order]
            assert (await journal.load_by_attempt(second.key)) == order
        finally:
            await journal.close()
