"""Protocol-independent helpers shared by the supplier plugins: reading a
JSON reply with a numeric code, integers sent as numbers or strings, and
keeping credentials out of details copied from a supplier's text.

Not a plugin (its name starts with ``_``); plugins import it as
``kamen_router_plugins._common``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import httpx

from kamen_router.money import loads_json
from kamen_router.outcome import Failed, Invalid, Outcome, RateLimited, Rejected, Unknown

#: the longest detail copied from a supplier's text
MAX_DETAIL = 200

_INTEGER = re.compile(r"-?[0-9]{1,11}")


def as_int(value: object) -> int | None:
    """An integer sent as a number or as a decimal string ("3", "-1")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    return None


def decode_coded_json(response: httpx.Response, code_ok: int) -> dict[str, Any] | Unknown:
    """The reply's JSON object with an integer ``code``, or why it is UNKNOWN
    (``code_ok`` sent with an HTTP error status is UNKNOWN too)."""
    status = response.status_code
    try:
        data = loads_json(response.content)
    except (ValueError, UnicodeDecodeError):
        data = None
    code = as_int(data.get("code")) if isinstance(data, dict) else None
    if status >= 500:
        return Unknown(f"HTTP {status}" + (f", code {code}" if code is not None else ""))
    if not isinstance(data, dict):
        return Unknown(f"unparseable reply (HTTP {status})")
    if code is None:
        return Unknown(f"reply without a code (HTTP {status})")
    if code == code_ok and not response.is_success:
        return Unknown(f"code {code_ok} with HTTP {status}")
    data["code"] = code
    return data


def message(data: Mapping[str, Any]) -> str:
    """The reply's ``msg`` text, trimmed to a detail's length."""
    msg = data.get("msg")
    return msg.strip()[:MAX_DETAIL] if isinstance(msg, str) else ""


Detailed = Unknown | Failed | Rejected | Invalid | RateLimited


def with_detail(outcome: Detailed, detail: str) -> Outcome:
    """``outcome`` with its detail replaced."""
    if isinstance(outcome, Unknown):
        return attrs.evolve(outcome, detail=detail)
    if isinstance(outcome, Failed):
        return attrs.evolve(outcome, detail=detail)
    if isinstance(outcome, Rejected):
        return attrs.evolve(outcome, detail=detail)
    if isinstance(outcome, Invalid):
        return attrs.evolve(outcome, detail=detail)
    return attrs.evolve(outcome, detail=detail)


def redact(outcome: Outcome, secrets: Iterable[str], *, min_length: int = 1) -> Outcome:
    """Keep credentials out of details copied from the supplier's text
    (details are journaled); secrets shorter than ``min_length`` are left."""
    if not isinstance(outcome, Detailed) or not outcome.detail:
        return outcome
    detail = clean = outcome.detail
    for secret in secrets:
        if len(secret) >= min_length:
            clean = clean.replace(secret, "***")
    return outcome if clean == detail else with_detail(outcome, clean)
