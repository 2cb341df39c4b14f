"""Journals written by earlier versions open and are brought up to date in
place, their orders intact; a journal from a later version is refused."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import trio

from kamen_router.errors import JournalError
from kamen_router.journal import SCHEMA_VERSION, open_journal
from kamen_router.orders import OrderRequest, State

# the schema as versions 1 and 2 wrote it (1 lacked orders.resolution)
_OLD_SCHEMA = """
CREATE TABLE orders (
    order_id      TEXT PRIMARY KEY,
    request       TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    deadline_at   REAL NOT NULL,
    supplier      TEXT,
    unit_price    TEXT,
    deliverables  TEXT,
    error_code    TEXT,
    error_message TEXT{resolution}
);
CREATE INDEX orders_state ON orders (state);
CREATE TABLE attempts (
    attempt_key   TEXT PRIMARY KEY,
    order_id      TEXT NOT NULL REFERENCES orders (order_id),
    seq           INTEGER NOT NULL,
    supplier      TEXT NOT NULL,
    product_id    TEXT NOT NULL,
    unit_price    TEXT NOT NULL,
    state         TEXT NOT NULL,
    outcome       TEXT,
    reason        TEXT,
    detail        TEXT,
    latency_ms    REAL,
    supplier_ref  TEXT,
    started_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    UNIQUE (order_id, seq)
);
CREATE INDEX attempts_order ON attempts (order_id);
"""


# attempt_key, order_id, seq, supplier, product_id, unit_price, state,
# outcome, reason, detail, latency_ms, supplier_ref, started_at, updated_at
_OLD_ATTEMPT = (
    "KRA0001",
    "old-1",
    1,
    "sup-a",
    "P50",
    "48.50",
    "delivered",
    "delivered",
    None,
    None,
    120.0,
    "R1",
    1.0e9,
    1.0e9 + 2,
)


def _old_journal(path: Path, version: int) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(_OLD_SCHEMA.format(resolution=",\n    resolution TEXT" if version >= 2 else ""))
        db.execute(
            "INSERT INTO orders (order_id, request, state, created_at, updated_at, deadline_at,"
            " supplier, unit_price, deliverables) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                "old-1",
                json.dumps(OrderRequest("old-1", "steam-50", account="13812345678").identity()),
                "delivered",
                1.0e9,
                1.0e9 + 2,
                1.0e9 + 300,
                "sup-a",
                "48.50",
                '{"cards":[{"number":"C1","password":"S1"}],"receipt":null}',
            ),
        )
        db.execute(
            "INSERT INTO attempts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            _OLD_ATTEMPT,
        )
        db.execute(f"PRAGMA user_version={version}")


def _indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}


@pytest.mark.parametrize("version", [1, 2])
async def test_an_older_journal_is_brought_up_to_date_with_its_orders(tmp_path: Path, version: int) -> None:
    path = tmp_path / "j.sqlite3"
    _old_journal(path, version)
    assert "attempts_order" in _indexes(path)
    with trio.fail_after(20):
        journal = await open_journal(path)
        try:
            order = await journal.load("old-1")
            assert order is not None
            assert order.state is State.DELIVERED
            assert order.deliverables is not None and order.deliverables.cards[0].password == "S1"
            assert [a.supplier_ref for a in order.attempts] == ["R1"]
            assert order.resolution is None
            # and it takes writes of this version (resolution included)
            assert (await journal.load_by_attempt("KRA0001")) is not None
        finally:
            await journal.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # attempts are still found by order through the UNIQUE (order_id, seq) index
    assert "attempts_order" not in _indexes(path)


async def test_a_journal_from_a_later_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    _old_journal(path, 2)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(JournalError, match="schema"):
        await open_journal(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert db.execute("SELECT order_id, state FROM orders").fetchall() == [("old-1", "delivered")]
    assert "attempts_order" in _indexes(path)


async def test_a_new_journal_has_small_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """Small pages make each commit write less; a journal made before keeps
    the page size it has (SQLite cannot change it in WAL mode)."""
    from kamen_router.journal import PAGE_SIZE

    new, old = tmp_path / "new.sqlite3", tmp_path / "old.sqlite3"
    _old_journal(old, 2)  # made at SQLite's default page size
    with sqlite3.connect(old) as db:
        old_size = db.execute("PRAGMA page_size").fetchone()[0]
    assert old_size != PAGE_SIZE
    for path in (new, old):
        journal = await open_journal(path)
        await journal.close()
    with sqlite3.connect(new) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 1024
    with sqlite3.connect(old) as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == old_size
        assert db.execute("SELECT order_id FROM orders").fetchall() == [("old-1",)]
