"""Forward-only evaluation of the ``nasnet`` weight-sharing supernet: scoring K architectures.

``make_eval_archs`` scores architectures on one batch with
``supernet_eval_apply``, a forward-only form of ``supernet.supernet_apply``
(same function, tested): unrolled edges whose ops read their input among the
cell's states in place, cell outputs kept as node lists whose masked
concatenation is never built, each node's two edges summed in one kernel pass
that applies their last batch norms and computes pools and identities in
place, and the stem computed once for all K architectures. Same-process A/B on
the benchmark supernet (500 images, 8 random archs, 2-core CPU): 0.80-0.82 vs
1.81-1.93 s per architecture, identical accuracies.

Batch norm: ``eval_archs`` scores architectures with *batch statistics* by
default (``bn="batch"``: the running averages are mixtures over many
architectures and misrepresent any single one; ENAS/NAO-WS evaluate this way);
``bn="running"`` uses the running statistics instead, which is the mode in
which a child built by ``child.child_variables_from_supernet`` reproduces the
supernet exactly (``train=False``).

Example (not run here: compiling it takes about 5 s even for a tiny supernet)::

    cfg = SupernetConfig(num_classes=10, init_channels=4, layers=3)
    params, stats = init_supernet(jax.random.key(0), cfg, (8, 8, 1))
    archs = jnp.stack([space.sample(k) for k in jax.random.split(jax.random.key(1), 8)])
    acc, loss = make_eval_archs(cfg)(params, stats, archs, x_val, y_val)  # float32[8] each
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
from jax import lax

from nas_jax import ops
from nas_jax.kernels import fused as kernel_fused
from nas_jax.kernels import pick as kernel_pick
from nas_jax.networks import supernet as supernet_lib

from .common import (AVG, IDENTITY, MAX, NUM_OPS, SEP3, SEP5, Params, SupernetConfig, apply_stem, as_config,
                     branch_specs, loose_end_mask, which_branch)
from .supernet import supernet_apply


def make_eval_archs(config: SupernetConfig | dict[str, Any], *, method: str = "map",
                    bn: str = "batch", fast: bool | None = None) -> Callable:
  """One jitted call that scores K architectures on one batch.

  ``eval_archs(params, batch_stats, archs int32[K, 2, B, 4], x, y) -> (acc [K], loss [K])``;
  ``method`` and ``bn`` as in ``nas_jax.networks.supernet.make_eval_archs``.

  ``fast`` (default: ``method == "map"`` and ``ops.fusion_active()`` when the
  call is traced) runs ``supernet_eval_apply``, the forward-only form of the
  same function: the stem and the preprocessing of the stem's output are
  computed once for all K architectures, and each architecture's cells read
  their states in place (``kernels.pick``). ``fast=False`` maps
  ``supernet_apply`` itself.
  """
  cfg = as_config(config)
  generic = supernet_lib.make_eval_archs(functools.partial(supernet_apply, config=cfg), arch_rank=3,
                                         method=method, bn=bn)
  if fast is False:
    return generic
  if fast and method != "map":
    raise ValueError(f"fast evaluation maps the architectures one after the other (method='map'), got {method!r}")
  train = bn == "batch"

  def eval_archs(params, batch_stats, archs, x, y):
    if fast is None and not (method == "map" and ops.fusion_active()):
      return generic(params, batch_stats, archs, x, y)
    chex.assert_rank(archs, 4)
    shared = _eval_shared(params, batch_stats, x, cfg, train)

    def one(arch):
      logits = _eval_arch(params, batch_stats, arch, shared, cfg, train)
      return (jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32)),
              jnp.mean(supernet_lib.cross_entropy(logits, y)))

    return lax.map(one, archs)

  return jax.jit(eval_archs)


# --- forward-only evaluation ------------------------------------------------------------
# A cell output is kept as ``(nodes, mask)``: the B node arrays and their
# loose-end flags, never concatenated. Its consumers read the nodes in place:
# the next cells' ReLU-conv1x1-BN through ``kernels.pick.relu_pointwise_slots``
# (which also skips the nodes whose flag is 0), the classifier per node. Each
# edge's op reads its input among the cell's states with the traced index
# (``relu_conv_moments_pick``) and returns its output as ``(y, scale, shift)``
# with the op's last batch norm still to apply; ``node_sum`` normalises and adds
# the two edges of a node in one pass and runs the pools and identities there.
def _count(y):
  return y.shape[0] * y.shape[1] * y.shape[2]


def _eval_relu_conv_bn(p, s, h, train):
  """ReLU-conv1x1-BN of a cell output ``(nodes, mask)`` or of a plain array (the stem)."""
  if not isinstance(h, tuple):
    return ops.relu_conv_bn(p, s, h, train=train)[0]
  nodes, mask = h
  y, mean, var = kernel_pick.relu_pointwise_slots(mask, p["w"][0, 0], nodes)
  scale, shift, _ = ops.bn_coefficients(p["bn"], s["bn"], (mean, var), _count(y), train=train)
  return y * scale + shift


def _eval_factorized_reduce(p, s, slots, mask, train):
  """``ops.factorized_reduce`` of ``concat_s(mask[s] * slots[s])`` as ``(y, scale, shift)`` (BN still to apply)."""
  halves = [kernel_pick.relu_pointwise_slots(mask, w, slots, stride=2, offset=o)
            for o, w in ((0, p["w1"]), (1, p["w2"]))]
  y, mean, var = (jnp.concatenate(v, axis=-1) for v in zip(*halves))
  scale, shift, _ = ops.bn_coefficients(p["bn"], s["bn"], (mean, var), _count(y), train=train)
  return y, scale, shift


def _eval_preprocess(p, s, h, reduction_prev, train, which):
  """``pre0`` (``which == 0``) or ``pre1`` of a cell, forward only."""
  if which == 0 and reduction_prev:
    if not isinstance(h, tuple):
      return ops.factorized_reduce(p["pre0"], s["pre0"], h, train=train)[0]
    y, scale, shift = _eval_factorized_reduce(p["pre0"], s["pre0"], *h, train)
    return y * scale + shift
  name = f"pre{which}"
  return _eval_relu_conv_bn(p[name], s[name], h, train)


def _eval_op(op, stride, train, pe, se, idx, cands):
  """One edge's op on ``cands[idx]``: ``(y, scale, shift)`` with the op's output ``y * scale + shift``."""
  c = cands[0].shape[-1]
  one, zero = jnp.ones((c,), cands[0].dtype), jnp.zeros((c,), cands[0].dtype)
  if op in (SEP3, SEP5):
    q, t = pe["sep3" if op == SEP3 else "sep5"], se["sep3" if op == SEP3 else "sep5"]
    y, mean, var = kernel_pick.relu_conv_moments_pick(idx, cands, None, None, (q["dw1"], q["pw1"]), stride=stride)
    a, b, _ = ops.bn_coefficients(q["bn1"], t["bn1"], (mean, var), _count(y), train=train)
    y, mean, var = kernel_fused.relu_conv_moments(y, a, b, (q["dw2"], q["pw2"]))
    a, b, _ = ops.bn_coefficients(q["bn2"], t["bn2"], (mean, var), _count(y), train=train)
    return y, a, b
  if op in (AVG, MAX) or stride == 1:
    # Pools and identities run inside the node's sum (_eval_node_kinds); their y is not read.
    n, h, w, _ = cands[0].shape
    return kernel_pick.placeholder((n, (h - 1) // stride + 1, (w - 1) // stride + 1, c), cands[0].dtype), one, zero
  # A factorized reduce of the chosen cell input: the slots kernel with a one-hot mask.
  q = dict(pe["fr"], w1=jnp.tile(pe["fr"]["w1"], (len(cands), 1)), w2=jnp.tile(pe["fr"]["w2"], (len(cands), 1)))
  return _eval_factorized_reduce(q, se["fr"], cands, jax.nn.one_hot(idx, len(cands), dtype=cands[0].dtype), train)


def _eval_branch(op, stride, train, reduction, pe, se, idx, *states):
  """A branch of an edge's switch: ``states`` are the cell's (x0, x1, node_0, ...)."""
  if not reduction:
    return _eval_op(op, stride, train, pe, se, idx, states)
  if stride > 1:
    return _eval_op(op, stride, train, pe, se, jnp.minimum(idx, 1), states[:2])
  return _eval_op(op, stride, train, pe, se, jnp.clip(idx - 2, 0, len(states) - 3), states[2:])


def _eval_cell(p, s, x0, x1, cell_arch, reduction, num_nodes, train):
  """The edges of one cell, unrolled, forward only: ``(nodes, mask)``."""
  states = [x0, x1]
  for n in range(num_nodes):
    edges = []
    for slot in range(2):
      e = 2 * n + slot
      pe, se = jax.tree.map(lambda a: a[e], (p, s))
      idx, op = cell_arch[n, 2 * slot], cell_arch[n, 2 * slot + 1]
      specs = branch_specs(reduction)
      if reduction and n == 0:
        specs = specs[:NUM_OPS]  # no node yet: every input is a cell input
      branches = [functools.partial(_eval_branch, o, st, train, reduction) for o, st in specs]
      which = which_branch(reduction, idx, op) if reduction and n > 0 else op
      edges.append(lax.switch(which, branches, pe, se, idx, *states))
    idxs = jnp.stack([cell_arch[n, 0], cell_arch[n, 2]])
    kinds = _eval_node_kinds(idxs, jnp.stack([cell_arch[n, 1], cell_arch[n, 3]]), reduction)
    states.append(kernel_pick.node_sum(kinds, idxs, edges[0], edges[1], states))
  return tuple(states[2:]), loose_end_mask(cell_arch)


def _eval_node_kinds(idxs, op_ids, reduction):
  """``kernels.pick.node_sum`` kinds of a node's two edges: 0 for ops whose ``(y, scale, shift)``
  the switch computed (separable convs, factorized reduces), else the pool or copy to run in place."""
  kinds = jnp.asarray([0, 0, kernel_pick.NODE_KINDS["avg"], kernel_pick.NODE_KINDS["max"],
                       kernel_pick.NODE_KINDS["copy"]], jnp.int32)[op_ids]
  if reduction:
    kinds = jnp.where((op_ids == IDENTITY) & (idxs < 2), 0, kinds)
  return kinds


def _eval_shared(params, batch_stats, x, cfg, train):
  """What every architecture shares: the stem output and the preprocessing of it (cell 0, cell 1's pre0)."""
  stem, _ = apply_stem(params["stem"], batch_stats["stem"], x, train)
  plan = cfg.plan()
  pre = {(0, 0): stem, (0, 1): stem, (1, 0): stem}  # (cell, input) -> the preprocessed value, where arch-free
  out = {"stem": stem}
  for (i, which), h in pre.items():
    if i < len(plan):
      out[(i, which)] = _eval_preprocess(params[f"cell_{i}"], batch_stats[f"cell_{i}"], h,
                                         plan[i]["reduction_prev"], train, which)
  return out


def _eval_arch(params, batch_stats, arch, shared, cfg, train):
  """Logits of one architecture from ``_eval_shared``'s values."""
  h0 = h1 = shared["stem"]
  for i, cell in enumerate(cfg.plan()):
    p, s = params[f"cell_{i}"], batch_stats[f"cell_{i}"]
    x0, x1 = (shared[(i, w)] if (i, w) in shared else
              _eval_preprocess(p, s, h, cell["reduction_prev"], train, w) for w, h in ((0, h0), (1, h1)))
    out = _eval_cell(p["edges"], s["edges"], x0, x1, arch[int(cell["reduction"])], cell["reduction"],
                     cfg.num_nodes, train)
    h0, h1 = h1, out
  nodes, mask = h1
  pooled = jnp.concatenate([jnp.mean(n, axis=(1, 2)) * mask[j] for j, n in enumerate(nodes)], axis=-1)
  return ops.dense(params["classifier"], pooled)


def supernet_eval_apply(params: Params, batch_stats: Params, arch: jax.Array, x: jax.Array, *,
                        config: SupernetConfig | dict[str, Any], train: bool) -> jax.Array:
  """Logits of ``supernet_apply(..., train=train)[0]``, forward only and faster.

  The same function, computed for evaluation (see the comment above
  ``_count``): no new statistics, no drop-path, not for differentiation (it
  differentiates, through the kernels' reference maths, but slowly). Used by
  ``make_eval_archs``; on CPU with the kernels, a 500-image evaluation of the
  benchmark supernet reads and writes about half as much memory per
  architecture.

  Args:
    params, batch_stats: from ``init_supernet``.
    arch: int32[2, B, 4] (may be traced).
    x: images ``[N, H, W, C_in]``.
    config: the ``SupernetConfig``.
    train: batch statistics (True) or running statistics (False) in BN.

  Returns:
    logits ``[N, num_classes]``.

  Example::

    logits = supernet_eval_apply(params, stats, arch, x, config=cfg, train=True)
  """
  cfg = as_config(config)
  chex.assert_rank(x, 4)
  chex.assert_shape(arch, (2, cfg.num_nodes, 4))
  arch = jnp.asarray(arch, jnp.int32)
  return _eval_arch(params, batch_stats, arch, _eval_shared(params, batch_stats, x, cfg, train), cfg, train)

