"""Storage: the only module that touches the results folder.

Layout: <root>/<suite>/<UTC time>-<host>-<pid>.jsonl, one file per `lstmbench run` invocation (so two
processes never write the same file), one JSON object per line, appended and fsynced as each run
ends. Reports go to <root>/<suite>/report/.
"""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .errors import ResultsError
from .records import SCHEMA_VERSION

REPORT_DIR = "report"


@dataclass
class RunFile:
    """An append-only JSONL file of one invocation."""

    path: Path

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, sort_keys=True, allow_nan=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:  # one write of one whole line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def new_run_file(root: str | Path, suite: str) -> RunFile:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40]
    folder = _inside(Path(root), suite)
    return RunFile(folder / f"{stamp}-{host}-{os.getpid()}.jsonl")


def report_dir(root: str | Path, suite: str) -> Path:
    return _inside(Path(root), suite) / REPORT_DIR


def _inside(root: Path, suite: str) -> Path:
    folder = (root / suite).resolve()
    if root.resolve() not in folder.parents:
        raise ResultsError(f"suite name {suite!r} would write outside the results folder {root}")
    return folder


def find_result_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*.jsonl") if REPORT_DIR not in f.relative_to(p).parts[:-1])
        elif p.is_file():
            files.append(p)
        else:
            raise ResultsError(f"{p}: no such file or folder")
    return files


@dataclass
class Loaded:
    rows: pd.DataFrame
    skipped: list[str]  # one sentence per line that could not be read


def load_rows(paths: Iterable[str | Path]) -> Loaded:
    """All rows of the result files under `paths`, as a DataFrame (one row per run)."""
    files = find_result_files(paths)
    if not files:
        raise ResultsError(f"no result files (*.jsonl) under {', '.join(map(str, paths))}")
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for f in files:
        rows += _read_file(f, skipped)
    if not rows:
        raise ResultsError(f"no result rows in {len(files)} file(s) under {', '.join(map(str, paths))}")
    return Loaded(pd.DataFrame(rows), skipped)


def _read_file(path: Path, skipped: list[str]) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot read: {e}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            skipped.append(f"{path}:{n}: not a complete JSON line (a run interrupted while writing?); skipped")
            continue
        if not isinstance(row, dict) or "schema_version" not in row or "strategy" not in row:
            raise ResultsError(f"{path}:{n}: not an lstmbench result row")
        if row["schema_version"] > SCHEMA_VERSION:
            raise ResultsError(f"{path}:{n}: schema_version {row['schema_version']} is newer than this "
                               f"lstmbench reads ({SCHEMA_VERSION}); upgrade lstmbench")
        row["source_file"] = str(path)
        rows.append(row)
    return rows


def completed_runs(root: str | Path, suite: str, suite_hash: str) -> dict[tuple[str, int], float]:
    """(strategy, seed) -> tokens/s of every ok row of this exact suite configuration under <root>/<suite>."""
    folder = _inside(Path(root), suite)
    if not folder.is_dir() or not find_result_files([folder]):
        return {}
    rows = load_rows([folder]).rows
    if "suite_hash" not in rows:
        return {}
    mine = rows[(rows["status"] == "ok") & (rows["suite_hash"] == suite_hash)]
    return {(str(r.strategy), int(r.seed)): float(r.tokens_per_s) for r in mine.itertuples()}


def write_files(folder: Path, files: dict[str, str | bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        target = folder / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
        written.append(target)
    return written
