"""Accounts and card secrets are sealed in the journal; keys rotate."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
import trio

from kamen_router.crypto import FieldCipher, KeyError_, read_key, write_new_key
from kamen_router.errors import JournalError
from kamen_router.journal import open_journal
from kamen_router.orders import Order, OrderRequest
from kamen_router.outcome import Card, Deliverables, Delivered

ACCOUNT = "13812345678"
PASSWORD = "PW-SECRET-777"


async def _delivered_order(journal_path: Path, cipher: FieldCipher | None) -> None:
    journal = await open_journal(journal_path, cipher)
    order = Order.receive(OrderRequest("o1", "steam-50", account=ACCOUNT), time.time())
    await journal.create(order)
    attempt = order.start_attempt("s1", "P1", Decimal("48.50"), time.time())
    order.record(attempt, Delivered(Deliverables((Card("CARD-NUMBER-123", PASSWORD, None),))), time.time())
    await journal.save(order)
    await journal.close()


def _raw(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


async def test_accounts_and_cards_are_sealed_and_read_back(tmp_path: Path) -> None:
    with trio.fail_after(10):
        write_new_key(tmp_path / "k1")
        cipher = FieldCipher.from_files(tmp_path / "k1")
        path = tmp_path / "j.sqlite3"
        await _delivered_order(path, cipher)
        raw = _raw(path)
        for secret in (ACCOUNT, PASSWORD, "CARD-NUMBER-123"):
            assert secret.encode() not in raw
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        journal = await open_journal(path, cipher)
        order = await journal.load("o1")
        await journal.close()
        assert order is not None and order.request.account == ACCOUNT
        assert order.deliverables is not None and order.deliverables.cards[0].password == PASSWORD


async def test_a_wrong_key_or_no_key_cannot_read(tmp_path: Path) -> None:
    with trio.fail_after(10):
        write_new_key(tmp_path / "k1")
        write_new_key(tmp_path / "k2")
        path = tmp_path / "j.sqlite3"
        await _delivered_order(path, FieldCipher.from_files(tmp_path / "k1"))
        for cipher in (FieldCipher.from_files(tmp_path / "k2"), None):
            journal = await open_journal(path, cipher)
            with pytest.raises(JournalError):
                await journal.load("o1")
            await journal.close()


async def test_rotation_reads_old_rows_with_the_old_key(tmp_path: Path) -> None:
    with trio.fail_after(10):
        write_new_key(tmp_path / "old")
        write_new_key(tmp_path / "new")
        path = tmp_path / "j.sqlite3"
        await _delivered_order(path, FieldCipher.from_files(tmp_path / "old"))
        rotated = FieldCipher.from_files(tmp_path / "new", [tmp_path / "old"])
        journal = await open_journal(path, rotated)
        order = await journal.load("o1")
        await journal.close()
        assert order is not None and order.request.account == ACCOUNT


def test_keygen_never_overwrites_and_keys_are_checked(tmp_path: Path) -> None:
    write_new_key(tmp_path / "k")
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(KeyError_):
        write_new_key(tmp_path / "k")
    (tmp_path / "bad").write_text("not a key\n")
    with pytest.raises(KeyError_, match="not a kamen-router key"):
        read_key(tmp_path / "bad")
    with pytest.raises(KeyError_, match="keygen"):
        read_key(tmp_path / "missing")


def test_a_sealed_value_does_not_open_in_another_row(tmp_path: Path) -> None:
    write_new_key(tmp_path / "k")
    cipher = FieldCipher.from_files(tmp_path / "k")
    sealed = cipher.seal("13812345678", "o1/request")
    assert cipher.open(sealed, "o1/request") == "13812345678"
    with pytest.raises(JournalError):
        cipher.open(sealed, "o2/request")
