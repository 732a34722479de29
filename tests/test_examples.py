"""examples/ run on tiny data, so they never rot."""
import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv", [["--strategy", "bucket-mask"], ["--strategy", "pack", "--workers", "1"]])
@pytest.mark.slow
def test_own_model_trains_with_the_batching_api(argv, capsys):
    result = _load("own_model").main(["--examples", "400", "--epochs", "4"] + argv)
    assert result["last_loss"] < result["first_loss"]  # it learns
    assert 0.0 <= result["accuracy"] <= 1.0
    out = capsys.readouterr().out
    assert "epoch 3: mean loss" in out and "held-out accuracy" in out
