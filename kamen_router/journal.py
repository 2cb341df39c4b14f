"""The journal: every order and attempt, in SQLite (WAL), written before the
action it enables.

Writes go to one writer thread that owns the write connection and commits
in groups: every ``create`` and ``save`` that arrives while a commit is on
its way to disk waits in a queue, and the next transaction takes them all
at once, with one ``fsync`` for the lot. Each call still returns only once
its own transaction has committed (``synchronous=FULL``: durable across
power loss), so "committed before the action it enables" holds for each
one; under load many orders simply share a commit. A transition is wholly
on disk or not at all: a ``save`` is the order row and all its attempts.
A call whose statements fail is retried alone so that it cannot take the
rest of its group down with it.

Reads (``load``, ``open_orders``, ...) run on a separate read connection
through ``trio.to_thread`` (WAL lets them proceed while a commit is on its
way to disk); they see every write whose call has returned. The event
loop never blocks on the disk.

Rows are built when a call is made, in the caller's thread: what is written
is the order as it was when ``save`` was called, even if another task
changes it while the write waits for its group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from .crypto import FieldCipher
from .errors import JournalError
from .orders import SETTLED, Attempt, AttemptState, Order, OrderRequest, State
from .outcome import Deliverables, Kind

T = TypeVar("T")

log = logging.getLogger("kamen_router.journal")

SCHEMA_VERSION = 3

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
"""

_ORDER_COLUMNS = (
    "order_id, request, state, created_at, updated_at, deadline_at,"
    " supplier, unit_price, deliverables, error_code, error_message, resolution"
)
_ATTEMPT_COLUMNS = (
    "attempt_key, order_id, seq, supplier, product_id, unit_price, state,"
    " outcome, reason, detail, latency_ms, supplier_ref, started_at, updated_at"
)


#: the page size of a new journal
PAGE_SIZE = 1024

#: writes taken into one transaction at most (a bound on one commit's time)
MAX_GROUP = 512

_INSERT_ORDER = f"INSERT OR IGNORE INTO orders ({_ORDER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_UPDATE_ORDER = (
    "UPDATE orders SET state=?, updated_at=?, deadline_at=?, supplier=?, unit_price=?,"
    " deliverables=?, error_code=?, error_message=?, resolution=? WHERE order_id=?"
)
# an attempt's identity (key, order, seq, supplier, product, price, start)
# never changes: only its progress is updated, in place
_UPSERT_ATTEMPT = (
    f"INSERT INTO attempts ({_ATTEMPT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (attempt_key) DO UPDATE SET state=excluded.state, outcome=excluded.outcome,"
    " reason=excluded.reason, detail=excluded.detail, latency_ms=excluded.latency_ms,"
    " supplier_ref=excluded.supplier_ref, updated_at=excluded.updated_at"
)
#: states the daemon still drives: read through the state index, so a start
#: does not scan every settled order the journal has ever held
_OPEN_STATES = tuple(s.value for s in State if s not in SETTLED)


# JSON for the journal's text columns (made once: json.dumps makes an
# encoder per call for anything but its defaults)
_to_text = json.JSONEncoder(ensure_ascii=False).encode
_to_compact_text = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


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


def _deliverables_text(order: Order, cipher: FieldCipher | None) -> str | None:
    if order.deliverables is None:
        return None
    text = _to_text(order.deliverables.to_json())
    return _seal(cipher, text, order.order_id, "deliverables")


def _order_row(order: Order, cipher: FieldCipher | None) -> tuple[Any, ...]:
    return (
        order.order_id,
        _seal(
            cipher,
            _to_compact_text(order.request.identity()),
            order.order_id,
            "request",
        ),
        order.state.value,
        order.created_at,
        order.updated_at,
        order.deadline_at,
        order.supplier,
        None if order.unit_price is None else str(order.unit_price),
        _deliverables_text(order, cipher),
        order.error_code,
        order.error_message,
        None if order.resolution is None else _to_text(order.resolution),
    )


def _update_params(order: Order, cipher: FieldCipher | None) -> tuple[Any, ...]:
    """The parameters of ``_UPDATE_ORDER``: everything but the request, which
    never changes after ``create`` (so it is not sealed again on every save)."""
    return (
        order.state.value,
        order.updated_at,
        order.deadline_at,
        order.supplier,
        None if order.unit_price is None else str(order.unit_price),
        _deliverables_text(order, cipher),
        order.error_code,
        order.error_message,
        None if order.resolution is None else _to_text(order.resolution),
        order.order_id,
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


# Rows are plain tuples in the column order of _ORDER_COLUMNS and
# _ATTEMPT_COLUMNS, and enum members come from dicts rather than by calling
# the enum: a start reads every open order, 100,000 of them at times.
_STATES = {s.value: s for s in State}
_ATTEMPT_STATES = {s.value: s for s in AttemptState}
_KINDS = {k.value: k for k in Kind}


def _decimal(text: str, _seen: dict[str, Decimal] = {}) -> Decimal:  # noqa: B006
    # a journal holds few distinct prices: parse each once (Decimals are immutable)
    value = _seen.get(text)
    if value is None:
        value = Decimal(text)
        if len(_seen) < 10_000:
            _seen[text] = value
    return value


# _attempt_from builds Attempts positionally (a third cheaper than by
# keyword); a change to Attempt's fields must show here, not as swapped values
_ATTEMPT_FIELDS = (
    "key",
    "seq",
    "supplier",
    "product_id",
    "unit_price",
    "state",
    "started_at",
    "updated_at",
    "outcome",
    "reason",
    "detail",
    "latency_ms",
    "supplier_ref",
)
if tuple(f.name for f in attrs.fields(Attempt)) != _ATTEMPT_FIELDS:
    raise ImportError("orders.Attempt changed its fields: update journal._attempt_from")


def _attempt_from(a: tuple[Any, ...]) -> Attempt:
    return Attempt(
        a[0],
        a[2],
        a[3],
        a[4],
        _decimal(a[5]),
        _ATTEMPT_STATES[a[6]],
        a[12],
        a[13],
        None if a[7] is None else _KINDS[a[7]],
        a[8],
        a[9],
        a[10],
        a[11],
    )


def _order_from(row: tuple[Any, ...], attempts: list[tuple[Any, ...]], cipher: FieldCipher | None) -> Order:
    order_id = row[0]
    request = _open(cipher, row[1], order_id, "request")
    deliverables = _open(cipher, row[8], order_id, "deliverables")
    assert request is not None
    return Order(
        request=OrderRequest.from_identity(json.loads(request)),
        state=_STATES[row[2]],
        created_at=row[3],
        updated_at=row[4],
        deadline_at=row[5],
        supplier=row[6],
        unit_price=None if row[7] is None else _decimal(row[7]),
        deliverables=None if deliverables is None else Deliverables.from_json(json.loads(deliverables)),
        error_code=row[9],
        error_message=row[10],
        resolution=None if row[11] is None else json.loads(row[11]),
        attempts=[
            _attempt_from(a)
            for a in (attempts if len(attempts) < 2 else sorted(attempts, key=lambda a: a[2]))
        ],
    )


def _load(db: sqlite3.Connection, order_id: str, cipher: FieldCipher | None) -> Order | None:
    row = db.execute(f"SELECT {_ORDER_COLUMNS} FROM orders WHERE order_id=?", (order_id,)).fetchone()
    if row is None:
        return None
    attempts = db.execute(f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE order_id=?", (order_id,))
    return _order_from(row, attempts.fetchall(), cipher)


def _load_where(
    db: sqlite3.Connection,
    where: str,
    params: Sequence[Any],
    limit: int | None,
    cipher: FieldCipher | None,
) -> list[Order]:
    sql = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE {where} ORDER BY created_at"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    rows = db.execute(sql, tuple(params)).fetchall()
    if not rows:
        return []
    by_order: dict[str, list[tuple[Any, ...]]] = {r[0]: [] for r in rows}
    ids = list(by_order)
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        for a in db.execute(f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE order_id IN ({marks})", chunk):
            by_order[a[1]].append(a)
    return [_order_from(r, by_order[r[0]], cipher) for r in rows]


#: order ids per attempts query (SQLite allows 32,766 parameters)
_CHUNK = 10_000

_JOINED_COLUMNS = (
    ", ".join(f"o.{c.strip()}" for c in _ORDER_COLUMNS.split(","))
    + ", "
    + ", ".join(f"a.{c.strip()}" for c in _ATTEMPT_COLUMNS.split(","))
)
_ORDER_WIDTH = len(_ORDER_COLUMNS.split(","))
_OPEN_WHERE = f"o.state IN ({','.join('?' * len(_OPEN_STATES))})"


def _open_keys(db: sqlite3.Connection) -> tuple[list[str], set[str]]:
    """The ids of every open order, oldest first, and the keys of all their
    attempts: narrow rows, a tenth of the cost of reading the orders."""
    created: dict[str, float] = {}
    keys: set[str] = set()
    sql = (
        "SELECT o.order_id, o.created_at, a.attempt_key"
        f" FROM orders o LEFT JOIN attempts a ON a.order_id = o.order_id WHERE {_OPEN_WHERE}"
    )
    for order_id, created_at, key in db.execute(sql, _OPEN_STATES):
        created[order_id] = created_at
        if key is not None:
            keys.add(key)
    return sorted(created, key=created.__getitem__), keys


def _load_ids(db: sqlite3.Connection, ids: Sequence[str], cipher: FieldCipher | None) -> list[Order]:
    """The orders ``ids`` (in that order; missing ones left out) with their
    attempts, from one join: each order's row comes with each attempt."""
    rows: dict[str, tuple[Any, ...]] = {}
    attempts: dict[str, list[tuple[Any, ...]]] = {}
    width = _ORDER_WIDTH
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        sql = (
            f"SELECT {_JOINED_COLUMNS} FROM orders o LEFT JOIN attempts a ON a.order_id = o.order_id"
            f" WHERE o.order_id IN ({','.join('?' * len(chunk))})"
        )
        for joined in db.execute(sql, chunk):
            order_id = joined[0]
            mine = attempts.get(order_id)
            if mine is None:
                rows[order_id] = joined
                mine = attempts[order_id] = []
            if joined[width] is not None:
                mine.append(joined[width:])
    return [_order_from(rows[i], attempts[i], cipher) for i in ids if i in rows]


@attrs.frozen
class JournalStatistics:
    """A snapshot of the journal's write path (``Journal.statistics()``)."""

    #: transactions committed
    commits: int
    #: ``create`` and ``save`` calls they carried (writes / commits is the
    #: mean group size)
    writes: int
    #: seconds spent writing and committing, in all
    commit_seconds: float
    #: the most writes one transaction carried
    largest_group: int
    #: writes waiting for the next transaction right now
    queued: int


@attrs.define(eq=False)
class _Write:
    """One ``create`` or ``save`` on its way to the writer thread."""

    work: Callable[[sqlite3.Connection], Any]
    token: trio.lowlevel.TrioToken
    done: trio.Event
    #: called in the trio thread once the write is on disk (or failed),
    #: before its caller resumes: see ``Journal.create``
    then: Callable[[Any, BaseException | None], None] | None = None
    result: Any = None
    error: BaseException | None = None


def _wake(writes: list[_Write]) -> None:
    for write in writes:
        if write.then is not None:
            try:
                write.then(write.result, write.error)
            except Exception:
                # (raised here, it would end the trio run: the daemon)
                log.exception("journal: a write's follow-up failed")
        write.done.set()


class Journal:
    """Orders and attempts on disk. Open with ``open_journal``."""

    def __init__(
        self,
        db: sqlite3.Connection,
        path: Path,
        cipher: FieldCipher | None = None,
        *,
        reader: sqlite3.Connection,
    ) -> None:
        self._db = db  # the writer thread's alone once it runs
        self._reader = reader
        self.path = path
        self.cipher = cipher
        self._read_limiter = trio.CapacityLimiter(1)
        # writes waiting for the next group, and the writer thread's state:
        # it is woken (``_wakeup`` released) only when it is idle, so a
        # busy writer costs its callers no signal at all
        self._lock = threading.Lock()
        self._pending: list[_Write] = []
        self._idle = True
        self._stopping = False
        self._wakeup = threading.Lock()
        self._wakeup.acquire()
        self._closed = False
        self.commits = 0
        self.writes = 0
        self.commit_seconds = 0.0
        self._largest_group = 0
        #: called with each commit's duration in seconds (from the writer thread)
        self.on_commit: Callable[[float], None] | None = None
        self._writer = threading.Thread(target=self._write_loop, name=f"journal {path.name}", daemon=True)
        self._writer.start()

    def statistics(self) -> JournalStatistics:
        return JournalStatistics(
            self.commits, self.writes, self.commit_seconds, self._largest_group, len(self._pending)
        )

    # --------------------------------------------------------------- writes

    async def create(
        self, order: Order, then: Callable[[Order | None, BaseException | None], None] | None = None
    ) -> Order | None:
        """Insert a new order. If its id is already there, write nothing and
        return the stored order instead.

        ``then(result, error)``, if given, is called in the trio thread as
        soon as the commit is known, before this call returns: tasks it
        starts or wakes run alongside the caller instead of after it (a
        scheduler round sooner). It must not raise (what it raises is
        logged) and not block."""
        row = _order_row(order, self.cipher)
        attempts = [_attempt_row(order.order_id, a) for a in order.attempts]
        cipher = self.cipher

        def work(db: sqlite3.Connection) -> Order | None:
            if db.execute(_INSERT_ORDER, row).rowcount == 1:
                if attempts:
                    db.executemany(_UPSERT_ATTEMPT, attempts)
                return None
            return _load(db, order.order_id, cipher)

        result: Order | None = await self._write(work, then)
        return result

    async def save(
        self, order: Order, then: Callable[[None, BaseException | None], None] | None = None
    ) -> None:
        """Write the order and all its attempts in one transaction; ``then``
        as for ``create``."""
        params = _update_params(order, self.cipher)
        attempts = [_attempt_row(order.order_id, a) for a in order.attempts]

        def work(db: sqlite3.Connection) -> None:
            db.execute(_UPDATE_ORDER, params)
            if attempts:
                db.executemany(_UPSERT_ATTEMPT, attempts)

        await self._write(work, then)

    async def _write(
        self,
        work: Callable[[sqlite3.Connection], Any],
        then: Callable[[Any, BaseException | None], None] | None = None,
    ) -> Any:
        if self._closed:
            raise JournalError(f"journal {self.path} is closed")
        write = _Write(work, trio.lowlevel.current_trio_token(), trio.Event(), then)
        self._enqueue(write)
        # Once queued, the write happens whatever becomes of the caller, as
        # a worker thread's call always did; waiting it out keeps the
        # caller's view true ("returned" means "on disk"). Bounded by one
        # commit of at most MAX_GROUP writes.
        with trio.CancelScope(shield=True):
            await write.done.wait()
        if write.error is not None:
            raise write.error
        return write.result

    # -------------------------------------------------- the writer thread

    def _enqueue(self, write: _Write | None) -> None:
        with self._lock:
            if write is None:
                self._stopping = True
            else:
                self._pending.append(write)
            wake, self._idle = self._idle, False
        if wake:
            self._wakeup.release()

    def _write_loop(self) -> None:
        while True:
            self._wakeup.acquire()
            while True:
                with self._lock:
                    # everything that arrived while the last commit was on
                    # its way to disk goes in this one
                    group = self._pending[:MAX_GROUP]
                    del self._pending[:MAX_GROUP]
                    if not group:
                        self._idle = True
                        stopping = self._stopping
                        break
                self._commit_group(group)
                self._hand_back(group)
            if stopping:
                return

    def _commit_group(self, writes: list[_Write]) -> None:
        db = self._db
        start = time.perf_counter()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for write in writes:
                    write.result = write.work(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except Exception as exc:
            if len(writes) == 1:
                writes[0].result = None
                writes[0].error = (
                    JournalError(f"journal {self.path}: {exc}") if isinstance(exc, sqlite3.Error) else exc
                )
                return
            # one bad write must not take the others down: each alone
            for write in writes:
                self._commit_group([write])
            return
        elapsed = time.perf_counter() - start
        self.commits += 1
        self.writes += len(writes)
        self.commit_seconds += elapsed
        self._largest_group = max(self._largest_group, len(writes))
        if self.on_commit is not None:
            self.on_commit(elapsed)

    @staticmethod
    def _hand_back(writes: list[_Write]) -> None:
        by_token: dict[trio.lowlevel.TrioToken, list[_Write]] = {}
        for write in writes:
            by_token.setdefault(write.token, []).append(write)
        for token, mine in by_token.items():
            # (a run that has finished has nobody left to wait for them)
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(_wake, mine)

    # ---------------------------------------------------------------- reads

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def guarded() -> T:
            try:
                return fn(self._reader)
            except sqlite3.Error as exc:
                raise JournalError(f"journal {self.path}: {exc}") from exc

        return await trio.to_thread.run_sync(guarded, limiter=self._read_limiter)

    async def load(self, order_id: str) -> Order | None:
        cipher = self.cipher
        return await self._read(lambda db: _load(db, order_id, cipher))

    async def load_by_attempt(self, attempt_key: str) -> Order | None:
        """The order an attempt key belongs to (for callbacks)."""
        cipher = self.cipher

        def work(db: sqlite3.Connection) -> Order | None:
            row = db.execute("SELECT order_id FROM attempts WHERE attempt_key=?", (attempt_key,)).fetchone()
            return None if row is None else _load(db, row[0], cipher)

        return await self._read(work)

    async def open_orders(self) -> list[Order]:
        """Every order the daemon still has to drive (not settled), oldest
        first."""
        ids, _keys = await self.open_keys()
        return await self.load_many(ids)

    async def open_keys(self) -> tuple[list[str], set[str]]:
        """The ids of the orders the daemon still has to drive, oldest
        first, and the keys of all their attempts (see ``load_many``)."""
        return await self._read(_open_keys)

    async def load_many(self, ids: Sequence[str]) -> list[Order]:
        """The orders ``ids``, in that order (ids not found are left out)."""
        cipher = self.cipher
        return await self._read(lambda db: _load_ids(db, ids, cipher))

    async def orders_in(self, state: State, limit: int = 1000) -> list[Order]:
        cipher = self.cipher
        return await self._read(lambda db: _load_where(db, "state = ?", (state.value,), limit, cipher))

    async def close(self) -> None:
        """Finish every write already made, then close (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._enqueue(None)
        await trio.to_thread.run_sync(self._writer.join)
        self._db.close()
        await self._read(lambda db: db.close())


def _pragmas(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA busy_timeout=5000")
    # the B-tree pages of a journal holding millions of orders: lookups
    # and inserts stay off the disk (the default cache is 2 MB)
    db.execute("PRAGMA cache_size=-32768")


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # created owner-only: the journal holds accounts and card secrets
        path.touch(mode=0o600)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level="DEFERRED")
    if path.stat().st_size == 0:
        # A new journal: every commit writes each page it touches to the
        # WAL whole, and a commit touches about six (two tables, four
        # indexes) to change a few hundred bytes; pages of 1 KiB (from 4)
        # take a fifth off each commit. Set only here: a journal keeps the
        # page size it was made with.
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
    db.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives power loss, not only a crash of the process
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    _pragmas(db)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise JournalError(f"journal {path} has schema {version}; this version knows {SCHEMA_VERSION}")
    with db:
        if version == 1:  # 1 -> 2: orders gained the resolution column
            db.execute("ALTER TABLE orders ADD COLUMN resolution TEXT")
        if 0 < version < 3:
            # 2 -> 3: an index of attempts by order alone went; the index of
            # UNIQUE (order_id, seq) finds them, and every commit that adds
            # an attempt wrote one page fewer
            db.execute("DROP INDEX IF EXISTS attempts_order")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    # the writer thread opens and commits its own transactions (one per group)
    db.isolation_level = None
    return db


def _connect_reader(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA query_only=ON")
    _pragmas(db)
    return db


async def open_journal(path: Path, cipher: FieldCipher | None = None) -> Journal:
    """Open (creating if needed) the journal at ``path``; with ``cipher``,
    accounts and deliverables are sealed at rest."""

    def work() -> tuple[sqlite3.Connection, sqlite3.Connection]:
        try:
            db = _connect(path)
            return db, _connect_reader(path)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        except OSError as exc:
            raise JournalError(f"cannot open journal {path}: {exc.strerror}") from exc

    db, reader = await trio.to_thread.run_sync(work)
    return Journal(db, path, cipher, reader=reader)
