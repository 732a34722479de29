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
