"""Pointwise (1x1) convolution as three JAX primitives backed by the C++ CPU kernels.

``pointwise_conv(x, w)`` multiplies the last axis of ``x`` (``[..., K]``) by
``w`` (``[K, N]``). Like the depthwise primitives, the layer's three maps are
bilinear and each other's transposes:

  ``forward(x, w) = x w``, ``input_grad(g, w) = g w^T``, ``weight_grad(x, g) = x^T g``

  transpose of forward:     in x -> input_grad(ct, w);   in w -> weight_grad(x, ct)
  transpose of input_grad:  in g -> forward(ct, w);      in w -> weight_grad(ct, g)
  transpose of weight_grad: in x -> input_grad(g, ct);   in g -> forward(x, ct)

so gradients, Hessians and HVPs of any order run on the kernels. ``jax.vmap``
folds a mapped axis of ``x`` / ``g`` into their rows when ``w`` is shared (the
supernet's case); a mapped ``w`` or a mapped weight gradient runs as XLA's
batched dot.

Measured on the project's 2-core AMD EPYC (jax 0.10.2; ms, median of 20,
inputs ``[64, H, H, K]``; XLA = ``jnp.einsum`` through XLA:CPU's dot):

  =====================  ============  ============  ==============
  H, K -> N              forward       input grad    weight grad
  =====================  ============  ============  ==============
  32, 16 -> 16           0.83 / 0.62   0.47 / 0.59   3.08 / 1.12
  32, 80 -> 16           3.91 / 3.76   3.91 / 4.25   11.8 / 5.65
  16, 32 -> 32           1.06 / 0.40   0.77 / 0.42   1.31 / 0.50
  16, 160 -> 32          3.10 / 2.78   3.07 / 3.52   8.06 / 3.34
  8, 64 -> 64            0.57 / 0.36   0.89 / 0.33   1.39 / 0.43
  =====================  ============  ============  ==============

(XLA / kernel.)

Example:
    >>> from nas_jax.kernels import pointwise
    >>> y = pointwise.pointwise_conv(x, w)      # x [N, H, W, K], w [K, N_out]
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching

from nas_jax.kernels import build, primitive

forward_p = Primitive("nas_jax_pointwise_forward")          # (x [..., K], w [K, N]) -> [..., N]
input_grad_p = Primitive("nas_jax_pointwise_input_grad")    # (g [..., N], w [K, N]) -> [..., K]
weight_grad_p = Primitive("nas_jax_pointwise_weight_grad")  # (x [..., K], g [..., N]) -> [K, N]


def pointwise_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """``x @ w`` over the last axis: ``[..., K] x [K, N] -> [..., N]`` (float32).

  Args:
    x: input whose last axis is the channel axis.
    w: ``[K, N]`` weights.

  Returns:
    ``[..., N]``.
  """
  if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[0]:
    raise ValueError(f"pointwise_conv needs x [..., K] and w [K, N]; got {x.shape} and {w.shape}")
  return forward_p.bind(x, w)


def _forward_abstract(x, w):
  return jax.core.ShapedArray(x.shape[:-1] + (w.shape[1],), x.dtype)


def _input_grad_abstract(g, w):
  return jax.core.ShapedArray(g.shape[:-1] + (w.shape[0],), g.dtype)


def _weight_grad_abstract(x, g):
  return jax.core.ShapedArray((x.shape[-1], g.shape[-1]), x.dtype)


def _xla_forward(x, w):
  return jnp.einsum("...k,kn->...n", x, w)


def _xla_input_grad(g, w):
  return jnp.einsum("...n,kn->...k", g, w)


def _xla_weight_grad(x, g):
  return jnp.einsum("...k,...n->kn", x, g)


_TARGET = dict(build.TARGETS_BY_OP["pointwise"])
primitive.define(forward_p, _TARGET["forward"], _forward_abstract, _xla_forward)
primitive.define(input_grad_p, _TARGET["input_grad"], _input_grad_abstract, _xla_input_grad)
primitive.define(weight_grad_p, _TARGET["weight_grad"], _weight_grad_abstract, _xla_weight_grad)

ad.defbilinear(forward_p, lambda ct, x, w: input_grad_p.bind(ct, w), lambda ct, x, w: weight_grad_p.bind(x, ct))
ad.defbilinear(input_grad_p, lambda ct, g, w: forward_p.bind(ct, w), lambda ct, g, w: weight_grad_p.bind(ct, g))
ad.defbilinear(weight_grad_p, lambda ct, x, g: input_grad_p.bind(g, ct), lambda ct, x, g: forward_p.bind(x, ct))


# --- batching ----------------------------------------------------------------------------
def _rows_batched(prim):
  """forward / input_grad: a mapped activation joins the rows; a mapped ``w`` takes XLA's batched dot."""
  xla = {forward_p: "b...k,bkn->b...n", input_grad_p: "b...n,bkn->b...k"}[prim]

  def rule(args, dims):
    (a, w), (da, dw) = args, dims
    if dw is None:
      return prim.bind(jnp.moveaxis(a, da, 0), w), 0
    a = jnp.moveaxis(a, da, 0) if da is not None else jnp.broadcast_to(a, (w.shape[dw], *a.shape))
    return jnp.einsum(xla, a, jnp.moveaxis(w, dw, 0)), 0
  return rule


def _weight_grad_batched(args, dims):
  (x, g), (dx, dg) = args, dims
  size = x.shape[dx] if dx is not None else g.shape[dg]
  x = jnp.moveaxis(x, dx, 0) if dx is not None else jnp.broadcast_to(x, (size, *x.shape))
  g = jnp.moveaxis(g, dg, 0) if dg is not None else jnp.broadcast_to(g, (size, *g.shape))
  return jnp.einsum("b...k,b...n->bkn", x, g), 0


batching.primitive_batchers[forward_p] = _rows_batched(forward_p)
batching.primitive_batchers[input_grad_p] = _rows_batched(input_grad_p)
batching.primitive_batchers[weight_grad_p] = _weight_grad_batched
