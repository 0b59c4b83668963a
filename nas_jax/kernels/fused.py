"""The forward pass of a separable-conv half as one fused CPU kernel.

``relu_conv_moments(x, a, b, weights)`` computes

  ``z = relu(x * a + b)`` (``affine=False``: ``relu(x)``), then
  ``y = depthwise(z, dw) @ pw`` (``weights = (dw, pw)``) or ``y = z @ pw``
  (``weights = (pw,)``), and the batch moments ``mean = E[y]``,
  ``var = max(E[y^2] - mean^2, 0)`` over N, H, W (``batch_moments``),

which is one half of a separable convolution followed by its batch-norm
statistics; ``(a, b)`` is the previous batch norm as a per-channel affine map,
so a whole ``sep_conv`` is two calls and one affine map (``ops.sep_conv``).
On CPU with the kernels built, the value is computed by ``fused.cc`` in one
pass over ``x`` that writes only ``y``; unfused, the ReLU, the depthwise
output, the 1x1 output and the statistics each take a pass over memory, which
dominates the supernet's 500-image evaluation.

Derivatives: the JVP rule (``jax.custom_jvp``) differentiates the same maths
written with the depthwise and pointwise primitives (``reference``), so
``jax.grad``, ``jax.hessian`` and HVPs differentiate the unfused kernels;
undifferentiated calls run the fused kernel: evaluation, inference, and the
supernet cell scan's custom-VJP forward (whose backward recomputes each edge
through this rule). ``jax.vmap`` runs ``reference`` batched.
Elsewhere than CPU, or without the kernels, the primitive lowers to
``reference``.

Example:
    >>> from nas_jax.kernels import fused
    >>> y, mean, var = fused.relu_conv_moments(x, a, b, (dw, pw), stride=1)
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

from nas_jax.kernels import build, depthwise, pointwise

relu_conv_moments_p = Primitive("nas_jax_relu_conv_moments")  # (x, a, b, [dw,] pw) -> (y, mean, var)
relu_conv_moments_p.multiple_results = True
_TARGET = dict(build.TARGETS_BY_OP["fused"])


def batch_moments(y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(mean, var)`` of ``y [N, H, W, C]`` over N, H, W, as batch norm uses them.

  ``var = max(E[y^2] - mean^2, 0)``: one pass over ``y`` (XLA computes both
  sums in one fused reduction).
  """
  mean = jnp.mean(y, axis=(0, 1, 2))
  return mean, jnp.maximum(jnp.mean(jnp.square(y), axis=(0, 1, 2)) - jnp.square(mean), 0.0)


def reference(x, a, b, *weights, stride: int, dilation: int, affine: bool):
  """The unfused maths of ``relu_conv_moments`` on the depthwise / pointwise primitives."""
  z = jax.nn.relu(x * a + b if affine else x)
  if len(weights) == 2:
    z = depthwise.depthwise_conv(z, weights[0], stride, dilation)
  y = pointwise.pointwise_conv(z, weights[-1])
  return (y, *batch_moments(y))


def _abstract(x, a, b, *weights, stride, dilation, affine):
  del a, b, affine
  n, h, w, _ = x.shape
  if len(weights) == 2:
    k = weights[0].shape[0]
    h, w = depthwise.out_size(h, k, stride, dilation), depthwise.out_size(w, k, stride, dilation)
  cout = weights[-1].shape[1]
  moments = jax.core.ShapedArray((cout,), x.dtype)
  return jax.core.ShapedArray((n, h, w, cout), x.dtype), moments, moments


def _ffi(x, a, b, *weights, stride, dilation, affine):
  y, mean, var = _abstract(x, a, b, *weights, stride=stride, dilation=dilation, affine=affine)
  out = tuple(jax.ShapeDtypeStruct(v.shape, v.dtype) for v in (y, mean, var))
  if len(weights) == 2:
    call = jax.ffi.ffi_call(_TARGET["depthwise_pointwise"], out)
    return call(x, a, b, *weights, stride=np.int64(stride), dilation=np.int64(dilation), affine=np.int64(affine))
  return jax.ffi.ffi_call(_TARGET["pointwise"], out)(x, a, b, *weights, affine=np.int64(affine))


relu_conv_moments_p.def_abstract_eval(_abstract)
relu_conv_moments_p.def_impl(
    lambda *args, **params: jax.jit(functools.partial(relu_conv_moments_p.bind, **params))(*args))
_portable = mlir.lower_fun(reference, multiple_results=True)
_kernel = mlir.lower_fun(_ffi, multiple_results=True)
mlir.register_lowering(relu_conv_moments_p, _portable)
mlir.register_lowering(
    relu_conv_moments_p,
    lambda ctx, *args, **params: (_kernel if build.available() else _portable)(ctx, *args, **params),
    platform="cpu")


def _batched(args, dims, **params):
  out = jax.vmap(functools.partial(reference, **params), in_axes=tuple(dims))(*args)
  return out, (0, 0, 0)


batching.primitive_batchers[relu_conv_moments_p] = _batched


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5, 6))
def _relu_conv_moments(x, a, b, weights, stride, dilation, affine):
  return tuple(relu_conv_moments_p.bind(x, a, b, *weights, stride=stride, dilation=dilation, affine=affine))


@_relu_conv_moments.defjvp
def _relu_conv_moments_jvp(stride, dilation, affine, primals, tangents):
  def f(x, a, b, weights):
    return reference(x, a, b, *weights, stride=stride, dilation=dilation, affine=affine)
  return jax.jvp(f, primals, tangents)


def relu_conv_moments(x: jax.Array, a: jax.Array | None, b: jax.Array | None, weights: tuple[jax.Array, ...], *,
                      stride: int = 1, dilation: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``y = [depthwise(dw) ->] pointwise(pw) of relu(x * a + b)``, with the batch moments of ``y``.

  Args:
    x: ``[N, H, W, C]`` float32.
    a, b: ``[C]`` scale and shift applied before the ReLU (a previous batch
      norm), or both None for ``relu(x)``.
    weights: ``(dw [k, k, C], pw [C, C_out])``, or ``(pw,)`` for a 1x1
      convolution only (then ``stride`` must be 1).
    stride, dilation: of the depthwise convolution.

  Returns:
    ``(y [N, Ho, Wo, C_out], mean [C_out], var [C_out])`` with the moments of
    ``batch_moments(y)``.
  """
  c = x.shape[-1]
  if x.ndim != 4 or len(weights) not in (1, 2) or weights[-1].shape[0] != c:
    raise ValueError(f"relu_conv_moments needs x [N, H, W, C] and weights (dw, pw [C, C_out]) or (pw,); "
                     f"got x {x.shape} and weights {[w.shape for w in weights]}")
  if len(weights) == 2:
    k = weights[0].shape[0]
    if weights[0].shape != (k, k, c) or k % 2 == 0 or stride < 1 or dilation < 1:
      raise ValueError(f"relu_conv_moments: dw must be [k, k, {c}] with k odd, stride and dilation >= 1; "
                       f"got {weights[0].shape}, stride {stride}, dilation {dilation}")
  elif stride != 1:
    raise ValueError(f"relu_conv_moments without a depthwise weight needs stride 1, got {stride}")
  affine = a is not None
  if affine != (b is not None):
    raise ValueError("relu_conv_moments: give both a and b, or neither")
  if not affine:
    a = b = jnp.zeros((c,), x.dtype)  # not read (affine=False)
  return _relu_conv_moments(x, a, b, tuple(weights), int(stride), int(dilation), affine)
