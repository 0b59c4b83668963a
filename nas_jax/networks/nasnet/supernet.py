"""The ``nasnet`` weight-sharing supernet (ENAS / NAO-WS): initialisation and training.

Parameters exist once for every (cell, node, slot, op): ``sep_conv_3x3`` and
``sep_conv_5x5`` weights per slot (shared between the strided and unstrided
uses), plus a factorized reduce per slot in reduction cells (identity on a cell
input). The architecture is a traced int32 argument: each node input is
picked by dynamic indexing over the available states and each op by
``lax.switch``, which on CPU runs only the chosen branch, so one compiled
train step serves every architecture. Cells are unrolled; the 2B edges of a
cell run in one ``lax.scan``, so the edge code is compiled once per cell, and
that scan has a hand-written backward scan (``_cell_scan``) that recomputes
only each edge's chosen branch and adds the input gradient into one slice of
the gradient buffer in place. In normal cells the cell inputs and the nodes
share one state buffer that each branch reads from itself (no materialised
copy of the selected input), and the cell output (the masked concatenation of
the nodes, see the package docstring) is part of the custom VJP, so its
gradient is written once into the buffer's layout instead of being padded to
the whole buffer per node and summed. Measured on the benchmark supernet (8
cells, C=16, batch 64 of 32x32, 2-core CPU; compile / median step over 8
random archs; "loaded": beside another job, the other lines one after the
other on an idle machine):

  ============================================  ===============
  autodiff of scan + switch (old ops)             104 s / 6.75 s  (loaded)
  per-edge custom VJP inside autodiff'd scan       57 s / 4.10 s
  per-edge custom VJP, unrolled edges             183 s / 4.5 s   (loaded; +80 s tracing)
  scan with hand-written backward                  46 s / 2.94 s
  + shared state buffer, output inside the VJP     38 s / x0.85 (default)
  ============================================  ===============

(The last line: same-process A/B against the previous line on 12 random
architectures, steps alternating, per-architecture time ratio 0.84-0.86. The
unrolled per-edge variant of the third line has since been removed.) See
``benchmarks/supernet.py`` for the current figures; its ``--child-archs``
option times the fixed child network of the same architectures, which on this
CPU is no faster than the supernet (the ops, not the weight sharing, bound the
step).

Drop-path (``supernet_apply(..., rng=key, drop_prob=p)``, or
``make_train_step(..., drop_path=p or schedule)``): every edge whose op is not
a plain identity is zeroed for a sample with probability ``p`` and otherwise
scaled by ``1 / (1 - p)``, as in the child network; the per-edge factors
(``drop_path_scale``) enter the cell scan and its hand-written backward.

Batch norm: training uses batch statistics (as ENAS and NAO-WS do) and also
tracks running statistics of every op (updated only for the ops that ran).

Example:
    >>> cfg = SupernetConfig(num_classes=10, init_channels=4, layers=3)
    >>> params, stats = init_supernet(jax.random.key(0), cfg, (8, 8, 1))
    >>> params["cell_0"]["edges"]["sep3"]["dw1"].shape  # 3x3 depthwise, stacked over the 2B = 10 edges
    (10, 3, 3, 4)

  Training (not run here: compiling the train step takes tens of seconds)::

    state = init_train_state(params, stats, default_optimizer())
    train_step = make_train_step(cfg, default_optimizer())
    state, metrics = train_step(state, arch, (x, y), jax.random.key(1))
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import optax
from jax import lax

from nas_jax import ops
from nas_jax.networks import supernet as supernet_lib

from .common import (IDENTITY, Params, SupernetConfig, apply_head, apply_op, apply_preprocess, apply_stem,
                     as_config, branch_specs, init_edge, init_head, init_preprocess, init_stem, loose_end_mask,
                     stacked, which_branch)


def init_supernet(key: jax.Array, config: SupernetConfig | dict[str, Any],
                  input_shape: tuple[int, ...]) -> tuple[Params, Params]:
  """Parameters and batch statistics of the weight-sharing supernet.

  Args:
    key: PRNG key.
    config: ``SupernetConfig`` (or a dict of its fields).
    input_shape: ``(H, W, C_in)`` (or ``(N, H, W, C_in)``) of the images.

  Returns:
    ``(params, batch_stats)`` pytrees with keys ``stem``, ``cell_<i>``,
    ``classifier`` (params only).
  """
  cfg = as_config(config)
  c_in = int(input_shape[-1])
  keys = jax.random.split(key, cfg.layers + 2)
  c_stem = cfg.stem_multiplier * cfg.init_channels
  params, stats = {}, {}
  params["stem"], stats["stem"] = init_stem(keys[0], c_in, c_stem)
  c_pp, c_p = c_stem, c_stem
  for i, cell in enumerate(cfg.plan()):
    c = cell["channels"]
    kpre, kn = jax.random.split(keys[i + 1])
    p, s = init_preprocess(kpre, c_pp, c_p, c, cell["reduction_prev"])
    edge_keys = jax.random.split(kn, 2 * cfg.num_nodes)
    p["edges"], s["edges"] = stacked(lambda k: init_edge(k, c, cell["reduction"], True), edge_keys)
    params[f"cell_{i}"], stats[f"cell_{i}"] = p, s
    c_pp, c_p = c_p, cfg.num_nodes * c
  params["classifier"] = init_head(keys[-1], c_p, cfg.num_classes)
  return params, stats


def _read_input(stride, inputs, nodes, idx_e):
  """The input of an edge, read inside its branch so that XLA fuses the read
  into the op's first pass instead of materialising the selected input.

  Normal cells (``nodes`` is None): ``inputs`` holds every state of the cell
  (the 2 cell inputs, then the B nodes) and the edge reads ``inputs[idx_e]``.
  Reduction cells: strided ops read the cell input ``inputs[min(idx_e, 1)]``,
  stride-1 ops the node ``nodes[idx_e - 2]``.
  """
  if nodes is None:
    return lax.dynamic_index_in_dim(inputs, idx_e, keepdims=False)
  if stride > 1:
    return lax.dynamic_index_in_dim(inputs, jnp.minimum(idx_e, 1), keepdims=False)
  return lax.dynamic_index_in_dim(nodes, jnp.clip(idx_e - 2, 0, nodes.shape[0] - 1), keepdims=False)


def _forward_branch(op, stride, train, pe, se, inputs, nodes, idx_e):
  return apply_op(op, pe, se, _read_input(stride, inputs, nodes, idx_e), stride, train)


def _pullback_branch(op, stride, train, pe, se, inputs, nodes, idx_e, g):
  """VJP of ``_forward_branch`` w.r.t. the edge params and the chosen input.

  Returns ``(d_pe, d_h)``; the caller adds ``d_h`` into the input's slice.
  """
  h = _read_input(stride, inputs, nodes, idx_e)
  _, pull = jax.vjp(lambda q, x: apply_op(op, q, se, x, stride, train)[0], pe, h)
  return pull(g)


def _reduced_shape(shape):
  return (shape[0], ops.out_size(shape[1], 3, 2), ops.out_size(shape[2], 3, 2), shape[3])


def _cell_states(reduction, num_nodes, train, p, s, inputs, idx, op, scale=None):
  """The edge scan of a cell: ``(states, new_s)``.

  ``inputs``: the cell inputs stacked, ``[2, N, H, W, C]``. ``states``: normal
  cells ``[x0, x1, node_0, ...]`` (``[2 + B, N, H, W, C]``, one buffer that
  every edge reads from), reduction cells the nodes alone
  (``[B, N, H/2, W/2, C]``). ``scale``: drop-path factors ``[2B, N]`` that
  multiply each edge's output per sample (None: no drop-path).
  """
  if reduction:
    states = jnp.zeros((num_nodes,) + _reduced_shape(inputs.shape[1:]), inputs.dtype)
    first = 0
  else:
    states = jnp.concatenate([inputs, jnp.zeros((num_nodes,) + inputs.shape[1:], inputs.dtype)])
    first = 2
  branches = [functools.partial(_forward_branch, o, st, train) for o, st in branch_specs(reduction)]

  def body(states, xs):
    pe, se, idx_e, op_e, e, scale_e = xs
    src = (inputs, states) if reduction else (states, None)
    y, se = lax.switch(which_branch(reduction, idx_e, op_e), branches, pe, se, *src, idx_e)
    if scale_e is not None:
      y = y * ops.per_sample(scale_e, y)
    # Slot 0 of a node adds to the zeros the buffer starts with, slot 1 to slot 0's output.
    node = first + e // 2
    val = y + lax.dynamic_index_in_dim(states, node, keepdims=False)
    return lax.dynamic_update_index_in_dim(states, val, node, 0), se

  return lax.scan(body, states, (p, s, idx, op, jnp.arange(2 * num_nodes), scale))


def _cell_output(states, mask):
  """Concatenation (channels) of the last B states, each times its 0/1 loose-end flag."""
  nodes = states[states.shape[0] - mask.shape[0]:]
  return jnp.concatenate([nodes[n] * mask[n] for n in range(mask.shape[0])], axis=-1)


def _cell_scan_forward(reduction, num_nodes, train, p, s, x0, x1, idx, op, mask, scale=None):
  """The forward pass of ``_cell_scan`` (also its autodiff reference in tests)."""
  states, new_s = _cell_states(reduction, num_nodes, train, p, s, jnp.stack([x0, x1]), idx, op, scale)
  return _cell_output(states, mask), new_s


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _cell_scan(reduction, num_nodes, train, p, s, x0, x1, idx, op, mask, scale=None):
  """The 2B edges of a cell in one ``lax.scan``, with a hand-written backward scan.

  Forward: edge ``e = 2 * node + slot`` reads a cell input or an earlier node
  (a dynamic index inside its branch), runs its op (``lax.switch``: only the
  chosen branch) and adds the result into its node's slice of one state
  buffer, in place (``_cell_states``). Returns ``(out, new_s)``: ``out`` is
  the cell output, the nodes concatenated along channels, each times its
  loose-end flag ``mask[n]``. ``scale`` (None, or ``[2B, N]``): drop-path
  factors, each edge's output times ``scale[e]`` per sample.

  Backward: a reverse scan over the edges that keeps only the forward's state
  buffer as residual, recomputes each edge's chosen branch inside its VJP, and
  adds the input gradient into ONE slice of the gradient buffer in place.
  Autodiff of the forward scan would instead stack the union of all branches'
  residuals per edge and transpose every dynamic read into a zero-filled
  full-size buffer plus an add.
  """
  return _cell_scan_forward(reduction, num_nodes, train, p, s, x0, x1, idx, op, mask, scale)


def _cell_scan_fwd(reduction, num_nodes, train, p, s, x0, x1, idx, op, mask, scale):
  inputs = jnp.stack([x0, x1])
  states, new_s = _cell_states(reduction, num_nodes, train, p, s, inputs, idx, op, scale)
  # Normal cells find their inputs in ``states``; reduction cells keep them.
  return ((_cell_output(states, mask), new_s),
          (p, s, inputs if reduction else None, states, idx, op, mask, scale))


def _edge_cotangent(ct_states, node, scale_e):
  """The cotangent of an edge's output: its node's (a node is the sum of its two
  edges), times the edge's drop-path factors. Called inside the edge's branch,
  where XLA fuses the read into the branch's first op instead of copying the
  slice out."""
  g = lax.dynamic_index_in_dim(ct_states, node, keepdims=False)
  return g if scale_e is None else g * ops.per_sample(scale_e, g)


def _cell_scan_bwd(reduction, num_nodes, train, res, ct):
  p, s, inputs, states, idx, op, mask, scale = res
  # The gradient of each node from the cell output, written once into the
  # layout of the state buffer (autodiff of the concatenation would pad every
  # node's slice to the whole buffer and add them). The new batch statistics
  # carry no gradient.
  ct_out = ct[0]
  ct_nodes = jnp.moveaxis(ct_out.reshape(ct_out.shape[:-1] + (num_nodes, -1)), -2, 0)
  ct_nodes = ct_nodes * mask.reshape((num_nodes,) + (1,) * (ct_nodes.ndim - 1))
  ct_states = ct_nodes if reduction else jnp.concatenate(
      [jnp.zeros((2,) + ct_nodes.shape[1:], ct_nodes.dtype), ct_nodes])
  specs = branch_specs(reduction)

  if not reduction:
    def pullback(op, stride, pe, se, idx_e, e, scale_e, ct_states):
      g = _edge_cotangent(ct_states, 2 + e // 2, scale_e)
      return _pullback_branch(op, stride, train, pe, se, states, None, idx_e, g)

    pullbacks = [functools.partial(pullback, o, st) for o, st in specs]

    def body(ct_states, xs):
      pe, se, idx_e, op_e, e, scale_e = xs
      d_p, d_h = lax.switch(op_e, pullbacks, pe, se, idx_e, e, scale_e, ct_states)
      old = lax.dynamic_index_in_dim(ct_states, idx_e, keepdims=False)
      return lax.dynamic_update_index_in_dim(ct_states, old + d_h, idx_e, 0), d_p

    # Edges only read earlier states, so when the reverse scan reaches a node's
    # edges, every consumer of that node has already added its gradient.
    ct_states, d_p = lax.scan(body, ct_states, (p, s, idx, op, jnp.arange(2 * num_nodes), scale),
                              reverse=True)
    return d_p, None, ct_states[0], ct_states[1], None, None, None, None

  # Reduction cells: a branch's input gradient has the cell inputs' size
  # (strided ops) or the nodes' size; the other one is zero.
  def reduction_pullback(op, stride):
    def run(pe, se, inputs, nodes, idx_e, e, scale_e, ct_nodes):
      g = _edge_cotangent(ct_nodes, e // 2, scale_e)
      d_p, d_h = _pullback_branch(op, stride, train, pe, se, inputs, nodes, idx_e, g)
      if stride > 1:
        return d_p, d_h, jnp.zeros(nodes.shape[1:], d_h.dtype)
      return d_p, jnp.zeros(inputs.shape[1:], d_h.dtype), d_h
    return run

  pullbacks = [reduction_pullback(o, st) for o, st in specs]

  def body_r(carry, xs):
    ct_inputs, ct_nodes = carry
    pe, se, idx_e, op_e, e, scale_e = xs
    d_p, d_in, d_node = lax.switch(which_branch(True, idx_e, op_e), pullbacks, pe, se, inputs, states,
                                   idx_e, e, scale_e, ct_nodes)
    i_in, i_node = jnp.minimum(idx_e, 1), jnp.clip(idx_e - 2, 0, num_nodes - 1)
    ct_inputs = lax.dynamic_update_index_in_dim(
        ct_inputs, lax.dynamic_index_in_dim(ct_inputs, i_in, keepdims=False) + d_in, i_in, 0)
    ct_nodes = lax.dynamic_update_index_in_dim(
        ct_nodes, lax.dynamic_index_in_dim(ct_nodes, i_node, keepdims=False) + d_node, i_node, 0)
    return (ct_inputs, ct_nodes), d_p

  (ct_inputs, _), d_p = lax.scan(body_r, (jnp.zeros_like(inputs), ct_states),
                                 (p, s, idx, op, jnp.arange(2 * num_nodes), scale), reverse=True)
  return d_p, None, ct_inputs[0], ct_inputs[1], None, None, None, None


_cell_scan.defvjp(_cell_scan_fwd, _cell_scan_bwd)


def _edge_arrays(cell_arch):
  """Per-edge input and op ids (edge ``e = 2 * node + slot``) of ``int32[B, 4]``."""
  idx = jnp.stack([cell_arch[:, 0], cell_arch[:, 2]], axis=1).reshape(-1)
  op = jnp.stack([cell_arch[:, 1], cell_arch[:, 3]], axis=1).reshape(-1)
  return idx, op


def drop_path_scale(key: jax.Array, cell_arch: jax.Array, reduction: bool, drop_prob: float | jax.Array,
                    batch: int) -> jax.Array:
  """Per-edge, per-sample drop-path factors of one supernet cell.

  Every edge whose op is not a plain identity is dropped for a sample with
  probability ``drop_prob`` and otherwise rescaled by ``1 / (1 - drop_prob)``
  (NASNet's DropPath, as the child network applies it; the identity on a
  reduction cell's input is a factorized reduce and is dropped too).

  Args:
    key: PRNG key.
    cell_arch: ``int32[B, 4]`` (may be traced).
    reduction: whether this is a reduction cell.
    drop_prob: probability in [0, 1) (may be traced).
    batch: N, the number of samples.

  Returns:
    ``float32[2B, N]`` with values 0, ``1 / (1 - drop_prob)`` or 1 (identities).

  Example:
    >>> cell = np.array([[0, 4, 1, 0]] * 5)  # every node: identity(c_{k-2}) + sep_conv_3x3(c_{k-1})
    >>> drop_path_scale(jax.random.key(0), cell, False, 0.2, 6)  # rows: edges, columns: samples
    Array([[1.  , 1.  , 1.  , 1.  , 1.  , 1.  ],
           [1.25, 1.25, 1.25, 1.25, 0.  , 1.25],
           [1.  , 1.  , 1.  , 1.  , 1.  , 1.  ],
           [1.25, 1.25, 1.25, 0.  , 1.25, 1.25],
           [1.  , 1.  , 1.  , 1.  , 1.  , 1.  ],
           [1.25, 1.25, 1.25, 1.25, 1.25, 1.25],
           [1.  , 1.  , 1.  , 1.  , 1.  , 1.  ],
           [1.25, 1.25, 1.25, 1.25, 1.25, 1.25],
           [1.  , 1.  , 1.  , 1.  , 1.  , 1.  ],
           [1.25, 1.25, 1.25, 0.  , 1.25, 1.25]], dtype=float32)
  """
  idx, op = _edge_arrays(jnp.asarray(cell_arch, jnp.int32))
  identity = op == IDENTITY
  if reduction:
    identity = identity & (idx >= 2)
  return jnp.where(identity[:, None], 1.0, ops.drop_path_factors(key, drop_prob, (idx.shape[0], batch)))


def _supernet_cell_scan(p, s, x0, x1, cell_arch, reduction, num_nodes, train, scale=None):
  """The cell's edges as one scan with a custom backward (``_cell_scan``);
  returns ``(cell output, new edge stats)``."""
  idx, op = _edge_arrays(cell_arch)
  return _cell_scan_jit(ops.current_implementation(), reduction, num_nodes, train, p, s, x0, x1, idx, op,
                        loose_end_mask(cell_arch), scale)


def _cell_scan_in(implementation, reduction, num_nodes, train, *args):
  """``_cell_scan`` traced under ``implementation`` (an ``ops.Implementation``)."""
  with ops.implementation(**dataclasses.asdict(implementation)):
    return _cell_scan(reduction, num_nodes, train, *args)


# The cells of a stage run the same edge scan on the same shapes; as a nested
# jit, the scan and its backward are traced and lowered once per shape instead
# of once per cell (XLA still inlines each call). Measured on the benchmark
# supernet: tracing + lowering the train step 9.9 s -> 7.6 s. The ops
# implementation is a static argument: jit's trace cache does not see
# ``ops.implementation``, and would otherwise hand a trace made under one
# implementation to a caller under another.
_cell_scan_jit = jax.jit(_cell_scan_in, static_argnums=(0, 1, 2, 3))


def _supernet_cell(p, s, h0, h1, cell_arch, cell, num_nodes, train, scale=None):
  x0, x1, new_s = apply_preprocess(p, s, h0, h1, cell["reduction_prev"], train)
  out, new_s["edges"] = _supernet_cell_scan(p["edges"], s["edges"], x0, x1, cell_arch, cell["reduction"],
                                            num_nodes, train, scale)
  return out, new_s


def supernet_apply(params: Params, batch_stats: Params, arch: jax.Array, x: jax.Array, *,
                   config: SupernetConfig | dict[str, Any], train: bool, rng: jax.Array | None = None,
                   drop_prob: float | jax.Array = 0.0) -> tuple[jax.Array, Params]:
  """Logits of the supernet for one (traced) architecture.

  Args:
    params, batch_stats: from ``init_supernet``.
    arch: int32[2, B, 4].
    x: float32[N, H, W, C_in].
    config: the network's ``SupernetConfig``.
    train: batch statistics (True) or running statistics (False) in BN.
    rng: PRNG key for drop-path; None (the default) disables it.
    drop_prob: drop-path probability in [0, 1) of every non-identity edge
      (``drop_path_scale``), used when ``rng`` is given; may be traced, so a
      schedule does not recompile.

  Returns:
    ``(logits [N, num_classes], new_batch_stats)``; in train mode the running
    statistics of the ops that ran are updated.
  """
  cfg = as_config(config)
  chex.assert_rank(x, 4)
  chex.assert_shape(arch, (2, cfg.num_nodes, 4))
  arch = jnp.asarray(arch, jnp.int32)
  new_stats = {}
  h, new_stats["stem"] = apply_stem(params["stem"], batch_stats["stem"], x, train)
  h0 = h1 = h
  for i, cell in enumerate(cfg.plan()):
    cell_arch = arch[int(cell["reduction"])]
    scale = None
    if rng is not None:
      scale = drop_path_scale(jax.random.fold_in(rng, i), cell_arch, cell["reduction"], drop_prob, x.shape[0])
    out, new_stats[f"cell_{i}"] = _supernet_cell(params[f"cell_{i}"], batch_stats[f"cell_{i}"], h0, h1,
                                                 cell_arch, cell, cfg.num_nodes, train, scale)
    h0, h1 = h1, out
  return apply_head(params["classifier"], h1), new_stats


default_optimizer = supernet_lib.default_optimizer
init_train_state = supernet_lib.init_train_state


def make_train_step(config: SupernetConfig | dict[str, Any], tx: optax.GradientTransformation,
                    *, donate: bool = True, drop_path: float | Callable = 0.0) -> Callable:
  """One jitted supernet training step that serves every architecture.

  ``train_step(state, arch int32[2, B, 4], (x, y), key) -> (state, {"loss", "acc"})``;
  ``drop_path`` (a probability or a schedule of the step) and the rest as in
  ``nas_jax.networks.supernet.make_train_step``.
  """
  cfg = as_config(config)
  return supernet_lib.make_train_step(functools.partial(supernet_apply, config=cfg), tx, donate=donate,
                                      drop_path=drop_path)

