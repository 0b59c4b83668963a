"""Forward kernels that read their input from a cell's states in place.

A weight-sharing supernet picks each edge's input among the states of the
cell with a traced index, and each cell's output is the concatenation of its
nodes masked by their loose-end flags. Written in XLA, the pick is a dynamic
slice and the output a concatenation: full copies of 33 MB tensors at the
supernet's 500-image evaluation batch. These primitives take the candidate
states as separate operands and read the chosen one, or the unmasked slots,
directly:

- ``relu_conv_moments_pick(idx, candidates, a, b, weights)``: the fused
  separable-conv half of ``kernels.fused.relu_conv_moments`` on
  ``candidates[idx]``;
- ``relu_pointwise_slots(mask, pw, slots)``: ``relu(concat_s(mask[s] *
  slots[s])) @ pw`` with its batch moments, skipping slots whose mask is 0
  (``mask >= 0``), optionally on a stride-2 grid (a factorized reduce);
- ``node_sum(kinds, idxs, edge0, edge1, states)``: a node as the sum of its
  two edges in one pass, each either ``y * a + b`` (an op's output before its
  last batch norm) or a 3x3 average (``count_include_pad=False``) or max pool
  with 'same' padding, or a copy, of ``states[idx]`` computed in place, so
  pools and identities are never written out (their ``y`` is a
  ``placeholder``).

On CPU with the kernels built they run ``fused.cc`` / ``pool.cc``; elsewhere
they lower to ``reference_*`` (XLA ops), which also gives their derivatives
(a JVP rule that differentiates the reference) and their ``vmap``.

Example:
    >>> y, mean, var = pick.relu_conv_moments_pick(idx, (x0, x1, n0), None, None, (dw, pw))
    >>> y, mean, var = pick.relu_pointwise_slots(mask, pw, nodes)   # nodes: B arrays [N, H, W, C]
    >>> node = pick.node_sum(kinds, idxs, (y0, a0, b0), (y1, a1, b1), (x0, x1, n0))
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching

from nas_jax.kernels import build, depthwise, fused, primitive

_FUSED = dict(build.TARGETS_BY_OP["fused"])
_POOL = dict(build.TARGETS_BY_OP["pool"])


def _select(idx, candidates):
  return lax.select_n(jnp.clip(idx, 0, len(candidates) - 1), *candidates)


def reference_conv_pick(idx, a, b, dw, pw, *candidates, stride, dilation, affine):
  """The maths of ``relu_conv_moments_pick`` in XLA ops."""
  return fused.reference(_select(idx, candidates), a, b, dw, pw, stride=stride, dilation=dilation, affine=affine)


def reference_slots(mask, pw, *slots, stride=1, offset=0):
  """The maths of ``relu_pointwise_slots`` in XLA ops."""
  x = jnp.concatenate([s * m for s, m in zip(slots, mask)], axis=-1)
  if (stride, offset) != (1, 0):
    _, ho, wo, _ = _pool_out(x.shape, stride)
    xp = jnp.pad(x, ((0, 0), (0, stride), (0, stride), (0, 0)))
    x = xp[:, offset:offset + stride * ho:stride, offset:offset + stride * wo:stride, :]
  return fused.reference(x, None, None, pw, stride=1, dilation=1, affine=False)


NODE_KINDS = {"affine": 0, "avg": 1, "max": 2, "copy": 3}


def _node_stride(state_shape, node_shape):
  stride = -(-state_shape[1] // node_shape[1])
  ok = _pool_out(state_shape, stride) == tuple(node_shape)
  return stride if ok else None


def reference_node_sum(kinds, idxs, y0, a0, b0, y1, a1, b1, *states):
  """The maths of ``node_sum`` in XLA ops."""
  from nas_jax import ops  # pylint: disable=import-outside-toplevel
  shape = y0.shape

  def edge(kind, idx, y, a, b):
    branches = [lambda: y * a + b]
    for k in (1, 2, 3):
      for x in states:
        stride = _node_stride(x.shape, shape)
        if stride is None or (k == 3 and stride != 1):
          branches.append(lambda: jnp.zeros(shape, y.dtype))  # not a valid choice
        elif k == 3:
          branches.append(lambda x=x: x)
        else:
          branches.append(lambda x=x, k=k, stride=stride: (ops.avg_pool if k == 1 else ops.max_pool)(x, stride))
    which = jnp.where(kind == 0, 0, 1 + (kind - 1) * len(states) + jnp.clip(idx, 0, len(states) - 1))
    return lax.switch(which, branches)

  return edge(kinds[0], idxs[0], y0, a0, b0) + edge(kinds[1], idxs[1], y1, a1, b1)


def _pool_out(shape, stride):
  n, h, w, c = shape
  return (n, (h - 1) // stride + 1, (w - 1) // stride + 1, c)


# --- primitives ----------------------------------------------------------------------------
conv_pick_p = Primitive("nas_jax_relu_conv_moments_pick")  # (idx, a, b, dw, pw, *cands) -> (y, mean, var)
conv_pick_p.multiple_results = True
slots_p = Primitive("nas_jax_relu_pointwise_slots")  # (mask, pw, *slots) -> (y, mean, var)
slots_p.multiple_results = True
node_sum_p = Primitive("nas_jax_node_sum")  # (kinds, idxs, y0, a0, b0, y1, a1, b1, *states) -> node
placeholder_p = Primitive("nas_jax_placeholder")  # () -> an unread buffer (zeros off the kernels)


def _moments_avals(shape, dtype):
  m = jax.core.ShapedArray((shape[-1],), dtype)
  return jax.core.ShapedArray(shape, dtype), m, m


def _conv_pick_abstract(idx, a, b, dw, pw, *cands, stride, dilation, affine):
  del idx, a, b, affine
  n, h, w, _ = cands[0].shape
  k = dw.shape[0]
  ho, wo = depthwise.out_size(h, k, stride, dilation), depthwise.out_size(w, k, stride, dilation)
  return _moments_avals((n, ho, wo, pw.shape[1]), cands[0].dtype)


def _slots_abstract(mask, pw, *slots, stride, offset):
  del mask, offset
  return _moments_avals(_pool_out(slots[0].shape, stride)[:3] + (pw.shape[1],), slots[0].dtype)


def _node_sum_abstract(kinds, idxs, y0, *rest):
  del kinds, idxs, rest
  return jax.core.ShapedArray(y0.shape, y0.dtype)


def _placeholder_abstract(*, shape, dtype):
  return jax.core.ShapedArray(shape, dtype)


def _shape_structs(avals):
  return tuple(jax.ShapeDtypeStruct(v.shape, v.dtype) for v in avals)


def _conv_pick_ffi(idx, a, b, dw, pw, *cands, stride, dilation, affine):
  out = _shape_structs(_conv_pick_abstract(idx, a, b, dw, pw, *cands, stride=stride, dilation=dilation,
                                           affine=affine))
  return jax.ffi.ffi_call(_FUSED["depthwise_pointwise_pick"], out)(
      idx, a, b, dw, pw, *cands, stride=np.int64(stride), dilation=np.int64(dilation), affine=np.int64(affine))


def _slots_ffi(mask, pw, *slots, stride, offset):
  out = _shape_structs(_slots_abstract(mask, pw, *slots, stride=stride, offset=offset))
  return jax.ffi.ffi_call(_FUSED["pointwise_slots"], out)(mask, pw, *slots, stride=np.int64(stride),
                                                          offset=np.int64(offset))


def _node_sum_ffi(kinds, idxs, y0, *rest):
  return jax.ffi.ffi_call(_POOL["node_sum"], jax.ShapeDtypeStruct(y0.shape, y0.dtype))(kinds, idxs, y0, *rest)


def _placeholder_ffi(*, shape, dtype):
  return jax.ffi.ffi_call(_POOL["placeholder"], jax.ShapeDtypeStruct(shape, dtype))()


def _placeholder_reference(*, shape, dtype):
  return jnp.zeros(shape, dtype)


primitive.define_with_reference(conv_pick_p, _conv_pick_abstract, _conv_pick_ffi, reference_conv_pick, True)
primitive.define_with_reference(slots_p, _slots_abstract, _slots_ffi, reference_slots, True)
primitive.define_with_reference(node_sum_p, _node_sum_abstract, _node_sum_ffi, reference_node_sum, False)
primitive.define_with_reference(placeholder_p, _placeholder_abstract, _placeholder_ffi, _placeholder_reference, False)
# No operands: nothing to differentiate or batch.
ad.primitive_jvps[placeholder_p] = lambda primals, tangents, **params: (
    placeholder_p.bind(**params), ad.Zero(jax.core.ShapedArray(params["shape"], params["dtype"])))
batching.primitive_batchers[placeholder_p] = lambda args, dims, **params: (placeholder_p.bind(**params),
                                                                           batching.not_mapped)


def _with_reference_jvp(prim, reference_fn, static: tuple[str, ...]):
  """``f(*args, **static_params)`` binding ``prim``, differentiated through ``reference_fn``."""

  @functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
  def call(params, *args):
    return prim.bind(*args, **dict(params))

  @call.defjvp
  def _jvp(params, primals, tangents):
    # Integer operands (the index) have float0 tangents; close over them.
    int_pos = [i for i, p in enumerate(primals) if not jnp.issubdtype(jnp.result_type(p), jnp.floating)]

    def f(*float_args):
      full, it = list(primals), iter(float_args)
      for i in range(len(full)):
        if i not in int_pos:
          full[i] = next(it)
      return reference_fn(*full, **dict(params))

    keep = [i for i in range(len(primals)) if i not in int_pos]
    return jax.jvp(f, [primals[i] for i in keep], [tangents[i] for i in keep])

  def bind(*args, **params):
    assert set(params) == set(static)
    return call(tuple(sorted(params.items())), *args)

  return bind


_conv_pick = _with_reference_jvp(conv_pick_p, reference_conv_pick, ("stride", "dilation", "affine"))
_slots = _with_reference_jvp(slots_p, reference_slots, ("stride", "offset"))
_node_sum = _with_reference_jvp(node_sum_p, reference_node_sum, ())


def _check_candidates(name, candidates):
  candidates = tuple(candidates)
  if not candidates or any(c.ndim != 4 or c.shape != candidates[0].shape for c in candidates):
    raise ValueError(f"{name}: candidates must be one or more arrays [N, H, W, C] of one shape, got "
                     f"{[getattr(c, 'shape', None) for c in candidates]}")
  return candidates


def relu_conv_moments_pick(idx: jax.Array, candidates, a: jax.Array | None, b: jax.Array | None,
                           weights: tuple[jax.Array, jax.Array], *, stride: int = 1,
                           dilation: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``kernels.fused.relu_conv_moments(candidates[idx], a, b, weights)`` without copying the input.

  Args:
    idx: int32 scalar (may be traced), in ``[0, len(candidates))``.
    candidates: arrays ``[N, H, W, C]`` of one shape.
    a, b: ``[C]`` affine map before the ReLU, or both None.
    weights: ``(dw [k, k, C], pw [C, C_out])``.
    stride, dilation: of the depthwise convolution.

  Returns:
    ``(y [N, Ho, Wo, C_out], mean [C_out], var [C_out])``.
  """
  candidates = _check_candidates("relu_conv_moments_pick", candidates)
  c = candidates[0].shape[-1]
  if len(weights) != 2 or weights[0].shape[-1] != c or weights[1].shape[0] != c:
    raise ValueError(f"relu_conv_moments_pick needs weights (dw [k, k, {c}], pw [{c}, C_out]), got "
                     f"{[w.shape for w in weights]}")
  if (a is None) != (b is None):
    raise ValueError("relu_conv_moments_pick: give both a and b, or neither")
  affine = a is not None
  if not affine:
    a = b = jnp.zeros((c,), candidates[0].dtype)  # not read
  return tuple(_conv_pick(jnp.asarray(idx, jnp.int32), a, b, *weights, *candidates, stride=int(stride),
                          dilation=int(dilation), affine=affine))


def relu_pointwise_slots(mask: jax.Array, pw: jax.Array, slots, *, stride: int = 1,
                         offset: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """``relu(concat_s(mask[s] * slots[s])) @ pw`` and its batch moments, skipping zero-mask slots.

  With ``stride`` > 1 it reads the pixels ``(stride * i + offset, stride * j
  + offset)`` (zero past the bottom / right border): ``stride=2, offset=0``
  and ``offset=1`` are the two halves of a factorized reduce.

  Args:
    mask: ``float32[S]``, non-negative (the supernet's loose-end flags, or a
      one-hot choice among candidates).
    pw: ``[S * C, C_out]``.
    slots: S arrays ``[N, H, W, C]``.
    stride, offset: the subsampling, ``0 <= offset < stride``.

  Returns:
    ``(y [N, ceil(H / stride), ceil(W / stride), C_out], mean [C_out], var [C_out])``.
  """
  slots = _check_candidates("relu_pointwise_slots", slots)
  if mask.shape != (len(slots),) or pw.ndim != 2 or pw.shape[0] != len(slots) * slots[0].shape[-1]:
    raise ValueError(f"relu_pointwise_slots needs mask [{len(slots)}] and pw [{len(slots)} * C, C_out]; got "
                     f"mask {mask.shape}, pw {pw.shape}, slots of {slots[0].shape}")
  if stride < 1 or not 0 <= offset < stride:
    raise ValueError(f"relu_pointwise_slots needs stride >= 1 and 0 <= offset < stride, got {stride}, {offset}")
  return tuple(_slots(jnp.asarray(mask, slots[0].dtype), pw, *slots, stride=int(stride), offset=int(offset)))


def placeholder(shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """A buffer of ``shape`` that nothing writes: the ``y`` of a pool edge for ``node_sum``.

  Its contents are unspecified with the kernels (zeros elsewhere); pass it only
  where ``node_sum`` ignores it (edges of kind "avg", "max" or "copy").
  """
  return placeholder_p.bind(shape=tuple(int(d) for d in shape), dtype=np.dtype(dtype))


def node_sum(kinds: jax.Array, idxs: jax.Array, edge0, edge1, states) -> jax.Array:
  """A cell node ``edge_0 + edge_1`` in one pass, the pools and copies computed in place.

  Edge ``e`` is ``edge_e = (y, a, b)`` and ``kinds[e]`` says what it adds:
  0 ("affine"): ``y * a + b`` (an op's output before its last batch norm);
  1, 2, 3 ("avg", "max", "copy"): the 3x3 average pool (padded cells not
  counted), 3x3 max pool or copy of ``states[idxs[e]]``, at the stride that
  maps that state's size to the node's (``y`` is then not read: use
  ``placeholder``).

  Args:
    kinds, idxs: int32 ``[2]`` (may be traced).
    edge0, edge1: ``(y [N, H, W, C], a [C], b [C])``.
    states: the cell's states (arrays ``[N, H', W', C]``).

  Returns:
    ``[N, H, W, C]``.

  Example:
    >>> node = pick.node_sum(jnp.array([0, 2]), jnp.array([0, 1]), (y, a, b), (pick.placeholder(y.shape), a, b),
    ...                      (x0, x1))   # y * a + b + max_pool(x1)
  """
  states = tuple(states)
  y0, a0, b0 = edge0
  y1, a1, b1 = edge1
  c = y0.shape[-1]
  if y1.shape != y0.shape or y0.ndim != 4 or any(v.shape != (c,) for v in (a0, b0, a1, b1)):
    raise ValueError(f"node_sum needs y0, y1 [N, H, W, C] of one shape and a, b [C]; got {y0.shape}, {y1.shape}")
  if not states or any(x.ndim != 4 or x.shape[0] != y0.shape[0] or x.shape[-1] != c or
                       _node_stride(x.shape, y0.shape) is None for x in states):
    raise ValueError(f"node_sum: every state must be [N, H', W', C] with a size that maps to the node's "
                     f"{y0.shape}; got {[x.shape for x in states]}")
  return _node_sum(jnp.asarray(kinds, jnp.int32), jnp.asarray(idxs, jnp.int32), y0, a0, b0, y1, a1, b1, *states)
