"""The GitHub workflows, checked offline: GitHub's workflow schema (check-jsonschema's vendored copy) and
zizmor's security audits (nothing above low severity). Both tools come with the `dev` extra. And the nightly's
pieces that run here: its torch pin against the baseline rows, its GPU check and its compare step."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent


def torch_sees_a_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


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


def nightly() -> dict:
    import yaml

    return yaml.safe_load((WORKFLOWS / "nightly-gpu.yml").read_text())["jobs"]["gpu-benchmark"]


def test_the_nightly_pins_the_torch_of_its_baseline():
    """compare keeps rows of different torch versions apart: a nightly on another torch than its baseline would
    compare nothing. The workflow pins one version, local label included (2.11.0+cu130 and 2.11.0+cu128 are two
    builds), and the baseline rows (when committed) were measured with exactly that version."""
    import re

    pin = nightly()["env"]["TORCH_VERSION"]
    assert re.fullmatch(r"[0-9]+(\.[0-9]+)*(\+cu[0-9]+)?", pin), f"not a torch version with an optional +cuXXX: {pin}"
    rows = [json.loads(line) for f in (ROOT / "reference" / "baselines" / "gpu").glob("*.jsonl")
            for line in f.read_text().splitlines() if line.strip()]
    measured = {r["env"]["torch"] for r in rows}
    assert measured <= {pin}, f"baseline measured with torch {measured}, nightly installs {pin}"


def test_the_nightly_checks_the_gpu_right_after_setting_up_outside_the_workspace():
    steps = nightly()["steps"]
    names = [s.get("name", s.get("uses", "")) for s in steps]
    setup = next(i for i, n in enumerate(names) if n.startswith("Set up"))
    assert "scripts/check-gpu.py" in steps[setup + 1]["run"]
    assert names[setup + 2] == "Verify the strategies against per-sequence processing"
    # checkout cleans untracked files: an environment in the workspace would be built again every night
    runs = "\n".join(s.get("run", "") for s in steps)
    assert ".venv" not in runs and "make setup" not in runs and "[dev" not in runs
    assert "RUNNER_TOOL_CACHE" in steps[setup]["run"]


# ----------------------------------------------------------------------------- the nightly's scripts
SCRIPTS = ROOT / "scripts"


def check_gpu():
    """scripts/check-gpu.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_gpu", SCRIPTS / "check-gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_nvidia_smi(folder: Path, body: str) -> None:
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{body}\n")
    smi.chmod(0o755)


@pytest.mark.skipif(torch_sees_a_gpu(), reason="checks the line given without a GPU")
def test_check_gpu_fails_in_one_line_without_a_gpu(tmp_path):
    """The driver is there, the GPU is not seen: as with a driver older than torch's CUDA."""
    import torch

    fake_nvidia_smi(tmp_path, "echo 535.54.03")
    r = subprocess.run([sys.executable, str(SCRIPTS / "check-gpu.py")], capture_output=True, text=True,
                       timeout=120, env={"PATH": str(tmp_path)})
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (f"Error: torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False): "
                        f"torch's CUDA {torch.version.cuda or 'none (a CPU-only build)'}, NVIDIA driver 535.54.03\n")


def test_check_gpu_says_why_the_driver_is_unknown(tmp_path, monkeypatch):
    driver = check_gpu().driver
    monkeypatch.setenv("PATH", str(tmp_path))
    assert driver() == "unknown (no nvidia-smi on PATH)"
    fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'"
                              "\nexit 9")
    assert driver() == ("unknown (nvidia-smi exit code 9: NVIDIA-SMI has failed because it could not communicate "
                        "with the NVIDIA driver.)")


def compare_step(tmp_path: Path, baseline: Path, results: Path, lstmbench: Path | str | None = None):
    """scripts/nightly-compare.sh as the workflow runs it, in tmp_path, its summary page in tmp_path/summary.md."""
    env = {"PATH": "/usr/bin:/bin", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), "GITHUB_RUN_ID": "42",
           "LSTMBENCH": str(lstmbench or BIN / "lstmbench")}
    return subprocess.run(["bash", str(SCRIPTS / "nightly-compare.sh"), str(baseline), str(results),
                           "proposed-baseline"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


ROWS = "20261128T013151Z-vm-1.jsonl"  # a row file's name as `run` gives it


def night(tmp_path: Path) -> Path:
    """A night's results folder as `lstmbench run suites/gpu.yaml --out results-nightly` leaves it."""
    folder = tmp_path / "results-nightly" / "gpu"
    folder.mkdir(parents=True)
    (folder / ROWS).write_text((ROOT / "tests" / "data" / "gpu-h200" / "gpu.jsonl").read_text())
    (folder.parent / "bench-bigger.json").write_text("[]")  # the export's files are no rows
    return folder.parent


def test_the_nightly_compare_without_a_baseline_proposes_the_nights_rows(tmp_path):
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "README.md").write_text("no rows yet")
    (baseline / "empty.jsonl").write_text("\n")
    results = night(tmp_path)
    r = compare_step(tmp_path, baseline, results, lstmbench="/nonexistent/lstmbench")  # nothing to run
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == (f"::notice::no baseline rows in {baseline}: nothing compared; this night's 7 rows are "
                        "proposed as the baseline (artifact proposed-baseline-42)\n")
    proposed = tmp_path / "proposed-baseline"
    assert [p.name for p in proposed.iterdir()] == [ROWS]
    assert (proposed / ROWS).read_text() == (results / "gpu" / ROWS).read_text()
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith(f"## lstmbench compare: no baseline in {baseline}\n")
    assert f"unzip proposed-baseline-42.zip -d {baseline}/\n" in summary
    assert summary.endswith(f"- `{ROWS}`: 7 rows\n")


def test_the_nightly_compare_without_a_baseline_or_rows_fails(tmp_path):
    (tmp_path / "results-nightly").mkdir()
    r = compare_step(tmp_path, tmp_path / "baseline", tmp_path / "results-nightly")
    assert (r.returncode, r.stdout) == (2, f"::error::no baseline rows in {tmp_path / 'baseline'}, and no rows in "
                                           f"{tmp_path / 'results-nightly'} to propose as one\n")
    assert not (tmp_path / "proposed-baseline").exists()


@pytest.mark.slow
def test_the_nightly_compare_with_a_baseline_runs_compare(tmp_path):
    """The real compare on two copies of the same rows: exit 0, its sentences on the summary page."""
    # packing-repeat: every run of it measured on a quiet machine (packing-first has one disturbed run, exit 2)
    data = ROOT / "tests" / "data" / "packing-repeat"
    r = compare_step(tmp_path, data, data)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.rstrip().endswith("0 regressions in 8 groups compared.")
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith(f"## lstmbench compare: {data} -> this night (exit 0)\n\n```\n")
    assert not (tmp_path / "proposed-baseline").exists()


@pytest.mark.parametrize("code, annotation", [
    (3, "::error::lstmbench compare found a regression against {baseline}"),
    (2, "::error::lstmbench compare failed with exit code 2"),
])
def test_the_nightly_compare_fails_with_compare(tmp_path, code, annotation):
    fake = tmp_path / "lstmbench"
    fake.write_text(f"#!/bin/sh\necho \"$@\"\nexit {code}\n")
    fake.chmod(0o755)
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    (baseline / "rows.jsonl").write_text('{"strategy": "pack"}\n')
    results = night(tmp_path)
    r = compare_step(tmp_path, baseline, results, fake)
    assert r.returncode == code
    assert r.stdout == f"compare {baseline} {results}\n{annotation.format(baseline=baseline)}\n"
    assert (tmp_path / "summary.md").read_text() == (
        f"## lstmbench compare: {baseline} -> this night (exit {code})\n\n```\ncompare {baseline} {results}\n```\n")
