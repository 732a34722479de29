"""The run session as a library (a notebook's path): a suite's runs with resume and shards, its events in
order, the rows stored as each run ends, the folder locked while it runs; no CLI involved."""
from __future__ import annotations

from pathlib import Path

import pytest

from lstmbench.errors import LstmbenchError, ResultsError
from lstmbench.run import (
    Finished,
    NothingToRun,
    Resuming,
    RunEnded,
    RunOptions,
    RunSession,
    RunStarted,
    Starting,
    StepDone,
)
from lstmbench.suite import load_suite
from tests.conftest import write_suite


@pytest.fixture
def suite(tmp_path: Path, tiny_dict: dict):
    tiny_dict.update(seeds=[0], strategies=["mask", "pack"])
    return load_suite(write_suite(tmp_path, tiny_dict))


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events]


def test_a_session_runs_a_suite_and_yields_its_events(tmp_path: Path, suite):
    heard: list = []
    with RunSession(suite, tmp_path / "results", RunOptions(inline=True, settle_s=0)) as session:
        events = list(session.events(heard.append))
    assert kinds(events) == ["Starting", "RunEnded", "RunEnded", "RunEnded", "Finished"]  # mask, pack, the ideal
    start, done = events[0], events[-1]
    assert isinstance(start, Starting) and (start.planned, start.to_run, start.shard) == (3, 3, "")
    assert isinstance(done, Finished) and (done.finished, done.failed) == (3, 0) and len(done.rows) == 3
    assert {e.record.strategy for e in events if isinstance(e, RunEnded)} == {"mask", "pack", "ideal"}
    assert [e.finished for e in events if isinstance(e, RunEnded)] == [1, 2, 3]
    assert done.path.parent == tmp_path / "results" / "tiny" and done.path.exists()
    started = [e for e in heard if isinstance(e, RunStarted)]
    assert len(started) == 3 and any(isinstance(e, StepDone) for e in heard)
    assert done.overhead is not None and done.overhead.wall_s > 0


def test_resume_and_an_empty_shard(tmp_path: Path, suite):
    out = tmp_path / "results"
    with RunSession(suite, out, RunOptions(inline=True, settle_s=0, shard="1/2")) as session:
        first = list(session.events())
    assert kinds(first)[0] == "Starting" and first[0].to_run == 2  # a strategy run and its seed's ideal
    with RunSession(suite, out, RunOptions(inline=True, settle_s=0, resume=True)) as session:
        again = list(session.events())
    assert isinstance(again[0], Resuming) and (again[0].already, again[0].to_run) == (2, 1)
    assert again[-1].finished == 1
    with RunSession(suite, out, RunOptions(inline=True, settle_s=0, resume=True)) as session:
        assert kinds(list(session.events())) == ["Resuming", "NothingToRun"]
    empty = load_suite(write_suite(tmp_path, {**suite.to_dict(), "ideal": False, "strategies": ["mask"]}, "one.yaml"))
    with RunSession(empty, tmp_path / "other", RunOptions(inline=True, settle_s=0, shard="2/2")) as session:
        (nothing,) = list(session.events())
    assert nothing == NothingToRun("2/2")


def test_the_folder_is_locked_while_a_session_holds_it(tmp_path: Path, suite):
    out = tmp_path / "results"
    with RunSession(suite, out, RunOptions(inline=True, settle_s=0)), \
            pytest.raises(ResultsError, match="another lstmbench run"), RunSession(suite, out, RunOptions()):
        pass
    with RunSession(suite, out, RunOptions(inline=True, settle_s=0)):  # released at the end of `with`
        pass


def test_bad_input_fails_before_anything_is_claimed(tmp_path: Path, suite):
    with pytest.raises(LstmbenchError, match="--shard: expected K/N"):
        RunSession(suite, tmp_path / "results", RunOptions(shard="3/2"))
    assert not (tmp_path / "results").exists()
