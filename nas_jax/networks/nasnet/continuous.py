"""Continuous relaxation of the ``nasnet`` cell (DARTS / BayesNAS).

Every node is connected to every earlier state by a mixed edge running all 5
ops; ``arch_params`` (``float32[2, E, 5]``, E = 2 + 3 + ... + (B+1) edges per
cell type, ordered node by node and input by input, see ``edge_index``) weight
them: ``mode="softmax"`` uses ``softmax(arch_params[c, e])`` (DARTS),
``mode="switch"`` uses the raw values as multiplicative switches
``sum_k z_k op_k(x)`` (BayesNAS). All B nodes are concatenated. Same stem,
preprocessing, ops and classifier as the weight-sharing supernet
(``common.py``). ``derive_arch`` turns the weights into a discrete
architecture. The family object's ``continuous`` (``nasnet.FAMILY``) is this
network with the weights used as given (``mode="switch"``).

Example:
    >>> from nas_jax.networks.nasnet import SupernetConfig
    >>> cfg = SupernetConfig(num_classes=10, init_channels=4, layers=3)
    >>> alpha = init_arch_params(cfg, "softmax", key=jax.random.key(1))
    >>> alpha.shape  # 2 cell types, 2 + 3 + 4 + 5 + 6 = 20 mixed edges, 5 ops
    (2, 20, 5)
    >>> derive_arch(jax.nn.softmax(alpha, -1))[0]  # normal cell: (input, op) x 2 per node
    array([[1, 1, 0, 4],
           [2, 3, 1, 1],
           [2, 1, 1, 3],
           [4, 0, 2, 1],
           [2, 3, 1, 1]], dtype=int32)

  The relaxed network (not run here: its forward pass compiles for several
  seconds)::

    params, stats = init_continuous(jax.random.key(0), cfg, (8, 8, 1))
    logits, stats = continuous_apply(params, stats, alpha, x, config=cfg, train=True)
"""
from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nas_jax import ops

from .common import (NUM_OPS, Params, SupernetConfig, apply_head, apply_op, apply_preprocess, apply_stem,
                     as_config, init_edge, init_head, init_preprocess, init_stem, stacked)


def num_mixed_edges(num_nodes: int = 5) -> int:
  """E: mixed edges per cell (node i has i + 2 inputs)."""
  return sum(i + 2 for i in range(num_nodes))


def edge_index(node: int, inp: int) -> int:
  """Position of the mixed edge ``inp -> node`` in ``arch_params[c]``."""
  if not 0 <= inp <= node + 1:
    raise ValueError(f"input {inp} of node {node} must be in 0..{node + 1}")
  return sum(i + 2 for i in range(node)) + inp


def init_continuous(key: jax.Array, config: SupernetConfig | dict[str, Any],
                    input_shape: tuple[int, ...]) -> tuple[Params, Params]:
  """Parameters and batch statistics of the continuous-relaxation supernet.

  Same stem, preprocessing and classifier as ``init_supernet``; each cell has
  E mixed edges (params stacked on a leading E axis under ``"edges"``), each
  with a sep_conv_3x3, a sep_conv_5x5 and, in reduction cells, a factorized
  reduce for the strided identity.
  """
  cfg = as_config(config)
  c_in = int(input_shape[-1])
  keys = jax.random.split(key, cfg.layers + 2)
  c_stem = cfg.stem_multiplier * cfg.init_channels
  params, stats = {}, {}
  params["stem"], stats["stem"] = init_stem(keys[0], c_in, c_stem)
  c_pp, c_p = c_stem, c_stem
  n_edges = num_mixed_edges(cfg.num_nodes)
  for i, cell in enumerate(cfg.plan()):
    c = cell["channels"]
    kpre, kn = jax.random.split(keys[i + 1])
    p, s = init_preprocess(kpre, c_pp, c_p, c, cell["reduction_prev"])
    p["edges"], s["edges"] = stacked(lambda k: init_edge(k, c, cell["reduction"], True),
                                      jax.random.split(kn, n_edges))
    params[f"cell_{i}"], stats[f"cell_{i}"] = p, s
    c_pp, c_p = c_p, cfg.num_nodes * c
  params["classifier"] = init_head(keys[-1], c_p, cfg.num_classes)
  return params, stats


def init_arch_params(config: SupernetConfig | dict[str, Any], mode: str = "softmax",
                     key: jax.Array | None = None, scale: float = 1e-3) -> jax.Array:
  """float32[2, E, 5] architecture parameters.

  Args:
    config: the network config (for B).
    mode: "softmax" (logits, zeros = uniform; DARTS) or "switch" (ones).
    key: optional PRNG key adding ``scale * normal`` noise (DARTS init).
    scale: noise scale.
  """
  cfg = as_config(config)
  _check_mode(mode)
  shape = (2, num_mixed_edges(cfg.num_nodes), NUM_OPS)
  a = jnp.zeros(shape) if mode == "softmax" else jnp.ones(shape)
  if key is not None:
    a = a + scale * jax.random.normal(key, shape)
  return a


def _check_mode(mode: str) -> None:
  if mode not in ("softmax", "switch"):
    raise ValueError(f"weighting mode must be 'softmax' or 'switch', got {mode!r}")


def _mixed_op(pe, se, h, w, stride, train):
  out = 0.0
  for o in range(NUM_OPS):
    y, se = apply_op(o, pe, se, h, stride, train)
    out = out + w[o] * y
  return out, se


def continuous_cell(p: Params, s: Params, x0: jax.Array, x1: jax.Array, weights: jax.Array, *,
                    reduction: bool, num_nodes: int, train: bool) -> tuple[jax.Array, Params]:
  """One relaxed cell after preprocessing: every op of every edge runs.

  The E edges run in one ``lax.scan`` (the edge code is compiled once per
  cell); edges are ordered node by node, so a node's edges are consecutive.

  Args:
    p, s: the cell's ``"edges"`` params/stats (leading axis E).
    x0, x1: preprocessed cell inputs ``[N, H, W, C]``.
    weights: float32[E, 5] op weights (already softmaxed or raw switches).
    reduction: strided ops on the cell inputs.
    num_nodes: B.
    train: BN mode.

  Returns:
    ``(concat of all B nodes, new edge stats)``.
  """
  n_edges = num_mixed_edges(num_nodes)
  chex.assert_shape(weights, (n_edges, NUM_OPS))
  node_of = jnp.asarray([n for n in range(num_nodes) for _ in range(n + 2)], jnp.int32)
  inp_of = jnp.asarray([i for n in range(num_nodes) for i in range(n + 2)], jnp.int32)
  inputs = jnp.stack([x0, x1])
  shape = (x0.shape[0], ops.out_size(x0.shape[1], 3, 2), ops.out_size(x0.shape[2], 3, 2),
           x0.shape[3]) if reduction else x0.shape

  def body(carry, xs):
    nodes, acc = carry
    pe, se, w, node_e, inp_e = xs
    h_node = lax.dynamic_index_in_dim(nodes, jnp.clip(inp_e - 2, 0, num_nodes - 1), keepdims=False)
    h_in = lax.dynamic_index_in_dim(inputs, jnp.minimum(inp_e, 1), keepdims=False)
    if not reduction:
      y, se = _mixed_op(pe, se, jnp.where(inp_e < 2, h_in, h_node), w, 1, train)
    else:
      y, se = lax.cond(inp_e < 2, lambda: _mixed_op(pe, se, h_in, w, 2, train),
                       lambda: _mixed_op(pe, se, h_node, w, 1, train))
    val = y + acc * (inp_e > 0).astype(y.dtype)  # a node's edges are consecutive, inp 0 first
    nodes = lax.dynamic_update_index_in_dim(nodes, val, node_e, 0)
    return (nodes, val), se

  init = (jnp.zeros((num_nodes,) + shape, x0.dtype), jnp.zeros(shape, x0.dtype))
  (nodes, _), new_s = lax.scan(body, init, (p, s, weights, node_of, inp_of))
  return jnp.concatenate([nodes[n] for n in range(num_nodes)], axis=-1), new_s


def continuous_apply(params: Params, batch_stats: Params, arch_params: jax.Array, x: jax.Array, *,
                     config: SupernetConfig | dict[str, Any], train: bool,
                     mode: str = "softmax") -> tuple[jax.Array, Params]:
  """Logits of the continuous-relaxation supernet.

  Args:
    params, batch_stats: from ``init_continuous``.
    arch_params: float32[2, E, 5] (``init_arch_params``); differentiable.
    x: images ``[N, H, W, C_in]``.
    config: the ``SupernetConfig``.
    train: batch statistics (True) or running statistics (False) in BN.
    mode: "softmax": weights ``softmax(arch_params, -1)`` (DARTS); "switch":
      ``output = sum_k z_k op_k(x)`` with ``z = arch_params`` (BayesNAS).

  Returns:
    ``(logits, new_batch_stats)``.
  """
  cfg = as_config(config)
  _check_mode(mode)
  chex.assert_rank(x, 4)
  chex.assert_shape(arch_params, (2, num_mixed_edges(cfg.num_nodes), NUM_OPS))
  weights = jax.nn.softmax(arch_params, axis=-1) if mode == "softmax" else arch_params
  new_stats = {}
  h, new_stats["stem"] = apply_stem(params["stem"], batch_stats["stem"], x, train)
  h0 = h1 = h
  for i, cell in enumerate(cfg.plan()):
    p, s = params[f"cell_{i}"], batch_stats[f"cell_{i}"]
    x0, x1, ns = apply_preprocess(p, s, h0, h1, cell["reduction_prev"], train)
    out, ns["edges"] = continuous_cell(p["edges"], s["edges"], x0, x1, weights[int(cell["reduction"])],
                                       reduction=cell["reduction"], num_nodes=cfg.num_nodes, train=train)
    new_stats[f"cell_{i}"] = ns
    h0, h1 = h1, out
  return apply_head(params["classifier"], h1), new_stats


def one_hot_weights(arch: Any, num_nodes: int | None = None) -> jax.Array:
  """Switch weights ``float32[2, E, 5]`` that select ``arch``'s edges and ops.

  Every branch ``(input, op)`` of node ``n`` puts 1 on op ``op`` of edge
  ``edge_index(n, input)`` (a node whose two inputs are the same state puts
  both on that edge). Under ``mode="switch"`` the relaxed cell then computes
  ``arch``'s nodes exactly; its output is all B nodes (this relaxation's
  layout, as in DARTS), where the child network keeps the loose ends only.
  ``derive_arch(one_hot_weights(a))`` is ``a`` up to the order of a node's
  two branches. Jittable.

  Args:
    arch: int32[2, B, 4].
    num_nodes: B (None: read from ``arch``).

  Returns:
    float32[2, E, 5].

  Example:
    >>> a = jnp.array([[[0, 4, 1, 0], [2, 1, 0, 3]]] * 2)  # B = 2
    >>> w = one_hot_weights(a)
    >>> w.shape, float(w.sum()), derive_arch(w, 2)[0].tolist()
    ((2, 5, 5), 8.0, [[0, 4, 1, 0], [0, 3, 2, 1]])
  """
  a = jnp.asarray(arch, jnp.int32)
  b = a.shape[1] if num_nodes is None else num_nodes
  chex.assert_shape(a, (2, b, 4))
  offsets = jnp.asarray([edge_index(n, 0) for n in range(b)], jnp.int32)
  edges = offsets[None, :, None] + a[..., 0::2]  # [2, B, 2]
  cells = jnp.broadcast_to(jnp.arange(2, dtype=jnp.int32)[:, None, None], edges.shape)
  return jnp.zeros((2, num_mixed_edges(b), NUM_OPS), jnp.float32).at[cells, edges, a[..., 1::2]].add(1.0)


def derive_arch(weights: Any, num_nodes: int = 5) -> np.ndarray:
  """A discrete architecture from relaxed weights (DARTS rule).

  For every node, the two incoming edges with the largest op weight are kept,
  each with its arg-max op.

  Args:
    weights: float[2, E, 5] op weights (softmaxed or switch magnitudes).
    num_nodes: B.

  Returns:
    int32[2, B, 4] architecture.
  """
  w = np.asarray(weights, np.float64)
  if w.shape != (2, num_mixed_edges(num_nodes), NUM_OPS):
    raise ValueError(f"weights must have shape (2, {num_mixed_edges(num_nodes)}, {NUM_OPS}), got {w.shape}")
  arch = np.zeros((2, num_nodes, 4), np.int32)
  for c in range(2):
    for n in range(num_nodes):
      cand = [(w[c, edge_index(n, i)].max(), i, int(w[c, edge_index(n, i)].argmax())) for i in range(n + 2)]
      cand.sort(key=lambda t: (-t[0], t[1]))
      (_, i0, o0), (_, i1, o1) = cand[0], cand[1]
      arch[c, n] = [i0, o0, i1, o1]
  return arch

