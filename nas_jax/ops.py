"""Primitive ops of the cell-based spaces, as pure functions over pytrees.

Every parametrised op is a pair ``init_<op>(key, ...) -> (params, stats)`` and
``<op>(params, stats, x, *, train, ...) -> (y, new_stats)``: ``params`` holds
the trainable weights, ``stats`` the batch-norm running statistics (the flax
``batch_stats`` collection). Parameter-free ops (pooling, identity, zero) are
plain functions of ``x``. All tensors are NHWC, float32.

Batch norm: in ``train`` mode it normalises with the batch statistics and
returns running statistics updated with ``momentum`` (PyTorch's 0.1 update
rate); in eval mode it uses the running statistics and returns them unchanged.

Depthwise convolution implementation (``implementation(depthwise=...)``), measured on the
project's 2-core AMD EPYC CPU (jax 0.10.2, batch 64, 32x32, 16 channels, 3x3,
forward+backward, median of 10-15 runs, machine lightly loaded):

  ============================================  ==========
  ``lax.conv`` with ``feature_group_count=C``      0.26 s
  im2col (stacked taps) + einsum                    0.15 s
  9 shifted multiply-adds, jax autodiff             0.078 s
  9 shifted multiply-adds, custom VJP ("shift")     0.045 s
  C++ kernels through the XLA FFI ("kernel")       0.003 s
  ============================================  ==========

("shift" spends its time in the weight gradient, 9 reductions over N, H, W:
30-34 ms, against 0.65 ms in the kernel; see ``nas_jax.kernels.depthwise``.)
``"auto"`` (the default) picks "kernel" on CPU where ``nas_jax.kernels`` is
built, "shift" on CPU where it is not, and "grouped" (``feature_group_count``,
the natural fast path of cuDNN/TPU) elsewhere (``NAS_JAX_KERNELS=0`` in the
environment turns the kernels off, see ``nas_jax.kernels.build``). The choice
is made explicitly and scoped, ``with implementation(depthwise=...,
pointwise=..., fusion=...):``, and read when a function is traced. Pooling is
written as shifted taps: XLA:CPU's ``reduce_window`` gradient
(select-and-scatter) is slow.

Example:
    >>> p, s = init_sep_conv(jax.random.key(0), 16, 16, 3)
    >>> y, s = sep_conv(p, s, x, train=True, kernel=3, stride=1)
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nas_jax.kernels import build as kernel_build
from nas_jax.kernels import depthwise as kernel_depthwise
from nas_jax.kernels import fused as kernel_fused
from nas_jax.kernels import pointwise as kernel_pointwise

Params = dict[str, Any]
Stats = dict[str, Any]

BN_MOMENTUM = 0.1  # PyTorch convention: new = (1 - m) * old + m * batch
BN_EPS = 1e-5

_DEPTHWISE_IMPLS = ("auto", "kernel", "shift", "grouped")
_POINTWISE_IMPLS = ("auto", "kernel", "einsum")


@dataclasses.dataclass(frozen=True)
class Implementation:
  """How the ops compute depthwise and 1x1 convolutions (see ``implementation``).

  Attributes:
    depthwise: "auto", "kernel", "shift" or "grouped" (``depthwise_impl``).
    pointwise: "auto", "kernel" or "einsum" (``pointwise_impl``).
    fusion: whether the fused kernels of separable-conv halves may run
      (``fusion_active``).
  """
  depthwise: str = "auto"
  pointwise: str = "auto"
  fusion: bool = True


_IMPLEMENTATION: contextvars.ContextVar[Implementation] = contextvars.ContextVar(
    "nas_jax_ops_implementation", default=Implementation())


@contextlib.contextmanager
def implementation(*, depthwise: str | None = None, pointwise: str | None = None,
                   fusion: bool | None = None) -> Iterator[Implementation]:
  """Chooses how the ops compute convolutions inside a ``with`` block.

  The choice is read when a function is *traced*: a function jitted (or
  otherwise traced) inside the block uses it, and a jitted function keeps the
  implementation it was traced with. JAX caches traces by Python function
  object and argument shapes, not by this setting, so calling the function
  again elsewhere, or ``jax.jit`` of the same Python function, reuses that
  trace: build the function inside the block (the library's builders, such
  as ``make_train_step``, make a new one per call). The networks key their
  own cached sub-traces (the nasnet cell scan, the nb201 op switch) on the
  current choice, so a new function's trace never reuses one made under
  another choice. The setting lives in a ``contextvars.ContextVar``: it is
  scoped to the block (restored on exit, also on error) and to the thread or
  task that entered it. Arguments left None keep the enclosing choice.

  Args:
    depthwise: "auto" (on CPU "kernel" where ``nas_jax.kernels`` is built,
      else "shift"; "grouped" elsewhere), "kernel" (the C++ CPU kernels),
      "shift" (shifted multiply-adds with a custom VJP) or "grouped"
      (``lax.conv`` with ``feature_group_count``).
    pointwise: "auto" ("kernel" on CPU where ``nas_jax.kernels`` is built, else
      "einsum"), "kernel" (``nas_jax.kernels.pointwise``) or "einsum" (XLA's
      dot).
    fusion: when True (the default) and both resolved implementations are
      "kernel", ``sep_conv``, ``dil_conv`` and 1x1 ``relu_conv_bn`` compute
      ReLU -> [depthwise ->] 1x1 -> batch-norm statistics with
      ``nas_jax.kernels.fused``: one pass over memory instead of five in the
      forward, and one fused backward kernel per half in reverse mode
      (forward mode and second derivatives run the unfused kernels). It also
      selects the nasnet supernet's forward-only evaluation
      (``networks.nasnet.make_eval_archs``, ``kernels.pick``).

  Yields:
    The ``Implementation`` in force inside the block.

  Example:
      >>> with implementation(depthwise="grouped", pointwise="einsum", fusion=False):
      ...   y = jax.jit(lambda x, w: depthwise_conv(x, w))(x, w)  # traced here: XLA's grouped conv
  """
  changes = {}
  if depthwise is not None:
    if depthwise not in _DEPTHWISE_IMPLS:
      raise ValueError(f"unknown depthwise impl {depthwise!r}; choose one of {_DEPTHWISE_IMPLS}")
    changes["depthwise"] = depthwise
  if pointwise is not None:
    if pointwise not in _POINTWISE_IMPLS:
      raise ValueError(f"unknown pointwise impl {pointwise!r}; choose one of {_POINTWISE_IMPLS}")
    changes["pointwise"] = pointwise
  if fusion is not None:
    if not isinstance(fusion, (bool, np.bool_)):
      raise ValueError(f"fusion must be True or False, got {fusion!r}")
    changes["fusion"] = bool(fusion)
  token = _IMPLEMENTATION.set(dataclasses.replace(_IMPLEMENTATION.get(), **changes))
  try:
    yield _IMPLEMENTATION.get()
  finally:
    _IMPLEMENTATION.reset(token)


def current_implementation() -> Implementation:
  """The ``Implementation`` in force now (as set by ``implementation``; "auto" unresolved).

  It is hashable: a cache of traced functions keyed on it never mixes traces
  of different implementations.
  """
  return _IMPLEMENTATION.get()


def depthwise_impl() -> str:
  """The implementation that ``depthwise_conv`` uses now ("kernel"/"shift"/"grouped")."""
  impl = _IMPLEMENTATION.get().depthwise
  if impl == "auto":
    if jax.default_backend() != "cpu":
      return "grouped"
    return "kernel" if kernel_build.available() else "shift"
  return impl


out_size = kernel_depthwise.out_size


def pointwise_impl() -> str:
  """The implementation that ``pointwise_conv`` uses now ("kernel"/"einsum")."""
  impl = _IMPLEMENTATION.get().pointwise
  if impl == "auto":
    return "kernel" if jax.default_backend() == "cpu" and kernel_build.available() else "einsum"
  return impl


def fusion_active() -> bool:
  """Whether ``sep_conv`` / ``dil_conv`` / 1x1 ``relu_conv_bn`` use the fused kernel now."""
  return _IMPLEMENTATION.get().fusion and depthwise_impl() == "kernel" and pointwise_impl() == "kernel"


def _require_kernels(op: str) -> None:
  if jax.default_backend() == "cpu" and not kernel_build.available():
    raise RuntimeError(f"{op} impl 'kernel' is not available: {kernel_build.unavailable_reason()}; "
                       f"use ops.implementation({op}='auto')")


def pointwise_conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """1x1 convolution: ``[N, H, W, C_in] x [C_in, C_out] -> [N, H, W, C_out]``.

  On CPU the C++ kernels compute it and its gradients (``implementation(pointwise=...)``):
  the weight gradient ``x^T g`` runs 2-3x faster than XLA's dot at the
  supernet's shapes (``nas_jax.kernels.pointwise``).

  Args:
    x: NHWC input.
    w: ``[C_in, C_out]`` weights.

  Returns:
    ``[N, H, W, C_out]``.

  Example:
      >>> y = pointwise_conv(jnp.ones((2, 8, 8, 16)), jnp.ones((16, 32)))
  """
  if pointwise_impl() == "kernel":
    _require_kernels("pointwise")
    return kernel_pointwise.pointwise_conv(x, w)
  return jnp.einsum("nhwc,cd->nhwd", x, w)


# --- initialisers -------------------------------------------------------------
def host_rng(key: jax.Array) -> np.random.Generator | None:
  """A numpy generator seeded by a concrete key; None for a traced key.

  Initialisers draw on the host when they can: a supernet has hundreds of
  weight tensors, and drawing each with ``jax.random`` costs either one eager
  dispatch per tensor or one large XLA program to compile (measured on the
  benchmark supernet, loaded 2-core CPU: 47-58 s either way, against well under
  a second with numpy). Under ``jit``/``vmap`` (traced keys) they fall back to
  ``jax.random``. The same key always gives the same weights.
  """
  if isinstance(key, jax.core.Tracer):  # cheap test first: building the exception's message is slow
    return None
  try:
    data = np.asarray(jax.random.key_data(key))
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None
  return np.random.default_rng(data.astype(np.uint64).ravel().tolist())


def normal(key: jax.Array, shape: tuple[int, ...], scale: float = 1.0) -> jax.Array:
  """``scale * N(0, 1)`` float32 weights (host-drawn for a concrete key, see ``host_rng``)."""
  rng = host_rng(key)
  if rng is None:
    return jax.random.normal(key, shape, jnp.float32) * scale
  return jax.device_put(rng.standard_normal(shape, np.float32) * np.float32(scale))


def uniform(key: jax.Array, shape: tuple[int, ...], low: float, high: float) -> jax.Array:
  """Uniform float32 weights in ``[low, high)`` (host-drawn for a concrete key)."""
  rng = host_rng(key)
  if rng is None:
    return jax.random.uniform(key, shape, jnp.float32, low, high)
  return jax.device_put(rng.uniform(low, high, shape).astype(np.float32))


def _he(key: jax.Array, shape: tuple[int, ...], fan_in: int) -> jax.Array:
  return normal(key, shape, math.sqrt(2.0 / fan_in))


def init_bn(channels: int) -> tuple[Params, Stats]:
  """Batch-norm scale/bias (1, 0) and running mean/var (0, 1)."""
  # Built on the host and transferred: eager jnp.ones/zeros/asarray compile one small XLA program per shape.
  ones, zeros = np.ones((channels,), np.float32), np.zeros((channels,), np.float32)
  return ({"scale": jax.device_put(ones), "bias": jax.device_put(zeros)},
          {"mean": jax.device_put(zeros), "var": jax.device_put(ones)})


def bn_coefficients(params: Params, stats: Stats, moments: tuple[jax.Array, jax.Array] | None, count: int, *,
                    train: bool) -> tuple[jax.Array, jax.Array, Stats]:
  """Batch norm as a per-channel affine map: ``(scale, shift, new_stats)`` with ``bn(x) = x * scale + shift``.

  Args:
    params, stats: the layer's ``{"scale", "bias"}`` and ``{"mean", "var"}``.
    moments: ``(mean, var)`` of the batch (``kernels.fused.batch_moments``);
      read in train mode only (None is fine in eval mode).
    count: the number of values per channel behind ``moments`` (N * H * W),
      for the unbiased running variance.
    train: batch statistics (True) or running statistics (False).
  """
  if train:
    mean, var = moments
    unbiased = var * (count / max(count - 1, 1))
    new_stats = {"mean": (1 - BN_MOMENTUM) * stats["mean"] + BN_MOMENTUM * lax.stop_gradient(mean),
                 "var": (1 - BN_MOMENTUM) * stats["var"] + BN_MOMENTUM * lax.stop_gradient(unbiased)}
  else:
    mean, var, new_stats = stats["mean"], stats["var"], stats
  scale = params["scale"] * lax.rsqrt(var + BN_EPS)
  return scale, params["bias"] - mean * scale, new_stats


def batch_norm(params: Params, stats: Stats, x: jax.Array, *, train: bool) -> tuple[jax.Array, Stats]:
  """Batch norm over N, H, W (see module docstring for the two modes)."""
  moments = kernel_fused.batch_moments(x) if train else None
  scale, shift, new_stats = bn_coefficients(params, stats, moments, x.shape[0] * x.shape[1] * x.shape[2],
                                            train=train)
  return x * scale + shift, new_stats


def _fused_half(bn_params: Params, bn_stats: Stats, x: jax.Array, affine: tuple[jax.Array, jax.Array] | None,
                weights: tuple[jax.Array, ...], stride: int, dilation: int, train: bool):
  """``[dw ->] pw of relu(affine(x))`` and its batch norm as ``(y, scale, shift, new_stats)``: bn(y) = y*scale+shift."""
  a, b = affine if affine is not None else (None, None)
  y, mean, var = kernel_fused.relu_conv_moments(x, a, b, weights, stride=stride, dilation=dilation)
  scale, shift, new_stats = bn_coefficients(bn_params, bn_stats, (mean, var), y.shape[0] * y.shape[1] * y.shape[2],
                                            train=train)
  return y, scale, shift, new_stats


# --- convolutions -------------------------------------------------------------
def conv2d(x: jax.Array, w: jax.Array, stride: int = 1, dilation: int = 1, impl: str = "lax") -> jax.Array:
  """Dense convolution, HWIO weights, 'same' padding of d*(k-1)//2.

  Args:
    x: ``[N, H, W, C_in]``.
    w: ``[k, k, C_in, C_out]``.
    stride, dilation: spatial stride and kernel dilation.
    impl: "lax" (XLA's convolution), "taps" (a sum of ``k*k`` 1x1
      convolutions of shifted windows, see ``branch_conv_impl``) or
      "im2col" (the ``k*k`` shifted windows concatenated along channels,
      then one 1x1 convolution, see ``stem_conv_impl``). 1x1 kernels are
      always one ``pointwise_conv``.

  Returns:
    ``[N, out_size(H), out_size(W), C_out]``.
  """
  k = w.shape[0]
  if k == 1 and dilation == 1:
    if stride > 1:
      x = x[:, ::stride, ::stride, :]
    return pointwise_conv(x, w[0, 0])
  pad = dilation * (k - 1) // 2
  if impl == "taps":
    ho, wo = out_size(x.shape[1], k, stride, dilation), out_size(x.shape[2], k, stride, dilation)
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = None
    for i, j, tap in _taps(xp, k, stride, dilation, ho, wo):
      term = jnp.einsum("nhwc,cd->nhwd", tap, w[i, j])
      out = term if out is None else out + term
    return out
  if impl == "im2col":
    ho, wo = out_size(x.shape[1], k, stride, dilation), out_size(x.shape[2], k, stride, dilation)
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    cols = jnp.concatenate([tap for _, _, tap in _taps(xp, k, stride, dilation, ho, wo)], axis=-1)
    return pointwise_conv(cols, w.reshape(k * k * w.shape[2], w.shape[3]))
  if impl != "lax":
    raise ValueError(f"unknown conv impl {impl!r}; choose 'lax', 'taps' or 'im2col'")
  return lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad), (pad, pad)],
                                  rhs_dilation=(dilation, dilation),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def stem_conv_impl() -> str:
  """The ``conv2d`` impl for a network's stem (a 3x3 convolution of the few image channels).

  XLA:CPU computes the weight gradient of a convolution with 3 input
  channels slowly; as one 1x1 convolution of the ``9 * 3`` shifted windows
  ("im2col") it runs on the pointwise kernels. Measured (jax 0.10.2, 2-core
  CPU, 3x3 conv 3->48 on 64x32x32): weight gradient 22-25 ms (lax) vs
  5.2-5.6 ms (im2col), forward 4.1-5.5 vs 3.9-4.7 ms. "im2col" on CPU,
  "lax" elsewhere.
  """
  return "im2col" if jax.default_backend() == "cpu" else "lax"


def branch_conv_impl() -> str:
  """The ``conv2d`` impl for convolutions inside ``lax.switch`` / ``lax.cond`` branches.

  XLA:CPU runs a convolution inside a conditional far slower than the same
  convolution outside one. Measured (jax 0.10.2, 2-core CPU, ReLU-conv3x3 on
  64x HxWxC, forward+backward, in a 2-branch switch): C=16 at 32x32 734 ms
  (lax) vs 104 ms (taps); C=32 at 16x16 740 vs 68 ms; C=64 at 8x8 589 vs
  25 ms. Outside a conditional ``lax`` is as fast or faster (16->32 stride 2
  at 32x32: 33 vs 37 ms; 32->32 at 16x16: 45 vs 68 ms). So: "taps" on CPU,
  "lax" (cuDNN / TPU convolutions) elsewhere.
  """
  return "taps" if jax.default_backend() == "cpu" else "lax"


def _taps(xp: jax.Array, k: int, stride: int, dilation: int, ho: int, wo: int):
  """The k*k strided windows of a padded NHWC tensor, as (i, j, slice)."""
  n, _, _, c = xp.shape
  for i in range(k):
    for j in range(k):
      start = (0, i * dilation, j * dilation, 0)
      limit = (n, i * dilation + (ho - 1) * stride + 1, j * dilation + (wo - 1) * stride + 1, c)
      yield i, j, lax.slice(xp, start, limit, (1, stride, stride, 1))


def _window_sum(x, w, stride, dilation, kernel, pad_value=0.0):
  """``sum_taps w[i, j] * window_ij(x)`` ('same' padding); ``w=None``: plain sum."""
  pad = dilation * (kernel - 1) // 2
  ho = out_size(x.shape[1], kernel, stride, dilation)
  wo = out_size(x.shape[2], kernel, stride, dilation)
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=pad_value)
  out = None
  for i, j, tap in _taps(xp, kernel, stride, dilation, ho, wo):
    term = tap if w is None else tap * w[i, j]
    out = term if out is None else out + term
  return out


def _interleave(g, size, stride, fill=0):
  """Spreads an output-grid tensor back onto the input grid: ``r[s*q] = g[q]``.

  Holes (input positions no window starts at) get ``fill``; the result has the
  input's spatial size ``size = (H, W)``.
  """
  if stride == 1:
    return g
  ho, wo = g.shape[1], g.shape[2]
  return lax.pad(g, jnp.asarray(fill, g.dtype),
                 [(0, 0, 0), (0, size[0] - ((ho - 1) * stride + 1), stride - 1),
                  (0, size[1] - ((wo - 1) * stride + 1), stride - 1), (0, 0, 0)])


def _window_sum_transpose(g, w, stride, dilation, kernel, size):
  """Input gradient of ``_window_sum``: the stride-1 correlation of the
  zero-interleaved output gradient with the flipped kernel (one fused pass)."""
  g1 = _interleave(g, size, stride)
  return _window_sum(g1, None if w is None else w[::-1, ::-1], 1, dilation, kernel)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _tap_reductions(x, g, stride, dilation, kernel):
  """``r[i, j, c] = sum_{n,h,w} window_ij(x)[n, h, w, c] * g[n, h, w, c]``.

  The products go through variadic reductions over the batch axis, up to 9
  taps per reduction (one pass over ``x`` and ``g`` each), then a small
  reduction over H, W. Measured (64x32x32x16, loaded 2-core CPU): 3x3 in 11
  ms, against 60-65 ms for 9 separate ``jnp.sum(..., axis=(0, 1, 2))`` calls,
  which XLA:CPU does not vectorise when the operand is a strided window; 5x5 in
  32 ms with chunks of 9 taps (53 ms with all 25 in one reduction).
  """
  pad = dilation * (kernel - 1) // 2
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  prods = [tap * g for _, _, tap in _taps(xp, kernel, stride, dilation, g.shape[1], g.shape[2])]
  sums = []
  for c in range(0, len(prods), _TAPS_PER_REDUCTION):
    chunk = tuple(prods[c:c + _TAPS_PER_REDUCTION])
    zeros = tuple(jnp.zeros((), g.dtype) for _ in chunk)
    sums += lax.reduce(chunk, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)), (0,))
  return jnp.sum(jnp.stack(sums), axis=(1, 2)).reshape(kernel, kernel, x.shape[-1])


@_tap_reductions.defjvp
def _tap_reductions_jvp(stride, dilation, kernel, primals, tangents):
  # Bilinear in (x, g). XLA's variadic ``reduce`` has no autodiff rule, so this
  # rule is what lets forward-over-reverse (``jax.hessian``) pass the
  # depthwise backward pass.
  (x, g), (tx, tg) = primals, tangents
  out = _tap_reductions(x, g, stride, dilation, kernel)
  return out, (_tap_reductions(tx, g, stride, dilation, kernel)
               + _tap_reductions(x, tg, stride, dilation, kernel))


_TAPS_PER_REDUCTION = 9


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dw_shift(x, w, stride, dilation):
  return _window_sum(x, w, stride, dilation, w.shape[0])


def _dw_shift_fwd(x, w, stride, dilation):
  return _window_sum(x, w, stride, dilation, w.shape[0]), (x, w)


def _dw_shift_bwd(stride, dilation, res, g):
  x, w = res
  k = w.shape[0]
  dx = _window_sum_transpose(g, w, stride, dilation, k, x.shape[1:3])
  return dx, _tap_reductions(x, g, stride, dilation, k)


_dw_shift.defvjp(_dw_shift_fwd, _dw_shift_bwd)


def depthwise_conv(x: jax.Array, w: jax.Array, stride: int = 1, dilation: int = 1,
                   impl: str | None = None) -> jax.Array:
  """Depthwise convolution with weights ``[k, k, C]`` and 'same' padding.

  Args:
    x: ``[N, H, W, C]``.
    w: ``[k, k, C]`` (k odd).
    stride: spatial stride.
    dilation: kernel dilation.
    impl: None (``depthwise_impl()``, see ``implementation``), "kernel", "shift" or "grouped".

  Returns:
    ``[N, out_size(H), out_size(W), C]``.
  """
  impl = impl or depthwise_impl()
  if impl == "kernel":
    _require_kernels("depthwise")
    return kernel_depthwise.depthwise_conv(x, w, stride, dilation)
  if impl == "shift":
    return _dw_shift(x, w, stride, dilation)
  if impl == "grouped":
    return kernel_depthwise.grouped_conv(x, w, stride, dilation)
  raise ValueError(f"unknown depthwise impl {impl!r}; choose 'kernel', 'shift' or 'grouped'")


# --- composite parametrised ops ---------------------------------------------
def init_relu_conv_bn(key: jax.Array, c_in: int, c_out: int, kernel: int = 1) -> tuple[Params, Stats]:
  """ReLU -> conv(kernel) -> BN."""
  bn_p, bn_s = init_bn(c_out)
  return {"w": _he(key, (kernel, kernel, c_in, c_out), kernel * kernel * c_in), "bn": bn_p}, {"bn": bn_s}


def relu_conv_bn(params: Params, stats: Stats, x: jax.Array, *, train: bool, stride: int = 1,
                 relu: bool = True, conv_impl: str = "lax") -> tuple[jax.Array, Stats]:
  """ReLU (optional) -> conv -> BN; returns ``(y, new_stats)``; ``conv_impl`` as in ``conv2d``."""
  if relu and stride == 1 and params["w"].shape[:2] == (1, 1) and fusion_active():
    y, scale, shift, bn_s = _fused_half(params["bn"], stats["bn"], x, None, (params["w"][0, 0],), 1, 1, train)
    return y * scale + shift, {"bn": bn_s}
  if relu:
    x = jax.nn.relu(x)
  y, bn_s = batch_norm(params["bn"], stats["bn"], conv2d(x, params["w"], stride, impl=conv_impl), train=train)
  return y, {"bn": bn_s}


def init_sep_conv(key: jax.Array, c_in: int, c_out: int, kernel: int) -> tuple[Params, Stats]:
  """Separable conv (ReLU-dw-pw-BN twice, NASNet/DARTS)."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  b1p, b1s = init_bn(c_in)
  b2p, b2s = init_bn(c_out)
  params = {"dw1": _he(k1, (kernel, kernel, c_in), kernel * kernel),
            "pw1": _he(k2, (c_in, c_in), c_in), "bn1": b1p,
            "dw2": _he(k3, (kernel, kernel, c_in), kernel * kernel),
            "pw2": _he(k4, (c_in, c_out), c_in), "bn2": b2p}
  return params, {"bn1": b1s, "bn2": b2s}


def sep_conv(params: Params, stats: Stats, x: jax.Array, *, train: bool, stride: int = 1,
             dilation: int = 1) -> tuple[jax.Array, Stats]:
  """ReLU-dw(stride)-pw-BN-ReLU-dw-pw-BN; the kernel size comes from params.

  With ``fusion_active()``, each ReLU-dw-pw with its BN statistics is one
  fused kernel call, and the first BN enters the second call as its input
  affine map (same maths; see ``implementation``).
  """
  if fusion_active():
    y, scale, shift, s1 = _fused_half(params["bn1"], stats["bn1"], x, None, (params["dw1"], params["pw1"]),
                                      stride, 1, train)
    y, scale, shift, s2 = _fused_half(params["bn2"], stats["bn2"], y, (scale, shift),
                                      (params["dw2"], params["pw2"]), 1, 1, train)
    return y * scale + shift, {"bn1": s1, "bn2": s2}
  y = depthwise_conv(jax.nn.relu(x), params["dw1"], stride)
  y, s1 = batch_norm(params["bn1"], stats["bn1"], pointwise_conv(y, params["pw1"]), train=train)
  y = depthwise_conv(jax.nn.relu(y), params["dw2"], 1)
  y, s2 = batch_norm(params["bn2"], stats["bn2"], pointwise_conv(y, params["pw2"]), train=train)
  return y, {"bn1": s1, "bn2": s2}


def init_dil_conv(key: jax.Array, c_in: int, c_out: int, kernel: int) -> tuple[Params, Stats]:
  """Dilated separable conv (ReLU-dw(dilated)-pw-BN, DARTS)."""
  k1, k2 = jax.random.split(key)
  bp, bs = init_bn(c_out)
  return ({"dw": _he(k1, (kernel, kernel, c_in), kernel * kernel), "pw": _he(k2, (c_in, c_out), c_in), "bn": bp},
          {"bn": bs})


def dil_conv(params: Params, stats: Stats, x: jax.Array, *, train: bool, stride: int = 1,
             dilation: int = 2) -> tuple[jax.Array, Stats]:
  """ReLU -> dilated depthwise(stride) -> pointwise -> BN (fused as in ``sep_conv``)."""
  if fusion_active():
    y, scale, shift, s = _fused_half(params["bn"], stats["bn"], x, None, (params["dw"], params["pw"]), stride,
                                     dilation, train)
    return y * scale + shift, {"bn": s}
  y = depthwise_conv(jax.nn.relu(x), params["dw"], stride, dilation)
  y, s = batch_norm(params["bn"], stats["bn"], pointwise_conv(y, params["pw"]), train=train)
  return y, {"bn": s}


def init_factorized_reduce(key: jax.Array, c_in: int, c_out: int) -> tuple[Params, Stats]:
  """Factorized reduce: two offset stride-2 1x1 convs, concatenated, BN."""
  if c_out < 2:
    raise ValueError(f"factorized reduce needs c_out >= 2, got {c_out}; use more channels")
  k1, k2 = jax.random.split(key)
  bp, bs = init_bn(c_out)
  half = c_out // 2
  return ({"w1": _he(k1, (c_in, half), c_in), "w2": _he(k2, (c_in, c_out - half), c_in), "bn": bp}, {"bn": bs})


def factorized_reduce(params: Params, stats: Stats, x: jax.Array, *, train: bool) -> tuple[jax.Array, Stats]:
  """ReLU -> [conv1x1/2(x), conv1x1/2(x shifted by one pixel)] -> BN.

  Output size ``ceil(H/2) x ceil(W/2)`` (odd sizes are zero-padded at the
  bottom/right for the shifted branch), matching the strided 3x3 ops.
  """
  x = jax.nn.relu(x)
  a = x[:, ::2, ::2, :]
  xp = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
  b = xp[:, 1::2, 1::2, :]
  y = jnp.concatenate([pointwise_conv(a, params["w1"]), pointwise_conv(b, params["w2"])], axis=-1)
  y, s = batch_norm(params["bn"], stats["bn"], y, train=train)
  return y, {"bn": s}


# --- parameter-free ops -------------------------------------------------------
# Pooling is written as shifted taps with custom backward passes: XLA:CPU's
# ``reduce_window`` gradient (select-and-scatter) is slow, and so is autodiff
# through a chain of 9 ``maximum``s (a mask and a padded add per tap).
# Measured fwd+bwd (64x32x32x16, loaded 2-core CPU): max pool 144 ms by
# autodiff of the tap chain; avg pool 32 ms by autodiff.
def max_pool(x: jax.Array, stride: int = 1, kernel: int = 3) -> jax.Array:
  """Max pooling, 'same' padding with -inf.

  The gradient goes to the first maximal tap of each window (as PyTorch and
  ``reduce_window`` do), computed in one fused pass from the stored arg-max.
  """
  return _max_pool(x, stride, kernel)


def _max_pool_fwd_impl(x, stride, kernel):
  pad = (kernel - 1) // 2
  ho, wo = out_size(x.shape[1], kernel, stride), out_size(x.shape[2], kernel, stride)
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-jnp.inf)
  best, arg = None, None
  for i, j, tap in _taps(xp, kernel, stride, 1, ho, wo):
    if best is None:
      best, arg = tap, jnp.zeros(tap.shape, jnp.int8)
    else:
      better = tap > best
      best = jnp.where(better, tap, best)
      arg = jnp.where(better, jnp.int8(i * kernel + j), arg)
  return best, arg


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x, stride, kernel):
  return _max_pool_fwd_impl(x, stride, kernel)[0]


def _max_pool_fwd(x, stride, kernel):
  y, arg = _max_pool_fwd_impl(x, stride, kernel)
  return y, (arg, x.shape)


def _max_pool_bwd(stride, kernel, res, g):
  arg, shape = res
  pad = (kernel - 1) // 2
  size = shape[1:3]
  # Input position p receives g[q] from every window q whose arg-max tap
  # (i, j) lands on p: q * stride + (i, j) - pad = p.
  g1 = jnp.pad(_interleave(g, size, stride), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  a1 = jnp.pad(_interleave(arg, size, stride, fill=-1), ((0, 0), (pad, pad), (pad, pad), (0, 0)),
               constant_values=-1)
  dx = None
  for i in range(kernel):
    for j in range(kernel):
      start = (0, 2 * pad - i, 2 * pad - j, 0)
      limit = (shape[0], start[1] + size[0], start[2] + size[1], shape[3])
      term = jnp.where(lax.slice(a1, start, limit) == i * kernel + j, lax.slice(g1, start, limit), 0.0)
      dx = term if dx is None else dx + term
  return (dx,)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


@functools.lru_cache(maxsize=None)
def _inv_counts(h: int, w: int, kernel: int, stride: int) -> np.ndarray:
  pad = (kernel - 1) // 2
  ones = np.pad(np.ones((h, w), np.float32), pad)
  ho, wo = out_size(h, kernel, stride), out_size(w, kernel, stride)
  cnt = np.zeros((ho, wo), np.float32)
  for i in range(kernel):
    for j in range(kernel):
      cnt += ones[i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride]
  return (1.0 / cnt)[None, :, :, None]


def avg_pool(x: jax.Array, stride: int = 1, kernel: int = 3) -> jax.Array:
  """Average pooling, 'same' padding, padded cells not counted
  (``count_include_pad=False`` as in DARTS)."""
  return _sum_pool(x, stride, kernel) * _inv_counts(x.shape[1], x.shape[2], kernel, stride)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _sum_pool(x, stride, kernel):
  return _window_sum(x, None, stride, 1, kernel)


def _sum_pool_fwd(x, stride, kernel):
  return _window_sum(x, None, stride, 1, kernel), x.shape


def _sum_pool_bwd(stride, kernel, shape, g):
  return (_window_sum_transpose(g, None, stride, 1, kernel, shape[1:3]),)


_sum_pool.defvjp(_sum_pool_fwd, _sum_pool_bwd)


def identity(x: jax.Array) -> jax.Array:
  """The identity op (stride 1 only; strided identity is factorized_reduce)."""
  return x


def zero(x: jax.Array, stride: int = 1) -> jax.Array:
  """The 'none' op: zeros of the (strided) output shape."""
  if stride > 1:
    x = x[:, ::stride, ::stride, :]
  return jnp.zeros_like(x)


def drop_path(key: jax.Array, x: jax.Array, drop_prob: float | jax.Array) -> jax.Array:
  """Drops whole samples' paths with probability ``drop_prob`` and rescales.

  Args:
    key: PRNG key.
    x: ``[N, ...]``.
    drop_prob: probability in [0, 1); may be traced.

  Returns:
    ``x * mask / (1 - drop_prob)`` with a per-sample Bernoulli mask.
  """
  keep = 1.0 - drop_prob
  mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, 0.0)


def drop_path_factors(key: jax.Array, drop_prob: float | jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Drop-path factors for many paths at once (supernets, whose ops are traced).

  Args:
    key: PRNG key.
    drop_prob: probability in [0, 1); may be traced.
    shape: e.g. ``(edges, N)``.

  Returns:
    float32 ``shape``: 0 with probability ``drop_prob``, else ``1 / (1 - drop_prob)``;
    multiply a path's output per sample (``per_sample``).

  Example:
    >>> f = drop_path_factors(jax.random.key(0), 0.2, (10, 64))  # 0.0 or 1.25
  """
  keep = 1.0 - jnp.asarray(drop_prob, jnp.float32)
  return jnp.where(jax.random.bernoulli(key, keep, shape), 1.0 / keep, 0.0).astype(jnp.float32)


def per_sample(v: jax.Array, like: jax.Array) -> jax.Array:
  """``v [N]`` reshaped to broadcast over ``like [N, ...]``."""
  return v.reshape((-1,) + (1,) * (like.ndim - 1))


# --- global pooling + linear --------------------------------------------------
def init_dense(key: jax.Array, c_in: int, c_out: int) -> Params:
  """Linear layer (LeCun-uniform-like init, zero bias)."""
  bound = 1.0 / math.sqrt(c_in)
  return {"w": uniform(key, (c_in, c_out), -bound, bound),
          "b": jax.device_put(np.zeros((c_out,), np.float32))}


def dense(params: Params, x: jax.Array) -> jax.Array:
  """``x @ w + b``."""
  return x @ params["w"] + params["b"]
