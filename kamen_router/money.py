"""Money and the YAML/JSON readers that keep it exact.

Prices are ``Decimal`` everywhere: YAML floats and JSON numbers are read
straight into ``Decimal`` from their text, never through ``float``.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

CENT = Decimal("0.01")


class _DecimalLoader(yaml.SafeLoader):
    """SafeLoader that reads YAML floats as ``Decimal`` from their source text."""


def _construct_decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    text = str(loader.construct_scalar(node)).replace("_", "")  # type: ignore[arg-type]
    try:
        return Decimal(text)
    except InvalidOperation:  # .inf / .nan
        return Decimal("NaN")


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


def load_yaml(text: str) -> Any:
    """Parse YAML safely, with floats as Decimal. Raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_DecimalLoader)


def loads_json(data: bytes | str) -> Any:
    """Parse JSON with non-integer numbers as Decimal (bytes in any of the
    encodings ``json.loads`` detects)."""
    if isinstance(data, bytes | bytearray):
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    return _DECODER.decode(data)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_money(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# one of each, made once (json.dumps and json.loads make a new one per call
# for anything but their defaults)
_DECODER = json.JSONDecoder(parse_float=Decimal)
_ENCODER = json.JSONEncoder(default=_json_default, ensure_ascii=False, separators=(",", ":"))


def dumps_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; Decimals become strings such as ``"99.20"``."""
    return _ENCODER.encode(value).encode()


def parse_money(value: object) -> Decimal | None:
    """A finite, non-negative Decimal from a Decimal, int or numeric string;
    None for anything else (floats included: they are never exact)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str) and 0 < len(value) <= 32:
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    if not result.is_finite() or result < 0:
        return None
    return result


def format_money(value: Decimal) -> str:
    """At least two decimals, more only if the value has them: 99.20, 0.015."""
    if value == value.quantize(CENT):
        return str(value.quantize(CENT))
    return str(value.normalize())
