"""A separable-conv half with its batch moments, forward and backward, as fused CPU kernels.

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

Derivatives: the JVP rule (``jax.custom_jvp``) computes the tangents with
``jvp_p``, a primitive linear in the tangents whose value is the JVP of the
same maths written with the depthwise and pointwise primitives
(``reference``). Reverse mode transposes ``jvp_p`` into ``vjp_p``: on CPU
with the kernels built, one fused backward kernel (``fused.cc``) that
recomputes the ReLU and depthwise rows of its half and writes only the input
gradient (x, y and the cotangent of y read once), instead of a pass over
memory for each of z, d, y and their cotangents. Forward mode (``jax.jvp``),
second derivatives (``jax.hessian``, HVPs) and ``jax.vmap`` run through the
references. Every undifferentiated call (evaluation, inference, the supernet
cell scan's custom-VJP forward) runs the fused forward kernel. Measured
(2-core CPU, batch 64, forward + backward of the op, same process, old and
new alternating): ``sep_conv`` 3x3 at 32x32x16 11.6 vs 14.5 ms, 5x5 16.4 vs
18.3 ms, 3x3 stride 2 4.4 vs 6.2 ms; the 1x1 ReLU-conv-BN 80->16 at 32x32
16.1 vs 20.1 ms.
Elsewhere than CPU, or without the kernels, the primitives lower to
their references.

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
from jax.interpreters import ad

from nas_jax.kernels import build, depthwise, pointwise, primitive

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


primitive.define_with_reference(relu_conv_moments_p, _abstract, _ffi, reference, True)
# The custom_jvp below serves first derivatives; a derivative of a derivative taken inside a
# lax.scan (DARTS's second order and BayesNAS's Hessian over a relaxed cell) can reach the bare
# primitive, which then differentiates through the unfused reference.
primitive.jvp_by_reference(relu_conv_moments_p, reference)


# --- derivatives ------------------------------------------------------------------------------
# The JVP of ``relu_conv_moments`` binds ``jvp_p``, which is linear in the
# tangents. Forward mode evaluates it as the JVP of ``reference``; reverse
# mode transposes it into ``vjp_p``, the fused backward kernel on CPU. So
# ``jax.grad`` runs one kernel per separable-conv half, and ``jax.jvp``,
# ``jax.hessian`` and HVPs still work (through the references).
jvp_p = Primitive("nas_jax_relu_conv_moments_jvp")  # (x, a, b, *w, y, mean, var, tx, ta, tb, *tw) -> (ty, tm, tv)
jvp_p.multiple_results = True
vjp_p = Primitive("nas_jax_relu_conv_moments_vjp")  # (x, a, b, *w, y, gy, c0, c1) -> (gx, ga, gb, *gw)
vjp_p.multiple_results = True


def _split_jvp_args(args, n_weights):
  """``(primals, (y, mean, var), tangents)`` of ``jvp_p``'s operands."""
  n = 3 + n_weights
  return args[:n], args[n:n + 3], args[n + 3:]


def _jvp_reference(*args, stride, dilation, affine, n_weights):
  primals, _, tangents = _split_jvp_args(args, n_weights)
  f = functools.partial(reference, stride=stride, dilation=dilation, affine=affine)
  return jax.jvp(f, primals, tangents)[1]


def _jvp_abstract(*args, stride, dilation, affine, n_weights):
  primals, _, _ = _split_jvp_args(args, n_weights)
  return _abstract(*primals, stride=stride, dilation=dilation, affine=affine)


def vjp_reference(x, a, b, *rest, stride, dilation, affine):
  """The maths of ``vjp_p`` in XLA ops: the VJP of ``reference``'s ``y`` at the cotangent ``gy + c0 + c1 * y``.

  ``rest`` is ``(*weights, y, gy, c0, c1)`` with ``y`` the forward's output;
  returns ``(gx, ga, gb, *gweights)`` (``ga``, ``gb`` zero when ``affine`` is
  False).
  """
  weights, (y, gy, c0, c1) = rest[:-4], rest[-4:]
  _, pull = jax.vjp(lambda *p: reference(*p, stride=stride, dilation=dilation, affine=affine)[0], x, a, b, *weights)
  return pull(gy + c0 + c1 * y)


def _vjp_abstract(x, a, b, *rest, stride, dilation, affine):
  del stride, dilation, affine
  return tuple(jax.core.ShapedArray(v.shape, v.dtype) for v in (x, a, b, *rest[:-4]))


def _vjp_ffi(x, a, b, *rest, stride, dilation, affine):
  out = tuple(jax.ShapeDtypeStruct(v.shape, v.dtype) for v in (x, a, b, *rest[:-4]))
  if len(rest) == 6:
    call = jax.ffi.ffi_call(_TARGET["depthwise_pointwise_backward"], out)
    return call(x, a, b, *rest, stride=np.int64(stride), dilation=np.int64(dilation), affine=np.int64(affine))
  return jax.ffi.ffi_call(_TARGET["pointwise_backward"], out)(x, a, b, *rest, affine=np.int64(affine))


def _jvp_transpose(cts, *args, stride, dilation, affine, n_weights):
  """Reverse mode: the cotangents of the tangent operands, from the fused backward."""
  primals, (y, mean, var), tangents = _split_jvp_args(args, n_weights)
  assert not any(ad.is_undefined_primal(p) for p in (*primals, y, mean, var)), "jvp_p is linear in its tangents only"
  y_aval = _abstract(*primals, stride=stride, dilation=dilation, affine=affine)[0]
  gy, g_mean, g_var = (jnp.zeros(v.shape, v.dtype) if type(ct) is ad.Zero else ct
                       for ct, v in zip(cts, (y_aval, mean, var)))
  count = y_aval.shape[0] * y_aval.shape[1] * y_aval.shape[2]
  # d mean / dy = 1 / M; d var / dy = 2 (y - mean) / M where var > 0 (the max(., 0) of batch_moments).
  c1 = 2.0 * jnp.where(var > 0, g_var, 0.0) / count
  c0 = g_mean / count - c1 * mean
  # Without the input affine map, ga and gb come back zero (kernel and reference).
  grads = vjp_p.bind(*primals, y, gy, c0, c1, stride=stride, dilation=dilation, affine=affine)
  return ([None] * (len(primals) + 3)
          + [g if ad.is_undefined_primal(t) else None for g, t in zip(grads, tangents)])


primitive.define_with_reference(jvp_p, _jvp_abstract, _jvp_reference, _jvp_reference, True)
primitive.jvp_by_reference(jvp_p, _jvp_reference)
ad.primitive_transposes[jvp_p] = _jvp_transpose
primitive.define_with_reference(vjp_p, _vjp_abstract, _vjp_ffi, vjp_reference, True)
primitive.jvp_by_reference(vjp_p, vjp_reference)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4, 5, 6))
def _relu_conv_moments(x, a, b, weights, stride, dilation, affine):
  return tuple(relu_conv_moments_p.bind(x, a, b, *weights, stride=stride, dilation=dilation, affine=affine))


@_relu_conv_moments.defjvp
def _relu_conv_moments_jvp(stride, dilation, affine, primals, tangents):
  x, a, b, weights = primals
  tx, ta, tb, tw = tangents
  out = _relu_conv_moments(x, a, b, weights, stride, dilation, affine)  # itself: higher orders nest
  t_out = jvp_p.bind(x, a, b, *weights, *out, tx, ta, tb, *tw, stride=stride, dilation=dilation,
                     affine=affine, n_weights=len(weights))
  return tuple(out), tuple(t_out)


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
