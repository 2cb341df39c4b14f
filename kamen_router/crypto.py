"""Encryption at rest for the journal's sensitive columns.

Accounts (inside the stored order request) and deliverables (card numbers
and passwords, receipts) are sealed with AES-256-GCM under the key in
``journal.key_file``. Each value carries the id of the key that sealed it,
so keys can be rotated: the new key seals, old keys listed in
``journal.old_key_files`` still open what they sealed (see
docs/security.md). The associated data binds each value to its order and
column, so a value copied into another row does not open.

Sealed text looks like ``e1:<key id>:<base64 of nonce + ciphertext>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import JournalError, KamenRouterError

PREFIX = "e1:"
KEY_BYTES = 32


class KeyError_(KamenRouterError):
    """Raised when a key file is missing, unreadable or malformed."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"kamen-router journal key" + key).hexdigest()[:8]


def read_key(path: Path) -> bytes:
    """A key file: one line of base64 holding 32 random bytes."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise KeyError_(
            f"key file {path} does not exist; create it with `kamen-router keygen -o {path}`"
        ) from None
    except OSError as exc:
        raise KeyError_(f"cannot read key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KeyError_(
            f"key file {path} is not a kamen-router key (make one with kamen-router keygen)"
        ) from None
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyError_(f"key file {path} is not a kamen-router key (make one with kamen-router keygen)")
    return key


def write_new_key(path: Path) -> str:
    """Create a key file (mode 0600); never overwrite. Returns its key id."""
    key = os.urandom(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyError_(f"{path} exists; not overwriting a key (the journal may need it)") from None
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
    return key_id(key)


class FieldCipher:
    """Seals and opens journal values."""

    def __init__(self, primary: bytes, others: Iterable[bytes] = ()) -> None:
        self.primary_id = key_id(primary)
        self._primary = AESGCM(primary)
        self._keys = {key_id(k): AESGCM(k) for k in (*others, primary)}

    @classmethod
    def from_files(cls, key_file: Path, old_key_files: Iterable[Path] = ()) -> FieldCipher:
        return cls(read_key(key_file), [read_key(p) for p in old_key_files])

    def seal(self, text: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._primary.encrypt(nonce, text.encode(), context.encode())
        return f"{PREFIX}{self.primary_id}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, value: str, context: str) -> str:
        if not value.startswith(PREFIX):
            return value  # written before encryption was turned on
        try:
            kid, payload = value[len(PREFIX) :].split(":", 1)
            # strict: only the alphabet and proper padding (as b64decode's
            # validate, at a seventh of its cost: a start opens every open order)
            raw = binascii.a2b_base64(payload, strict_mode=True)
        except (ValueError, binascii.Error):
            raise JournalError("a sealed journal value is malformed") from None
        aead = self._keys.get(kid)
        if aead is None:
            raise JournalError(
                f"a journal value is sealed with key {kid}, which is not configured (old_key_files?)"
            )
        try:
            return aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except InvalidTag:
            raise JournalError(
                "a sealed journal value failed authentication (wrong key or tampered)"
            ) from None

    def needs_rekey(self, value: str) -> bool:
        return value.startswith(PREFIX) and not value.startswith(f"{PREFIX}{self.primary_id}:")
