"""The seeded PyTorch model's twin in Keras: the same architecture with the same weights, its weights and
gradients read back in PyTorch's layout, so that Keras's masking recipe (`Embedding(mask_zero=True)` in front of
`layers.LSTM`) can be measured against PyTorch's strategies from the same start. Import it in a fresh interpreter
whose KERAS_BACKEND is set (torch, tensorflow or jax): Keras reads the backend once, at import.

The mapping, from Keras's own source (keras/src/layers/rnn/lstm.py): the cell's `kernel` is [input, 4 x units],
`recurrent_kernel` [units, 4 x units] and its one `bias` [4 x units], gates in the order i, f, c, o, which is
PyTorch's i, f, g, o; so kernel = weight_ih.T, recurrent_kernel = weight_hh.T, bias = bias_ih + bias_hh. A
bidirectional layer's backward LSTM takes the `_reverse` weights; a Dense head takes head.weight.T and head.bias.
"""
from __future__ import annotations

from typing import Any

import numpy as np

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


# how a PyTorch parameter is read from its Keras variable: transposed, as is, or as the one bias (bias_hh: the
# same variable, whose gradient it shares and whose value, copied back, is 0: the sum stays the Keras bias)
Pair = tuple[str, Any, str]  # (PyTorch name, Keras variable, "T" | "same" | "bias_ih" | "bias_hh")


def pairs(model: LSTMClassifier, twin: Any) -> list[Pair]:
    """Each PyTorch parameter of `model`, in model.parameters()'s order, with the twin's variable that holds it."""
    embed, *lstms, head = [layer for layer in twin.layers if layer.weights]
    out: list[Pair] = [("embed.weight", embed.embeddings, "same")]
    for k, layer in enumerate(lstms):
        directions = [(layer.forward_layer, ""), (layer.backward_layer, "_reverse")] if model.lstm.bidirectional \
            else [(layer, "")]
        for cell_of, suffix in directions:
            cell = cell_of.cell
            out += [(f"lstm.weight_ih_l{k}{suffix}", cell.kernel, "T"),
                    (f"lstm.weight_hh_l{k}{suffix}", cell.recurrent_kernel, "T"),
                    (f"lstm.bias_ih_l{k}{suffix}", cell.bias, "bias_ih"),
                    (f"lstm.bias_hh_l{k}{suffix}", cell.bias, "bias_hh")]
    out += [("head.weight", head.kernel, "T"), ("head.bias", head.bias, "same")]
    order = [name for name, _ in model.named_parameters()]
    return sorted(out, key=lambda pair: order.index(pair[0]))


def state_dict_of(model: LSTMClassifier, twin: Any) -> dict[str, Any]:
    """The twin's weights as `model`'s state dict (torch tensors): what the exact evaluation loads."""
    import keras
    import torch

    def value(variable: Any, how: str) -> Any:
        array = np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)
        return array.T if how == "T" else np.zeros_like(array) if how == "bias_hh" else array

    return {name: torch.from_numpy(np.ascontiguousarray(value(v, how))) for name, v, how in pairs(model, twin)}


def torch_gradients(model: LSTMClassifier, twin: Any, grads: dict[int, Any]) -> list[Any]:
    """Gradients by Keras variable (id -> array) as `model`'s gradients, in its parameters' order (float64)."""
    import torch

    return [torch.from_numpy(np.ascontiguousarray(np.asarray(grads[id(v)], dtype=np.float64).T if how == "T"
                                                  else np.asarray(grads[id(v)], dtype=np.float64)))
            for _, v, how in pairs(model, twin)]


def loss_and_gradients(twin: Any, tokens: np.ndarray, labels: np.ndarray) -> tuple[float, dict[int, Any]]:
    """The twin's mean cross-entropy on a batch and its gradients (id of each trainable variable -> array), by
    the backend's own autodiff, in training mode: what a Keras train step differentiates."""
    import keras

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = twin.trainable_variables
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(labels, twin(tokens, training=True))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]  # the embedding's: sparse
    elif backend == "torch":
        import torch

        loss = loss_fn(torch.from_numpy(labels), twin(tokens, training=True))
        grads = torch.autograd.grad(loss, [v.value for v in variables])
    elif backend == "jax":
        import jax

        values = [v.value for v in variables]
        rest = [v.value for v in twin.non_trainable_variables]

        def compute(trainable: list[Any]) -> Any:
            logits, _ = twin.stateless_call(trainable, rest, tokens, training=True)
            return loss_fn(labels, logits)

        loss, grads = jax.value_and_grad(compute)(values)
    else:
        raise LstmbenchError(f"keras backend {backend!r} is not one lstmbench knows (tensorflow, torch, jax)")
    numpy = lambda t: np.asarray(keras.ops.convert_to_numpy(t))  # noqa: E731
    return float(numpy(loss)), {id(v): numpy(g) for v, g in zip(variables, grads)}
