"""Fuzzing `validate`: mutated suites get a clean `Error:` line (exit 2) or pass (exit 0), never a traceback."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from lstmbench.cli import main
from tests.conftest import TINY

SCALARS = (st.none() | st.booleans() | st.sampled_from([-1, 0, 1, 2, 3, 7, 64, 10**9])
           | st.integers(-100, 100) | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(["", "mask", "pack", "bucket", "lognormal", "fixed", "1e-3", "cpu", "../x", "ideal"])
           | st.text(max_size=6))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8) | st.sampled_from(["name", "max_len", "readout"]),
                                        inner, max_size=3), max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


PATHS = [p for p in _paths(TINY) if p]


@st.composite
def mutated_suites(draw):
    suite = copy.deepcopy(TINY)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = suite
        try:
            for key in path[:-1]:
                parent = parent[key]
            op = draw(st.sampled_from(["set", "set", "delete", "add"]))
            if op == "set":
                parent[path[-1]] = draw(VALUES)
            elif op == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=8))] = draw(VALUES)
            else:
                parent.append(draw(VALUES))
        except (KeyError, IndexError, TypeError, AttributeError):
            pass  # an earlier mutation removed or replaced this path (e.g. with None, which has no append)
    return suite


def _check(text: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        r = CliRunner().invoke(main, ["validate", str(path)])
    assert r.exit_code in (0, 2), (r.exit_code, r.output, r.exception)
    if r.exit_code == 2:
        assert isinstance(r.exception, SystemExit)
        assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr


@given(mutated_suites())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@pytest.mark.slow
def test_mutated_suites_fail_cleanly(suite):
    _check(yaml.safe_dump(suite, sort_keys=False))


@given(st.text(max_size=60) | st.binary(max_size=60))
@settings(max_examples=150, deadline=None)
def test_arbitrary_files_fail_cleanly(text):
    _check(text)
