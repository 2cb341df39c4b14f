"""A small strict reader for YAML mappings.

Every lookup names its key path, every problem is collected rather than
raised at once, and keys nobody asked for are reported as unknown. Values are
never echoed in messages, because some of them are secrets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

from .errors import Problem

T = TypeVar("T")
_MISSING: Any = object()


def type_name(value: object) -> str:
    if value is None:
        return "nothing"
    return {
        bool: "a boolean",
        int: "an integer",
        Decimal: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


class Problems:
    """Collects problems for one file."""

    def __init__(self, file: str, sink: list[Problem]) -> None:
        self.file = file
        self.sink = sink

    def add(self, key: str, message: str) -> None:
        self.sink.append(Problem(self.file, key, message))


class Node:
    """A mapping being read, at a key path inside one file."""

    def __init__(self, problems: Problems, data: object, path: str = "") -> None:
        self.problems = problems
        self.path = path
        self.ok = True
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            problems.add(path or "(top level)", f"expected a mapping, got {type_name(data)}")
            data = {}
            self.ok = False
        self.data: Mapping[Any, Any] = data
        self._seen: set[Any] = set()

    def key(self, name: object) -> str:
        return f"{self.path}.{name}" if self.path else str(name)

    def error(self, name: object, message: str) -> None:
        self.problems.add(self.key(name), message)

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self._seen.add(name)
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            self.error(name, "is required")
        return default

    def get(
        self,
        name: str,
        convert: Callable[[Any], T],
        default: Any = _MISSING,
        *,
        check: Callable[[T], str | None] | None = None,
    ) -> T:
        """Read ``name`` and convert it; on any problem record it and return
        ``default`` (or None when the key is required)."""
        self._seen.add(name)
        if name not in self.data or (self.data[name] is None and default is not _MISSING):
            if default is _MISSING:
                self.error(name, "is required")
                return None  # type: ignore[return-value]
            return default  # type: ignore[no-any-return]
        try:
            value = convert(self.data[name])
        except ValueError as exc:
            self.error(name, str(exc))
            return None if default is _MISSING else default  # type: ignore[return-value]
        if check is not None:
            message = check(value)
            if message:
                self.error(name, message)
                return None if default is _MISSING else default  # type: ignore[return-value]
        return value

    def child(self, name: str) -> Node:
        self._seen.add(name)
        return Node(self.problems, self.data.get(name), self.key(name))

    def finish(self) -> None:
        """Report every key that no reader asked for."""
        for name in self.data:
            if name not in self._seen:
                self.error(name, "unknown key")


# converters: raise ValueError with a message that never contains the value


def as_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type_name(value)}")
    return value


def as_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {type_name(value)}")
    return value


def as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {type_name(value)}")
    return value


def as_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
        raise ValueError(f"expected a number, got {type_name(value)}")
    result = float(value)
    if result != result or result in (float("inf"), float("-inf")):
        raise ValueError("expected a finite number")
    return result


def as_money(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"expected a price, got {type_name(value)}")
    try:
        result = Decimal(value) if not isinstance(value, Decimal) else value
    except ArithmeticError:
        raise ValueError("expected a price such as 99.20") from None
    if not result.is_finite() or result <= 0:
        raise ValueError("must be a positive price")
    return result


def between(low: float | None, high: float | None) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        if low is not None and value < low:
            return f"must be at least {low:g}"
        if high is not None and value > high:
            return f"must be at most {high:g}"
        return None

    return check


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"
