"""The GitHub workflows, checked offline: GitHub's workflow schema (check-jsonschema's vendored copy) and
zizmor's security audits (nothing above low severity). Both tools come with the `dev` extra."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent


def tool(name: str) -> Path:
    exe = BIN / name
    if not exe.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable}; `pip install -e .[dev]` installs it")
    return exe


def workflow_files() -> list[Path]:
    files = sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))
    assert files, f"no workflow files under {WORKFLOWS}"
    return files


def test_the_expected_workflows_exist():
    assert {f.name for f in workflow_files()} >= {"ci.yml", "nightly-gpu.yml"}


def test_workflows_match_githubs_schema():
    exe = tool("check-jsonschema")
    r = subprocess.run([str(exe), "--builtin-schema", "vendor.github-workflows", *map(str, workflow_files())],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_zizmor_finds_nothing_above_low_severity():
    exe = tool("zizmor")
    r = subprocess.run([str(exe), "--offline", "--min-severity", "medium", "--format", "json", str(WORKFLOWS)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    # zizmor exits 0 without findings, 10 + the highest severity with some, other codes on errors
    findings = json.loads(r.stdout) if r.stdout.strip() else []
    summary = [f"{f.get('ident')}: {f.get('desc')}" for f in findings]
    assert r.returncode == 0 and not findings, "\n".join(summary) or r.stderr


def test_the_nightly_pins_the_torch_of_its_baseline():
    """compare keeps rows of different torch versions apart: a nightly on another torch than its baseline would
    compare nothing. The workflow pins one version, and the baseline rows (when committed) were measured with it."""
    import re

    text = (WORKFLOWS / "nightly-gpu.yml").read_text()
    pins = re.findall(r"TORCH=torch==([0-9.]+)", text)
    assert len(pins) == 1, "the nightly must install one pinned torch version"
    rows = [json.loads(line) for f in (ROOT / "reference" / "baselines" / "gpu").glob("*.jsonl")
            for line in f.read_text().splitlines() if line.strip()]
    measured = {r["env"]["torch"].split("+")[0] for r in rows}
    assert measured <= {pins[0]}, f"baseline measured with torch {measured}, nightly installs {pins[0]}"
