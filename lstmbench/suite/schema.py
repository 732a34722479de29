"""Typed-dataclass validation for the suite: unknown keys (with a did-you-mean), types, choices, ranges.

Every failure is a SuiteError naming the file and the full key path.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import typing
from typing import Any

from ..errors import SuiteError

MAX_SEED = 2**32 - 1  # numpy's and torch's seeds: 0 to 2**32 - 1 everywhere


class At:
    """Where in the file a check is; raises SuiteError with the full key path."""

    def __init__(self, file: str, path: str):
        self.file, self.path = file, path

    def fail(self, key: str, message: str) -> typing.NoReturn:
        key = key if re.fullmatch(r"[\w.\[\]-]{1,80}", key) else short(key)  # a key of "\n" must not break the line
        raise SuiteError(self.file, f"{self.path}.{key}" if self.path else key, message)

    def positive(self, key: str, value: float) -> None:
        if not (value > 0 and math.isfinite(value)):
            self.fail(key, f"must be > 0, got {value}" if math.isfinite(value) else f"must be finite, got {value}")

    def nonnegative(self, key: str, value: float) -> None:
        if not (value >= 0 and math.isfinite(value)):
            self.fail(key, f"must be >= 0, got {value}" if math.isfinite(value) else f"must be finite, got {value}")


def build(cls: type, raw: Any, path: str, file: str, **given: Any) -> Any:
    """Check keys and types of `raw` against dataclass `cls`, recurse into nested configs, run cls.check."""
    if not isinstance(raw, dict):
        raise SuiteError(file, path, f"must be a mapping, got {typename(raw)}")
    at = At(file, path)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name not in ("origin", "point") and f.name not in given}
    kwargs: dict[str, Any] = dict(given)
    for key, value in raw.items():
        if key not in known:
            at.fail(str(key), f"unknown key{suggest(str(key), known)}; valid: {names(known)}")
        kwargs[key] = coerce(hints[key], value, at, key, file)
    choices = getattr(cls, "CHOICES", {})
    for key, allowed in choices.items():
        if key in kwargs and kwargs[key] not in allowed:
            at.fail(key, f"unknown value {short(kwargs[key])}{suggest(str(kwargs[key]), allowed)}; "
                         f"valid: {names(allowed)}")
    obj = cls(**kwargs)
    obj.check(at)
    return obj


def coerce(hint: Any, value: Any, at: At, key: str, file: str) -> Any:
    sub = f"{at.path}.{key}" if at.path else key
    if dataclasses.is_dataclass(hint):
        return build(hint, value, sub, file)
    if hint in (bool, int, float) or hint is str or typing.get_origin(hint) is typing.Literal:
        return _scalar(hint, value, at, key)
    if hint is dict:  # sweep: key path -> list of values; model.options: name -> value
        if not isinstance(value, dict):
            what = "option names to values" if key == "options" else "key paths to lists of values"
            at.fail(key, f"must be a mapping of {what}, got {typename(value)}")
        if key == "options" and not all(isinstance(k, str) for k in value):
            at.fail(key, f"must be a mapping of option names to values, got {short(value)}")
        return value
    if typing.get_origin(hint) is tuple:  # seeds
        return _seeds(value, at, key)
    raise AssertionError(f"no coercion for {hint}")  # pragma: no cover - a schema bug, not a user error


def _scalar(hint: Any, value: Any, at: At, key: str) -> Any:
    """A YAML scalar as the field's type: true/false, an integer, a number, a string (or a choice's value)."""
    if hint is bool:
        if not isinstance(value, bool):
            at.fail(key, f"must be true or false, got {short(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            at.fail(key, f"must be an integer, got {short(value)}")
        return value
    if hint is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)  # PyYAML reads 1e-3 (no dot) as a string: YAML 1.1's float rule
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            at.fail(key, f"must be a number, got {short(value)}")
        return float(value)
    # a string, or a choice's value (checked against CHOICES)
    if not isinstance(value, str):
        at.fail(key, f"must be a string, got {short(value)}")
    return value


def _seeds(value: Any, at: At, key: str) -> tuple[int, ...]:
    """seeds: one integer or a list of them, each from 0 to MAX_SEED."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    value = list(value) if isinstance(value, tuple) else value
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        at.fail(key, f"must be a list of integers, got {short(value)}")
    if any(not 0 <= v <= MAX_SEED for v in value):
        at.fail(key, f"must be integers from 0 to 4294967295 (2**32 - 1), got {short(value)}")
    return tuple(value)


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 40, 40, 6, 4, 2


def short(value: Any) -> str:
    """A value as a message quotes it: repr, cut to a line (a value may be a megabyte of YAML)."""
    return _SHORT.repr(value)


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def typename(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__)


def names(options: Any) -> str:
    return ", ".join(sorted(options)) if not isinstance(options, tuple) else ", ".join(options)


def suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
