"""A stored row as readers take it: checked (row_problem, then row_check's domains), migrated once to today's
shape (migrate: version steps, then the fields an older schema lacks), and the labels readers group it by
(variant, hardware, software, code). Also what `lstmbench run` cost beyond its rows (harness_overhead)."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..measure import STATUSES, RunRecord
from .row_check import nested_problem, value_problem

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_KEYS = tuple(f.name for f in dataclasses.fields(RunRecord))
ROW_KEYS = ("schema_version", "suite", "strategy", "seed", "device", "status")  # what every reader groups by
SUITE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")  # as a suite's `name:` (it names a folder)
_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,), "dict": (dict,)}
_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false", "list": "a list",
          "dict": "an object", "None": "null"}


def row_problem(row: Any) -> str | None:
    """What is wrong with a stored row, read back from JSON, as a sentence; None for a row every reader can use.

    Checked: it is an object; the keys every reader groups by are there with their types; every other field of
    RunRecord has its declared type (or null); an ok row's numbers are finite and its tokens/s positive; then
    each number's domain, the names readers build on, and every nested field (row_check). A row of a newer
    schema is not judged here: the reader refuses the whole file (see storage)."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not a result row (an object)"
    if "schema_version" not in row or "strategy" not in row:
        return "not an lstmbench result row (no schema_version or strategy)"
    for key in ROW_KEYS:
        if row.get(key) is None:
            return f"{key} is missing"
    hints = _field_types()
    for key, value in row.items():
        allowed = hints.get(key)
        if allowed is None or (value is None and "None" in allowed):
            continue
        types = tuple(t for name in allowed for t in _TYPES.get(name, ()))
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            return f"{key} is {_quote(value)}, not {' or '.join(_NAMES.get(a, a) for a in allowed)}"
        if row["status"] == "ok" and not all(math.isfinite(v) for v in _floats(value)):
            return f"{key} is {_quote(value)} in an ok row (a measured number must be finite)"
    if row["schema_version"] < 1:
        return f"schema_version is {row['schema_version']}, not a version (1 or more)"
    if not SUITE_NAME.fullmatch(row["suite"]):
        return f"suite is {_quote(row['suite'])}, not a suite name (letters, digits, '_', '.', '-')"
    if row["status"] not in STATUSES:
        return f"status is {_quote(row['status'])}, not one of {', '.join(STATUSES)}"
    if row["status"] == "ok" and not (isinstance(row.get("tokens_per_s"), (int, float)) and row["tokens_per_s"] > 0):
        return f"an ok row with tokens_per_s {_quote(row.get('tokens_per_s'))} (a measured run has a positive one)"
    return value_problem(row) or nested_problem(row)


def migrate(row: dict[str, Any]) -> dict[str, Any]:
    """A valid stored row in today's shape, once, on reading (asv's way): each version step it predates, then the
    fields it lacks as their defaults. Its schema_version stays as it was: it says what its figures measured
    (compare reads it), and no reader asks again."""
    for since, step in MIGRATIONS:
        if row["schema_version"] < since:
            step(row)
    return complete_row(row)


def _efficiency_was_another_quantity(row: dict[str, Any]) -> None:
    """Schema 1 divided by the seed's ideal run (2 on: by the run's own unpadded reference): not comparable, left
    out of every figure."""
    row["efficiency"] = None


# (the first schema_version without it, the step): applied in order to the rows that predate it
MIGRATIONS = [(2, _efficiency_was_another_quantity)]


def rows_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as the readers take them (report, recommend, compare): each migrated, as a frame. What storage loads
    is made this way; a library user's own rows go through here too."""
    import pandas as pd  # here: a run's process imports this module (harness_overhead) and holds no pandas

    return pd.DataFrame([migrate(dict(row)) for row in rows])


def complete_row(row: dict[str, Any]) -> dict[str, Any]:
    """A valid row with the fields it lacks (an older schema's, or a hand-made row's) as their defaults,
    else empty ('' for text, 0 for a count), so that no reader meets a missing key."""
    empty = {"str": "", "int": 0}
    for f in dataclasses.fields(RunRecord):
        if f.name not in row:
            row[f.name] = (f.default if f.default is not dataclasses.MISSING
                           else f.default_factory() if f.default_factory is not dataclasses.MISSING
                           else empty.get(_field_types()[f.name][0]))
    return row


@functools.lru_cache(maxsize=1)
def _field_types() -> dict[str, tuple[str, ...]]:
    """field -> the JSON-level type names it may hold, from RunRecord's annotations ('float | None' gives
    ('float', 'None'); a Literal of choices, such as Status, is a 'str')."""
    hints = typing.get_type_hints(RunRecord)
    return {f.name: _type_names(hints[f.name]) for f in dataclasses.fields(RunRecord)}


def _type_names(hint: Any) -> tuple[str, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(name for arg in typing.get_args(hint) for name in _type_names(arg))
    if typing.get_origin(hint) is typing.Literal:
        return ("str",)
    if hint is type(None):
        return ("None",)
    return ((typing.get_origin(hint) or hint).__name__,)


def _floats(value: Any) -> list[float]:
    """The floats of a number or a flat list of numbers (the windows' tokens/s)."""
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, float)]


def _quote(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:40] + "..."


def variant_of(row: dict[str, Any]) -> list[str]:
    """What sets apart rows of one suite, strategy and device made differently on purpose: the sweep point
    and the DDP world size, e.g. ['launch.nproc=2', '2 ranks']. Such rows are never compared or pooled."""
    point = row.get("sweep") if isinstance(row.get("sweep"), dict) else {}
    parts = [f"{k}={v}" for k, v in point.items()]
    world = row.get("world_size")
    if isinstance(world, (int, float)) and world == world and world > 1:  # world == world: not NaN
        parts.append(f"{int(world)} ranks")
    return parts


def hardware(env: Any) -> str:
    """The hardware a row was measured on: CPU model and core count, plus the GPU on CUDA."""
    if not isinstance(env, dict) or not (env.get("cpu") or env.get("device_name")):
        return "unknown machine"
    gpu = env.get("device_name")
    cpu = env.get("cpu") or "?"
    cpu += f" ({env['cpu_id']})" if env.get("cpu_id") else ""
    return f"{cpu} x{env.get('cpu_count') or '?'}" + (f", {gpu}" if gpu and gpu != "cpu" else "")


def software(env: Any) -> str:
    """The numerical stack: torch, and on CUDA its CUDA and cuDNN versions ('torch 2.13.0+cpu')."""
    if not isinstance(env, dict):
        return "torch ?"
    text = f"torch {env.get('torch') or '?'}"
    if env.get("cuda"):
        text += f", CUDA {env['cuda']}"
    if env.get("cudnn"):
        text += f", cuDNN {env['cudnn']}"
    return text


def code(env: Any) -> str:
    """The code that measured a row: lstmbench's version and commit ('-dirty' with uncommitted changes)."""
    if not isinstance(env, dict):
        return "lstmbench ?"
    commit = env.get("git_commit")
    at = commit[:7] + ("-dirty" if commit.endswith("-dirty") else "") if commit else "no commit"
    return f"lstmbench {env.get('lstmbench') or '?'} at {at}"


@dataclass(frozen=True)
class Overhead:
    """What `lstmbench run` cost beyond what its rows measured (starting runs, data, warm-up, checks, the
    unpadded reference, memory counting): the wall time against the rows' training and evaluation time."""
    wall_s: float
    train_s: float  # train_time_cold_s summed: the timed steps, with the first shapes at what they cost
    eval_s: float  # eval_time_s + eval_periodic_time_s summed

    @property
    def ratio(self) -> float:
        return self.wall_s / (self.train_s + self.eval_s)

    def sentence(self) -> str:
        busy = self.train_s + self.eval_s
        return (f"harness overhead: {1 - busy / self.wall_s:.0%} of wall time (wall {self.wall_s:,.1f} s; training "
                f"{self.train_s:,.1f} s and evaluation {self.eval_s:,.1f} s in the rows: {self.ratio:.2f}x)")


def harness_overhead(rows: list[dict[str, Any]], wall_s: float) -> Overhead | None:
    """None when no run succeeded (nothing was measured to compare the wall time with)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    train = sum(_number(r.get("train_time_cold_s")) for r in ok)
    evals = sum(_number(r.get("eval_time_s")) + _number(r.get("eval_periodic_time_s")) for r in ok)
    return Overhead(wall_s, train, evals) if ok and train + evals > 0 and wall_s > 0 else None


def _number(value: Any) -> float:
    """A row's seconds, 0 for a missing or NaN value (pandas writes NaN for null)."""
    return float(value) if isinstance(value, (int, float)) and value == value else 0.0
