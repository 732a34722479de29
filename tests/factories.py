"""The one factory of result rows for the tests: a stored row (`row`), a RunRecord (`record`), a frame as the
readers take it (`frame`), a results folder (`write_rows`), and the scenarios several stages test against: the
recommendation's rows (`run_rows`, CLEAR) and the regression gate's sets (`write_set`)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lstmbench.measure.record import SCHEMA_VERSION, RunRecord
from lstmbench.results.rows import rows_frame
from lstmbench.suite.load import suite_from_dict
from tests.conftest import TINY

FILE = "20261128T000000Z-vm1-1.jsonl"  # write_rows' file


def row(**fields: Any) -> dict[str, Any]:
    """A stored row with the keys every reader groups by, and `fields`: an ok row has tokens/s 1.0 unless given."""
    base = {"schema_version": SCHEMA_VERSION, "suite": "tiny", "strategy": "mask", "seed": 0, "device": "cpu",
            "status": "ok"}
    base.update(fields)
    if base["status"] == "ok":
        base.setdefault("tokens_per_s", 1.0)
    return base


def record(**fields: Any) -> RunRecord:
    """A RunRecord of the mask strategy (random batches, batch padding) unless `fields` say otherwise."""
    identity = {"suite": "packing", "suite_hash": "abc", "strategy": "mask", "batching": "random", "padding": "batch",
                "readout": "mask", "max_len": 0, "computation_note": "", "device": "cpu", "seed": 0, "status": "ok"}
    return RunRecord(**{**identity, **fields})


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as report, recommend and compare take them: migrated, as storage loads them."""
    return rows_frame(rows)


def write_rows(folder: Path, rows: list[dict[str, Any]], suite: str = "tiny") -> Path:
    """A results folder holding `rows` in one file of the suite's folder; returns the results folder."""
    target = folder / suite
    target.mkdir(parents=True)
    (target / FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


# --- the recommendation's scenarios ---------------------------------------------------------------------------

ENV = {"host": "vm1", "cpu": "cpu-x", "cpu_count": 2, "threads": 2, "device_name": "cpu", "torch": "2.x",
       "lstmbench": "0.1.0", "git_commit": "abc"}
NOTES = {"naive": "reads the output after the padding", "truncate": "truncates to 6 tokens",
         "ideal": "unpadded: each batch's real tokens cut into equal rows"}
BUCKET_MASK = {"name": "bucket-mask", "batching": "bucket", "padding": "batch", "readout": "mask"}


def config(strategies: list, seeds: int = 3, target: float = 0.0, cap: float = 0.0) -> dict:
    suite = copy.deepcopy(TINY)
    suite.update(strategies=strategies, seeds=list(range(seeds)))
    suite["train"].update(target_accuracy=target, batch_size=16)
    if cap:
        suite["train"].update(until_target=True, max_time_s=cap)
    return suite_from_dict(suite).to_dict()  # what rows carry: the resolved suite


def run_rows(cfg: dict, runs: dict[str, dict], seeds: int) -> list[dict]:
    """Rows of `seeds` seeds; runs: strategy -> {"tps": [...], "acc": [...], "ttt": [...]} or {"status", "error"}
    for runs that all failed (lists: one value per seed)."""
    target = cfg["train"]["target_accuracy"] or None
    specs = {s["name"]: s for s in cfg["strategies"]}
    rows = []
    for seed in range(seeds):
        for name, m in runs.items():
            spec = specs.get(name, {"batching": "random", "padding": "reshape", "readout": "last", "max_len": 0})
            status = m.get("status", "ok")
            measured = {}
            if status == "ok":
                ttt = m["ttt"][seed] if "ttt" in m else None
                acc = m["acc"][seed] if "acc" in m else None
                measured = dict(tokens_per_s=m["tps"][seed], samples_per_s=10.0, pad_fraction=0.5,
                                data_time_fraction=0.01, train_time_s=2.0, peak_mem_bytes=2**30,
                                baseline_rss_bytes=2**29, eval_accuracy=acc, eval_accuracy_exact=acc,
                                target_accuracy=target if name != "ideal" else None, time_to_target_s=ttt,
                                reached_target=(ttt is not None) if target and name != "ideal" else None,
                                verified=None if name == "ideal" else "differs as designed" if name in NOTES
                                else "equivalent", verify_loss_rel_error=1e-7, verify_grad_rel_error=2e-7,
                                verify_tolerance=1e-4, verify_precision="float32")
            rows.append(row(suite=cfg["name"], suite_hash="h1", strategy=name, batching=spec["batching"],
                            padding=spec["padding"], readout=spec["readout"], max_len=spec["max_len"],
                            computation_note=NOTES.get(name, ""), seed=seed, status=status,
                            error=m.get("error", ""), config=cfg, env=ENV, init_checksum=f"c{seed}", **measured))
    return rows


CLEAR_CONFIG = config(["naive", "mask", "pack", BUCKET_MASK], target=0.85, cap=45)
CLEAR = run_rows(CLEAR_CONFIG, {
    "naive": {"tps": [100.0, 110.0, 90.0], "acc": [0.55, 0.6, 0.5]},
    "mask": {"tps": [300.0, 310.0, 290.0], "acc": [0.86, 0.87, 0.88], "ttt": [30.0, 29.3, 31.0]},
    "pack": {"tps": [150.0, 140.0, 160.0], "acc": [0.88, 0.89, 0.87], "ttt": [50.0, 52.0, 51.0]},
    "bucket-mask": {"tps": [900.0, 950.0, 850.0], "acc": [0.86, 0.88, 0.87], "ttt": [10.0, 11.0, 12.0]},
    "ideal": {"tps": [1000.0, 1000.0, 1000.0]},
}, seeds=3)


# --- the regression gate's sets -------------------------------------------------------------------------------

GATE_ENV = {"cpu": "AMD EPYC", "cpu_count": 2, "device_name": "cpu", "torch": "2.13.0+cpu", "git_commit": "abc1234"}


def write_set(folder: Path, n: int, seed: int, speed: float = 48_000.0, memory: float = 400 * 2**20,
              accuracy: float = 0.99, noise: float = 0.03, strategies=("bucket", "mask"), speeds=None,
              suite_hash: str = "abc", time_to_target=None, failed=(), env=None, target=None) -> Path:
    """n runs (seeds 0..n-1) of each strategy, tokens/s drawn around `speed` with `noise` relative spread (or
    exactly `speeds`), each run with 8 windows around its tokens/s; the strategies in `failed` get n rows that
    ran out of memory instead. `time_to_target`: a number, or a list per seed (None = not reached)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rows.jsonl", "w") as f:
        for s in range(n):
            for name in strategies:
                jitter = 1 + noise * rng.uniform(-1, 1) if speeds is None else speeds[s] / speed
                ttt = time_to_target[s] if isinstance(time_to_target, list) else time_to_target
                r = record(suite_hash=suite_hash, strategy=name, seed=s, tokens_per_s=speed * jitter,
                           samples_per_s=speed * jitter / 40,
                           window_tokens_per_s=list(speed * jitter * (1 + 0.01 * rng.standard_normal(8))),
                           peak_mem_bytes=int(memory * (1 + 0.01 * rng.uniform(-1, 1))),
                           eval_accuracy=accuracy, eval_accuracy_exact=accuracy, target_accuracy=target,
                           time_to_target_s=None if ttt is None else ttt * jitter, env=env or GATE_ENV)
                if name in failed:
                    r = record(suite_hash=suite_hash, strategy=name, seed=s, status="oom",
                               error="CUDA out of memory", env=env or GATE_ENV)
                f.write(json.dumps(r.to_dict()) + "\n")
    return folder
