"""The house style, checked: ruff (pyflakes, pycodestyle, bugbear, simplify, complexity and argument counts, as
configured in pyproject.toml with today's offenders listed) finds nothing in the package, the tests or the scripts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
                        "lstmbench", "tests", "scripts"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def _axis_comparisons() -> list[tuple[str, int, str, str]]:
    """(file, line, axis, value) for every string the package compares with a strategy axis or a status:
    `spec.padding == "truncate"`, `row["status"] != "ok"`, `readout in ("pack", "pack_sorted")`."""
    import ast

    axes = ("batching", "padding", "readout", "deal", "status", "amp", "device")
    found = []
    for path in sorted((ROOT / "lstmbench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            left = node.left
            if isinstance(left, ast.Attribute) and left.attr == "type":  # a torch device's type: device.type
                left = left.value
            axis = left.attr if isinstance(left, ast.Attribute) else left.slice.value \
                if isinstance(left, ast.Subscript) and isinstance(left.slice, ast.Constant) else \
                left.id if isinstance(left, ast.Name) else None
            if axis not in axes:
                continue
            for op, right in zip(node.ops, node.comparators):
                if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                    continue
                items = right.elts if isinstance(right, (ast.Tuple, ast.List, ast.Set)) else [right]
                found += [(str(path.relative_to(ROOT)), node.lineno, axis, item.value) for item in items
                          if isinstance(item, ast.Constant) and isinstance(item.value, str)]
    return found


def test_every_string_compared_with_an_axis_is_one_of_its_values():
    """The axes' values are one table (suite/config.py's Literals, measure/record.py's Status): a misspelt
    'pack_sorted' or 'fp61' in a comparison would silently never match."""
    from typing import get_args

    from lstmbench.measure.record import Status
    from lstmbench.suite.config import Amp, Batching, Deal, Device, Padding, Readout

    allowed = {"batching": get_args(Batching), "padding": get_args(Padding), "readout": get_args(Readout),
               "deal": get_args(Deal), "status": get_args(Status), "amp": get_args(Amp), "device": get_args(Device)}
    found = _axis_comparisons()
    assert len(found) > 80  # the scan sees the comparisons
    wrong = [f"{file}:{line}: {axis} compared with {value!r}" for file, line, axis, value in found
             if value not in allowed[axis]]
    assert not wrong, "\n".join(wrong)
