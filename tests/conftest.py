from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY = {
    "name": "tiny",
    "description": "seconds on a CPU",
    "device": "cpu",
    "seeds": [0, 1],
    "data": {"source": "synthetic", "task": "classify", "train_size": 96, "eval_size": 48, "vocab_size": 16,
             "lengths": {"dist": "lognormal", "median": 8, "sigma": 0.8, "min": 2, "max": 40}},
    "model": {"embed_dim": 8, "hidden_size": 12, "num_layers": 1, "bidirectional": False, "dropout": 0.0},
    "train": {"batch_size": 16, "epochs": 2, "lr": 0.01, "warmup_steps": 2, "target_accuracy": 0.9},
    "strategies": ["naive", {"truncate": {"max_len": 6}}, "mask", "pack", "bucket"],
}


def write_suite(folder: Path, suite: dict, name: str = "suite.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


@pytest.fixture
def tiny_dict() -> dict:
    import copy

    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_file(tmp_path: Path, tiny_dict: dict) -> Path:
    return write_suite(tmp_path, tiny_dict)
