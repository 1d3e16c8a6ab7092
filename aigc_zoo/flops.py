"""Floating-point operations of a traced TensorFlow function, such as one train step.

    flops.count(lambda x: layer(x), tf.TensorSpec([8, 32]))   # -> int

Convention (TensorFlow's profiler, `ProfileOptionBuilder.float_operation()`): a multiply-add is
2 FLOPs, so a [m, k] x [k, n] matmul is 2*m*k*n and a convolution is 2 * output elements *
kernel height * kernel width * input channels; bias adds and element-wise arithmetic count 1
per element. The count runs on the function's graph as traced (before Grappler fuses ops), with
static shapes, so the batch size must be fixed.

What the profiler counts: MatMul, BatchMatMul, Conv2D, Conv2DBackpropInput (a transposed
convolution, and the input gradient of a convolution), Conv2DBackpropFilter, depthwise
convolutions, pooling, bias adds and the common element-wise and reduction ops. What it does not
count, and how this module treats it:

- `Einsum` (Keras' multi-head attention uses it): counted here as 2 x the product of the sizes
  of all distinct index letters of a two-operand einsum (a multiply-add per index
  combination), the same convention as MatMul.
- `BatchMatMul` with `adj_x=True`: the profiler reads a `transpose_a` attribute that batch
  matmuls do not have, so it takes the wrong contraction size (in the gradient of a batched
  dot product it counted 5 GFLOP for a 0.8 MFLOP op). Corrected here from the op's own
  `adj_x`.
- Fused batch norm, transcendental functions (Exp, Tanh, Sigmoid), casts, random draws,
  gathers and optimizer update ops (ResourceApplyAdam...) count 0. They are a small share of a
  convolutional step (the matmuls and convolutions dominate), so the count slightly
  underestimates the work.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import tensorflow as tf


def count(function: Callable[..., Any], *input_signature: Any) -> int:
    """FLOPs of one call of `function` on inputs of `input_signature` (nests of TensorSpec)."""
    if not isinstance(function, tf.types.experimental.PolymorphicFunction):
        function = tf.function(function, autograph=False)
    graph = function.get_concrete_function(*input_signature).graph
    return graph_flops(graph)


def graph_flops(graph: tf.Graph) -> int:
    """FLOPs of `graph`: the profiler's float-op count plus the einsums it leaves out."""
    options = (tf.compat.v1.profiler.ProfileOptionBuilder(
        tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
        .with_empty_output().build())
    profile = tf.compat.v1.profiler.profile(graph=graph, options=options)
    corrections = 0
    for op in graph.get_operations():
        if op.type == "Einsum":
            corrections += _einsum_flops(op)
        elif op.type in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
            corrections += _batch_matmul_correction(op)
    return int(profile.total_float_ops) + corrections


def _batch_matmul_correction(op: tf.Operation) -> int:
    """The right count of a batch matmul minus the profiler's (which ignores `adj_x`)."""
    a_shape = op.inputs[0].shape.as_list()
    outputs = int(np.prod(op.outputs[0].shape.as_list(), dtype=np.int64))
    contracted = a_shape[-2] if op.get_attr("adj_x") else a_shape[-1]
    return 2 * outputs * (contracted - a_shape[-1])


def _einsum_flops(op: tf.Operation) -> int:
    equation = op.get_attr("equation").decode()
    operands = equation.split("->")[0].split(",")
    if len(operands) != 2 or "." in equation:
        raise ValueError(f"cannot count FLOPs of einsum {equation!r} (two operands, no "
                         "ellipsis expected)")
    sizes: dict[str, int] = {}
    for letters, tensor in zip(operands, op.inputs):
        shape = tensor.shape.as_list()
        if None in shape:
            raise ValueError(f"einsum {equation!r} has an unknown dimension: {shape}")
        sizes.update(zip(re.sub(r"\s", "", letters), shape))
    return 2 * int(np.prod(list(sizes.values()), dtype=np.int64))


def train_step_flops(model: Any, batch: dict[str, tf.Tensor]) -> int:
    """FLOPs of one `model.train_step` on a batch shaped like `batch` (a compiled model).

    Traces the step in a separate function (nothing runs, no variable changes), so it counts
    exactly the ops Keras would run per step, before XLA or Grappler rewrite them.
    """
    specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), batch)
    return count(model.train_step, specs)
