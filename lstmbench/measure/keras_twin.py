"""The seeded PyTorch model's twin in Keras (issue 30's first piece): the same architecture with the same weights,
so that Keras's masking recipe (`Embedding(mask_zero=True)` in front of `layers.LSTM`) can be measured against
PyTorch's strategies from the same start. Import it in a fresh interpreter whose KERAS_BACKEND is set (torch,
tensorflow or jax): Keras reads the backend once, at import.

The mapping, from Keras's own source (keras/src/layers/rnn/lstm.py): the cell's `kernel` is [input, 4 x units],
`recurrent_kernel` [units, 4 x units] and its one `bias` [4 x units], gates in the order i, f, c, o, which is
PyTorch's i, f, g, o; so kernel = weight_ih.T, recurrent_kernel = weight_hh.T, bias = bias_ih + bias_hh. A
bidirectional layer's backward LSTM takes the `_reverse` weights; a Dense head takes head.weight.T and head.bias.
"""
from __future__ import annotations

from typing import Any

from ..errors import LstmbenchError
from .model import LSTMClassifier


def keras_twin(model: LSTMClassifier) -> Any:
    """A keras.Model computing what `model` computes with the masked readout: token ids [B, T] (0 the padding)
    -> logits [B, classes], its weights copied from `model`. Token inputs and the classify task only, for now."""
    import keras

    if model.features or model.tag:
        raise LstmbenchError("keras_twin: token inputs and the classify task only (features and tagging are not "
                             "mapped yet)")
    lstm = model.lstm
    inputs = keras.Input((None,), dtype="int32")
    embed = keras.layers.Embedding(model.embed.num_embeddings, model.embed.embedding_dim, mask_zero=True)
    x = embed(inputs)
    layers = []
    for k in range(lstm.num_layers):
        last = k + 1 == lstm.num_layers
        layer = keras.layers.LSTM(lstm.hidden_size, return_sequences=not last)
        if lstm.bidirectional:
            layer = keras.layers.Bidirectional(layer, merge_mode="concat")
        x = layer(x)
        layers.append(layer)
    head = keras.layers.Dense(model.head.out_features)
    twin = keras.Model(inputs, head(x))
    embed.set_weights([_numpy(model.embed.weight)])
    for k, layer in enumerate(layers):
        if lstm.bidirectional:
            layer.forward_layer.set_weights(_lstm_weights(lstm, k, ""))
            layer.backward_layer.set_weights(_lstm_weights(lstm, k, "_reverse"))
        else:
            layer.set_weights(_lstm_weights(lstm, k, ""))
    head.set_weights([_numpy(model.head.weight).T, _numpy(model.head.bias)])
    return twin


def _lstm_weights(lstm: Any, layer: int, suffix: str) -> list[Any]:
    """One direction of one layer as Keras's LSTM cell holds it: kernel, recurrent kernel, one bias."""
    get = lambda name: _numpy(getattr(lstm, f"{name}_l{layer}{suffix}"))  # noqa: E731
    return [get("weight_ih").T, get("weight_hh").T, get("bias_ih") + get("bias_hh")]


def _numpy(t: Any) -> Any:
    return t.detach().to("cpu").float().numpy()
