"""Storage: the only module that touches the results folder.

Layout: <root>/<suite>/<UTC time>-<host>-<pid>.jsonl, one file per `lstmbench run` invocation (so two
processes never write the same file), one JSON object per line, appended and fsynced as each run
ends. Reports go to <root>/<suite>/report/.

Nothing measured is lost: the folder is checked before the first run (`check_destination`), and a row
that cannot be appended is written to a rescue file outside it (`rescue`) before the error goes up.
Reading is as careful: only regular files, each line checked (`rows.row_problem`), a bad line skipped
with a sentence saying why.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..errors import ResultsError
from ..measure import SCHEMA_VERSION, Disturbance, judge
from ..suite import MAX_RESULTS_BYTES, Unreadable, is_regular, kind, read_text
from .rows import migrate, row_problem

REPORT_DIR = "report"


class AppendFailed(ResultsError):
    """A finished row could not be appended to its run file; `rescued` says where it went instead."""

    def __init__(self, path: Path, reason: str, rescued: str):
        self.path, self.reason, self.rescued = path, reason, rescued
        super().__init__(f"cannot append to {path} ({reason}); {rescued}")


@dataclass
class RunFile:
    """An append-only JSONL file of one invocation."""

    path: Path
    rows: int = 0  # rows appended by this invocation

    def append(self, row: dict[str, Any]) -> None:
        """Append one whole line and fsync it; on failure, rescue the row and raise AppendFailed."""
        line = json.dumps(row, sort_keys=True, allow_nan=True) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:  # one write of one whole line
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise AppendFailed(self.path, _reason(e), rescue(line, self.path.stem)) from None
        self.rows += 1


def rescue(line: str, stem: str) -> str:
    """Write a row that its results folder refused to a file in the temporary folder; the sentence says where
    (or, if that fails too, that the row is on standard output, which the CLI prints it to)."""
    path = Path(tempfile.gettempdir()) / f"lstmbench-rescued-{stem}.jsonl"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return f"the row could not be rescued to {path} either ({_reason(e)}): it is printed on standard output"
    return f"the row was written to {path} instead"


def check_destination(root: str | Path, suite: str) -> Path:
    """The folder a suite's rows go to, made now and proven writable (a file created, written and removed in
    it), so that a results folder that is a file, read-only or full fails before the first run, not after."""
    folder = _inside(Path(root), suite)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lstmbench-probe-", suffix=".tmp") as f:
            f.write(b"{}\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ResultsError(f"cannot write results to {_shown(folder)}: {_reason(e)}; nothing was run") from None
    return folder


@dataclass
class Claim:
    """A results folder held by one `lstmbench run` (an exclusive flock on a lock file in it, released when the
    process ends however it ends, kill -9 included): `--resume` reads what is done and runs the rest under it."""

    path: Path
    fd: int


def claim(root: str | Path, suite: str, shard: tuple[int, int] | None = None) -> Claim | None:
    """Claim <root>/<suite> (made and proven writable first) for this process, or raise ResultsError naming the
    process that holds it. Shards of one job (`run --shard K/N` on several nodes) claim their own K; None where
    the platform has no flock (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        return None
    folder = check_destination(root, suite)
    path = folder / (f".lock-shard-{shard[0]}-of-{shard[1]}" if shard else ".lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ResultsError(f"cannot claim {_shown(folder)}: {_reason(e)}; nothing was run") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise ResultsError(f"{_shown(folder)} is being written by another lstmbench run ({holder}); wait for it "
                           "to end, or give another --out; nothing was run") from None
    stamp = datetime.now(timezone.utc).strftime("%H:%M:%S UTC")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()[:60]}, since {stamp}".encode(), 0)
    return Claim(path, fd)


def release(held: Claim | None) -> None:
    """End a claim (the lock file stays, unlocked: the next run claims it again)."""
    if held is not None:
        os.close(held.fd)


def _shown(path: Path) -> str:
    """A path as the user would write it: relative to the working folder when it lies inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _reason(e: OSError) -> str:
    """An OSError as the end of a sentence: for a path through a file, which file is in the way."""
    if e.errno in (errno.ENOTDIR, errno.EEXIST) and e.filename:
        for part in [Path(e.filename), *Path(e.filename).parents]:
            if part.exists() and not part.is_dir():
                return f"{_shown(part)} is {'a file' if is_regular(part) else _kind(part)}, not a folder"
    return f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")


def new_run_file(root: str | Path, suite: str) -> RunFile:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40]
    folder = check_destination(root, suite)
    return RunFile(folder / f"{stamp}-{host}-{os.getpid()}.jsonl")


def report_dir(root: str | Path, suite: str) -> Path:
    return _inside(Path(root), suite) / REPORT_DIR


def _inside(root: Path, suite: str) -> Path:
    folder = (root / suite).resolve()
    if root.resolve() not in folder.parents:
        raise ResultsError(f"suite name {suite!r} would write outside the results folder {root}")
    return folder


def find_result_files(paths: Iterable[str | Path], skipped: list[str] | None = None) -> list[Path]:
    """The *.jsonl files under `paths` (report folders left out). A FIFO, a device or a broken link under a
    folder is skipped with a sentence in `skipped`; one named outright is refused."""
    files: list[Path] = []
    for p in map(Path, paths):
        if "\0" in str(p):
            raise ResultsError(f"{str(p)!r}: a path cannot contain a NUL byte")
        if p.is_dir():
            for f in sorted(p.rglob("*.jsonl")):
                if REPORT_DIR in f.relative_to(p).parts[:-1]:
                    continue
                if is_regular(f):
                    files.append(f)
                elif skipped is not None:
                    skipped.append(f"{f}: {_kind(f)}, not a regular file; skipped")
        elif is_regular(p):
            files.append(p)
        elif p.exists():
            raise ResultsError(f"{p}: {_kind(p)}, not a result file or folder")
        else:
            raise ResultsError(f"{p}: no such file or folder")
    return files


def _kind(path: Path) -> str:
    try:
        return kind(path.stat().st_mode)
    except OSError:
        return "a broken link"


@dataclass
class Loaded:
    rows: pd.DataFrame
    skipped: list[str]  # one sentence per file or line that could not be read


def load_rows(paths: Iterable[str | Path]) -> Loaded:
    """All rows of the result files under `paths`, as a DataFrame (one row per run)."""
    paths = list(paths)
    skipped: list[str] = []
    files = find_result_files(paths, skipped)
    if not files:
        raise ResultsError(f"no result files (*.jsonl) under {', '.join(map(str, paths))}")
    rows: list[dict[str, Any]] = []
    seen: dict[bytes, str] = {}  # each row's digest -> where it was first read: a copied row counts once
    for f in files:
        rows += _read_file(f, skipped, seen)
    if not rows:
        why = f" ({len(skipped)} line(s) skipped; the first: {skipped[0]})" if skipped else ""
        raise ResultsError(f"no result rows in {len(files)} file(s) under {', '.join(map(str, paths))}{why}")
    return Loaded(pd.DataFrame(rows), skipped)


MAX_WARNINGS_PER_FILE = 5  # a file of junk is named by its first lines and a count, not ten million warnings


def _read_file(path: Path, skipped: list[str], seen: dict[bytes, str]) -> list[dict[str, Any]]:
    try:
        lines = read_text(path, MAX_RESULTS_BYTES, "a result file", encoding="utf-8-sig").splitlines()  # a BOM, CRLF
    except Unreadable as e:
        raise ResultsError(f"cannot read a result file: {e}") from None
    rows, bad, copies = [], [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            bad.append(f"{path}:{n}: not a complete JSON line (a run interrupted while writing?); skipped")
            continue
        version = row.get("schema_version") if isinstance(row, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise ResultsError(f"{path}:{n}: schema_version {version} is newer than this lstmbench reads "
                               f"({SCHEMA_VERSION}); upgrade lstmbench")
        problem = row_problem(row)
        if problem:
            bad.append(f"{path}:{n}: {problem}; skipped")
            continue
        digest = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).digest()  # 32 bytes, not the row's KiB
        if digest in seen:
            copies.append(f"line {n} is {seen[digest]}")
            continue
        seen[digest] = f"{path}:{n}"
        row["source_file"] = str(path)
        rows.append(migrate(row))
    skipped += bad[:MAX_WARNINGS_PER_FILE]
    if len(bad) > MAX_WARNINGS_PER_FILE:
        skipped.append(f"{path}: {len(bad) - MAX_WARNINGS_PER_FILE} more line(s) that are not result rows; skipped")
    if copies:
        skipped.append(f"{path}: {len(copies)} row(s) read before, each counted once ({copies[0]}"
                       f"{', ...' if len(copies) > 1 else ''})")
    return rows


def completed_runs(root: str | Path, suite: str, suite_hash: str) -> dict[tuple[str, int], float]:
    """(strategy, seed) -> tokens/s of every ok row of this exact suite configuration under <root>/<suite>,
    but rows measured on a busy machine (disturbance.judge): `--resume` measures those again."""
    folder = _inside(Path(root), suite)
    if not folder.is_dir() or not find_result_files([folder]):
        return {}
    rows = load_rows([folder]).rows
    if "suite_hash" not in rows:
        return {}
    mine = rows[(rows["status"] == "ok") & (rows["suite_hash"] == suite_hash)]
    mine = mine[[judge(r) is not Disturbance.DISTURBED for r in mine.to_dict("records")]]
    return {(str(r.strategy), int(r.seed)): float(r.tokens_per_s) for r in mine.itertuples()}


def write_files(folder: Path, files: dict[str, str | bytes]) -> list[Path]:
    """Write a report's files into `folder` (made if needed); a folder that cannot be is one ResultsError.

    A report folder sits inside a results folder that may come from someone else: a `report/` that is a
    symbolic link, a file in it that is one, or a name that is not a plain file name is refused, never followed."""
    if folder.is_symlink():
        raise ResultsError(f"cannot write the report to {folder}: a symbolic link (links in a results folder "
                           "are not followed; remove it or give --out)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ResultsError(f"cannot write the report to {folder}: {_reason(e)}") from None
    for name in files:
        if name in ("", ".", "..") or Path(name).name != name or "\0" in name:
            raise ResultsError(f"cannot write {name!r} to {folder}: not a plain file name")
    return [write_file(folder / name, content, follow=False) for name, content in files.items()]


def write_file(target: Path, content: str | bytes, follow: bool = True) -> Path:
    """Write one output file; refuses a path that exists and is not a regular file (a FIFO would block), and
    with follow=False a symbolic link (opened with O_NOFOLLOW: a link made meanwhile is refused too)."""
    if not follow and target.is_symlink():
        raise ResultsError(f"cannot write {target}: a symbolic link (links in a results folder are not followed)")
    if target.exists() and not is_regular(target):
        raise ResultsError(f"cannot write {target}: {_kind(target)}, not a regular file")
    data = content if isinstance(content, bytes) else content.encode("utf-8")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(target, flags, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ResultsError(f"cannot write {target}: a symbolic link (links in a results folder are not "
                               "followed)") from None
        raise ResultsError(f"cannot write {target}: {_reason(e)}") from None
    return target
