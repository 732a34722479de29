"""A stored row's values and nested fields, checked as untrusted input (results folders are shared).

`rows.row_problem` checks each flat field's type; this module checks what that leaves open: the domain of
each number (an accuracy in [0, 1], a time or a rate non-negative), the characters of the text that readers turn
into file names, headings or code (`suite_hash`, `device`, `strategy`), and the shape of every nested field a
reader walks (`config`, `env`, `curve`, `accuracy_by_length`, the windows, `disturbed_attempts`, `sweep`). Each
check returns the first problem as the end of a sentence, or None.
"""
from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from ..errors import LstmbenchError
from ..suite import suite_from_dict

STRATEGY_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,100}")  # as a suite's strategy names (config.StrategySpec)
SUITE_HASH = re.compile(r"[A-Za-z0-9]{1,64}")  # Suite.hash: 12 hex digits
# a torch device ("cpu", "cuda:0") or a GPU's marketing name ("NVIDIA A100-SXM4-80GB", "Intel(R) Max 1550")
DEVICE = re.compile(r"[A-Za-z0-9_.:()+ -]{1,100}")
# model.factory as a suite writes it (file.py:function or package.module:function), or '' for lstmbench's model
FACTORY = re.compile(r"([A-Za-z0-9_./-]{1,200}:[A-Za-z_][A-Za-z0-9_]{0,99})?")
HASH = re.compile(r"[0-9a-f]{0,64}")
# accuracies and shares of a whole: 0 to 1 (not data_time_fraction: loader workers prepare batches in parallel with
# the step, and their seconds over the step's passed 1 in real rows)
UNIT_FIELDS = ("eval_accuracy", "eval_accuracy_exact", "target_accuracy", "pad_fraction", "straggler_wait_fraction",
               "planned_wait_fraction")
SIGNED_FIELDS = ("shape_warmup_s",)  # a difference of two timings: noise can make it negative
NUMBER_LISTS = ("window_tokens_per_s", "reference_window_tokens_per_s", "rank_step_time_median_s",
                "rank_compute_time_s", "rank_padded_tokens", "train_length_percentiles")
ENV_TEXT = ("lstmbench", "git_commit", "python", "torch", "numpy", "device_name", "cpu", "cpu_id", "platform",
            "host", "timestamp", "cuda", "cpu_governor", "gpu_driver", "omp_wait_policy", "omp_num_threads")


def value_problem(row: dict[str, Any]) -> str | None:
    """The first number out of its domain, or text readers cannot use as a name, in a row whose flat types are
    right."""
    for key, value in row.items():
        if not _is_number(value) or key in ("schema_version",):
            continue
        if not math.isfinite(value):
            continue  # an error row's NaN: rows.row_problem refuses it in an ok row
        if key in UNIT_FIELDS and not 0 <= value <= 1:
            return f"{key} is {value:g}, outside 0 to 1"
        if key not in SIGNED_FIELDS and value < 0:
            return f"{key} is {value:g}, negative (a count, a time or a rate is 0 or more)"
    for key, pattern, what in (("strategy", STRATEGY_NAME, "letters, digits, '_', '.', '+', '-'"),
                               ("suite_hash", SUITE_HASH, "letters and digits"),
                               ("device", DEVICE, "letters, digits, spaces and '_.:()+-'"),
                               ("model_factory", FACTORY, "file.py:function or package.module:function"),
                               ("model_source_hash", HASH, "hexadecimal digits")):
        if isinstance(row.get(key), str) and not pattern.fullmatch(row[key]):
            return f"{key} is {json.dumps(row[key])[:60]}, not a name ({what}, 100 at most)"
    return None


def nested_problem(row: dict[str, Any]) -> str | None:
    """The first nested field whose shape a reader cannot walk, or whose numbers are out of their domain."""
    for check in (_lists, _curve, _by_length, _histogram, _attempts, _sweep, _env, _config):
        problem = check(row)
        if problem:
            return problem
    return None


def _lists(row: dict[str, Any]) -> str | None:
    for key in NUMBER_LISTS:
        for i, v in enumerate(row.get(key) or []):
            if not (_is_number(v) and math.isfinite(v) and v >= 0):
                return f"{key}[{i}] is {_short(v)}, not a non-negative number"
    return None


def _curve(row: dict[str, Any]) -> str | None:
    for i, point in enumerate(row.get("curve") or []):
        if not (isinstance(point, list) and len(point) == 3 and all(_finite(v) for v in point)
                and point[0] >= 0 and point[1] >= 0 and 0 <= point[2] <= 1):
            return f"curve[{i}] is {_short(point)}, not [seconds, step, accuracy from 0 to 1]"
    return None


def _by_length(row: dict[str, Any]) -> str | None:
    for i, b in enumerate(row.get("accuracy_by_length") or []):
        if not (isinstance(b, list) and len(b) == 4 and all(_finite(v) for v in b)
                and 0 <= b[0] <= b[1] and b[2] >= 0 and 0 <= b[3] <= 1):
            return f"accuracy_by_length[{i}] is {_short(b)}, not [shortest, longest, count, accuracy from 0 to 1]"
    return None


def _histogram(row: dict[str, Any]) -> str | None:
    for i, b in enumerate(row.get("train_length_histogram") or []):
        if not (isinstance(b, list) and len(b) == 3 and all(_finite(v) for v in b) and 0 <= b[0] <= b[1]
                and b[2] >= 0):
            return f"train_length_histogram[{i}] is {_short(b)}, not [shortest, longest, count]"
    return None


def _attempts(row: dict[str, Any]) -> str | None:
    for i, a in enumerate(row.get("disturbed_attempts") or []):
        if not (isinstance(a, dict) and all(v is None or (_finite(v) and v >= 0) for v in a.values())):
            return f"disturbed_attempts[{i}] is {_short(a)}, not an object of non-negative numbers"
    return None


def _sweep(row: dict[str, Any]) -> str | None:
    point = row.get("sweep") or {}
    if any(not isinstance(k, str) or not re.fullmatch(r"[\w.\[\]-]{1,200}", k) for k in point):
        return f"sweep is {_short(point)}, not an object of key paths"
    return None


def _env(row: dict[str, Any]) -> str | None:
    for key, value in (row.get("env") or {}).items():
        if isinstance(value, (dict, list)):
            return f"env.{_key(key)} is {_short(value)}, not a single value"
        if key in ENV_TEXT and value is not None and not isinstance(value, str):
            return f"env.{_key(key)} is {_short(value)}, not text"
        if _is_number(value) and not (math.isfinite(value) and value >= 0):
            return f"env.{_key(key)} is {_short(value)}, not a reading (a non-negative number)"
    return None


def _config(row: dict[str, Any]) -> str | None:
    """A row's config is the resolved suite that made it (or {} in a hand-made row): it must read back as one."""
    config = row.get("config") or {}
    if not config:
        return None
    return _suite_problem(json.dumps(config, sort_keys=True))


@functools.lru_cache(maxsize=256)  # a folder's rows share a few configurations
def _suite_problem(text: str) -> str | None:
    try:
        suite_from_dict(json.loads(text), "config")
    except LstmbenchError as e:
        return f"{e} (the row's config is not a suite this lstmbench reads)"
    except RecursionError:
        return "config is nested too deeply to be a suite"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _key(key: Any) -> str:
    return key if isinstance(key, str) and re.fullmatch(r"\w{1,60}", key) else json.dumps(str(key))[:60]


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:40] + "..."
