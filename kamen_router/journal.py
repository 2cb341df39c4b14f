"""The journal: every order and attempt, in SQLite (WAL), written before the
action it enables.

The standard library's sqlite3 runs on a worker thread (``trio.to_thread``)
behind a capacity limiter of one, so calls are serialised and the event loop
never blocks on the disk. Each ``save`` is one transaction holding the order
row and all its attempts: a transition is either wholly on disk or not.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import trio

from .crypto import FieldCipher
from .errors import JournalError
from .orders import SETTLED, Attempt, AttemptState, Order, OrderRequest, State
from .outcome import Deliverables, Kind

T = TypeVar("T")

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
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
    error_message TEXT,
    resolution    TEXT
);
CREATE INDEX IF NOT EXISTS orders_state ON orders (state);
CREATE TABLE IF NOT EXISTS attempts (
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
CREATE INDEX IF NOT EXISTS attempts_order ON attempts (order_id);
"""

_ORDER_COLUMNS = (
    "order_id, request, state, created_at, updated_at, deadline_at,"
    " supplier, unit_price, deliverables, error_code, error_message, resolution"
)
_ATTEMPT_COLUMNS = (
    "attempt_key, order_id, seq, supplier, product_id, unit_price, state,"
    " outcome, reason, detail, latency_ms, supplier_ref, started_at, updated_at"
)


def _seal(cipher: FieldCipher | None, text: str | None, order_id: str, column: str) -> str | None:
    if text is None or cipher is None:
        return text
    return cipher.seal(text, f"{order_id}/{column}")


def _open(cipher: FieldCipher | None, text: str | None, order_id: str, column: str) -> str | None:
    if text is None:
        return None
    if cipher is None:
        if text.startswith("e1:"):
            raise JournalError("the journal holds encrypted values; configure journal.key_file")
        return text
    return cipher.open(text, f"{order_id}/{column}")


def _order_row(order: Order, cipher: FieldCipher | None) -> tuple[Any, ...]:
    deliverables = (
        None if order.deliverables is None else json.dumps(order.deliverables.to_json(), ensure_ascii=False)
    )
    return (
        order.order_id,
        _seal(
            cipher,
            json.dumps(order.request.identity(), separators=(",", ":"), ensure_ascii=False),
            order.order_id,
            "request",
        ),
        order.state.value,
        order.created_at,
        order.updated_at,
        order.deadline_at,
        order.supplier,
        None if order.unit_price is None else str(order.unit_price),
        _seal(cipher, deliverables, order.order_id, "deliverables"),
        order.error_code,
        order.error_message,
        None if order.resolution is None else json.dumps(order.resolution, ensure_ascii=False),
    )


def _attempt_row(order_id: str, a: Attempt) -> tuple[Any, ...]:
    return (
        a.key,
        order_id,
        a.seq,
        a.supplier,
        a.product_id,
        str(a.unit_price),
        a.state.value,
        None if a.outcome is None else a.outcome.value,
        a.reason,
        a.detail,
        a.latency_ms,
        a.supplier_ref,
        a.started_at,
        a.updated_at,
    )


def _order_from(row: sqlite3.Row, attempts: Iterable[sqlite3.Row], cipher: FieldCipher | None) -> Order:
    order_id = row["order_id"]
    request = _open(cipher, row["request"], order_id, "request")
    deliverables = _open(cipher, row["deliverables"], order_id, "deliverables")
    assert request is not None
    return Order(
        request=OrderRequest.from_identity(json.loads(request)),
        state=State(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deadline_at=row["deadline_at"],
        supplier=row["supplier"],
        unit_price=None if row["unit_price"] is None else Decimal(row["unit_price"]),
        deliverables=None if deliverables is None else Deliverables.from_json(json.loads(deliverables)),
        error_code=row["error_code"],
        error_message=row["error_message"],
        resolution=None if row["resolution"] is None else json.loads(row["resolution"]),
        attempts=[
            Attempt(
                key=a["attempt_key"],
                seq=a["seq"],
                supplier=a["supplier"],
                product_id=a["product_id"],
                unit_price=Decimal(a["unit_price"]),
                state=AttemptState(a["state"]),
                outcome=None if a["outcome"] is None else Kind(a["outcome"]),
                reason=a["reason"],
                detail=a["detail"],
                latency_ms=a["latency_ms"],
                supplier_ref=a["supplier_ref"],
                started_at=a["started_at"],
                updated_at=a["updated_at"],
            )
            for a in sorted(attempts, key=lambda r: r["seq"])
        ],
    )


class Journal:
    """Orders and attempts on disk. Open with ``open_journal``."""

    def __init__(self, db: sqlite3.Connection, path: Path, cipher: FieldCipher | None = None) -> None:
        self._db = db
        self.path = path
        self.cipher = cipher
        self._limiter = trio.CapacityLimiter(1)
        self.commits = 0
        self.commit_seconds = 0.0
        #: called with each commit's duration in seconds (from the worker thread)
        self.on_commit: Callable[[float], None] | None = None

    async def _run(self, fn: Callable[[], T]) -> T:
        def guarded() -> T:
            try:
                return fn()
            except sqlite3.Error as exc:
                raise JournalError(f"journal {self.path}: {exc}") from exc

        return await trio.to_thread.run_sync(guarded, limiter=self._limiter)

    # --------------------------------------------------------------- writes

    async def create(self, order: Order) -> Order | None:
        """Insert a new order. If its id is already there, write nothing and
        return the stored order instead."""

        def work() -> Order | None:
            with self._timed(), self._db:
                cur = self._db.execute(
                    f"INSERT OR IGNORE INTO orders ({_ORDER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    _order_row(order, self.cipher),
                )
                if cur.rowcount == 1:
                    self._write_attempts(order)
                    return None
            return self._load(order.order_id)

        return await self._run(work)

    async def save(self, order: Order) -> None:
        """Write the order and all its attempts in one transaction."""

        def work() -> None:
            with self._timed(), self._db:
                row = _order_row(order, self.cipher)
                self._db.execute(
                    "UPDATE orders SET state=?, updated_at=?, deadline_at=?, supplier=?, unit_price=?,"
                    " deliverables=?, error_code=?, error_message=?, resolution=? WHERE order_id=?",
                    (*row[2:3], *row[4:], order.order_id),
                )
                self._write_attempts(order)

        await self._run(work)

    def _write_attempts(self, order: Order) -> None:
        if order.attempts:
            self._db.executemany(
                f"INSERT OR REPLACE INTO attempts ({_ATTEMPT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [_attempt_row(order.order_id, a) for a in order.attempts],
            )

    def _timed(self) -> _CommitTimer:
        return _CommitTimer(self)

    # ---------------------------------------------------------------- reads

    def _load(self, order_id: str) -> Order | None:
        row = self._db.execute(
            f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id=?", (order_id,)
        ).fetchone()
        if row is None:
            return None
        attempts = self._db.execute(f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE order_id=?", (order_id,))
        return _order_from(row, attempts.fetchall(), self.cipher)

    def _load_where(self, where: str, params: tuple[Any, ...], limit: int | None) -> list[Order]:
        sql = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE {where} ORDER BY created_at"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._db.execute(sql, params).fetchall()
        if not rows:
            return []
        by_order: dict[str, list[sqlite3.Row]] = {r["order_id"]: [] for r in rows}
        ids = list(by_order)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for a in self._db.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE order_id IN ({marks})", chunk
            ):
                by_order[a["order_id"]].append(a)
        return [_order_from(r, by_order[r["order_id"]], self.cipher) for r in rows]

    async def load(self, order_id: str) -> Order | None:
        return await self._run(lambda: self._load(order_id))

    async def load_by_attempt(self, attempt_key: str) -> Order | None:
        """The order an attempt key belongs to (for callbacks)."""

        def work() -> Order | None:
            row = self._db.execute(
                "SELECT order_id FROM attempts WHERE attempt_key=?", (attempt_key,)
            ).fetchone()
            return None if row is None else self._load(row["order_id"])

        return await self._run(work)

    async def open_orders(self) -> list[Order]:
        """Every order the daemon still has to drive (not settled)."""
        marks = ",".join("?" * len(SETTLED))
        return await self._run(
            lambda: self._load_where(f"state NOT IN ({marks})", tuple(s.value for s in SETTLED), None)
        )

    async def orders_in(self, state: State, limit: int = 1000) -> list[Order]:
        return await self._run(lambda: self._load_where("state = ?", (state.value,), limit))

    async def close(self) -> None:
        await self._run(self._db.close)


class _CommitTimer:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def __enter__(self) -> None:
        import time

        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        import time

        elapsed = time.perf_counter() - self.start
        self.journal.commits += 1
        self.journal.commit_seconds += elapsed
        if self.journal.on_commit is not None:
            self.journal.on_commit(elapsed)


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # created owner-only: the journal holds accounts and card secrets
        path.touch(mode=0o600)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level="DEFERRED")
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives power loss, not only a crash of the process
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=5000")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise JournalError(f"journal {path} has schema {version}; this version knows {SCHEMA_VERSION}")
    with db:
        if version == 1:  # 1 -> 2: orders gained the resolution column
            db.execute("ALTER TABLE orders ADD COLUMN resolution TEXT")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return db


async def open_journal(path: Path, cipher: FieldCipher | None = None) -> Journal:
    """Open (creating if needed) the journal at ``path``; with ``cipher``,
    accounts and deliverables are sealed at rest."""

    def work() -> sqlite3.Connection:
        try:
            return _connect(path)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        except OSError as exc:
            raise JournalError(f"cannot open journal {path}: {exc.strerror}") from exc

    return Journal(await trio.to_thread.run_sync(work), path, cipher)
