"""Issue 30's first piece: the seeded PyTorch model's weights copied into Keras (`measure/keras_twin.py`) give the
same loss as the PyTorch model's masked readout on the same batch, per backend installed. Each backend runs in a
fresh interpreter: Keras reads KERAS_BACKEND once, at import."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}  # backend -> the package it needs

CHECK = """
import json, sys
import numpy as np, torch, keras
from lstmbench.data import make_data
from lstmbench.measure.keras_twin import keras_twin
from lstmbench.measure.model import loss_of, model_for
from lstmbench.strategies import Strategy
from lstmbench.suite import StrategySpec, suite_from_dict

raw = json.loads(sys.argv[1])
suite = suite_from_dict(raw)
data = make_data(suite.data, 0).train
model = model_for(suite.model, data, 0)
batch = Strategy(StrategySpec(name="mask")).collate(data, np.arange(16))
with torch.no_grad():
    ours = float(loss_of(model(batch.tokens.long(), batch.lengths, "mask"), batch.labels))
logits = np.asarray(keras.ops.convert_to_numpy(keras_twin(model)(batch.tokens.numpy().astype("int32"))))
theirs = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), batch.labels))
print(json.dumps({"ours": ours, "theirs": theirs, "backend": keras.backend.backend()}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (2, False), (1, True), (2, True)])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_weights_copied_into_keras_give_the_same_loss(backend: str, layers: int, bidirectional: bool):
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec(BACKENDS[backend]) is None:
        pytest.skip(f"needs keras and {BACKENDS[backend]}")
    from tests.conftest import TINY

    raw = {**TINY, "seeds": [0], "strategies": ["mask"],
           "model": {**TINY["model"], "num_layers": layers, "bidirectional": bidirectional}}
    r = subprocess.run([sys.executable, "-c", CHECK, json.dumps(raw)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "KERAS_BACKEND": backend})
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["backend"] == backend
    assert abs(got["ours"] - got["theirs"]) <= 1e-5 * abs(got["ours"])  # float32
