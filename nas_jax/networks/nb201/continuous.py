"""Continuous relaxation of the NAS-Bench-201 cell (DARTS / BayesNAS on NAS-Bench-201).

Same macro network as the weight-sharing supernet (stem, 3 stages of N cells,
residual blocks, head; ``common.py``), but every edge of every cell runs all 5
ops weighted: edge ``e`` computes ``sum_o w[e, o] * op_o(h)`` with
``w = float32[6, 5]`` (edges in the space's order ``(1<-0), (2<-0), (2<-1),
(3<-0), (3<-1), (3<-2)``; ops ``none, skip_connect, nor_conv_1x1,
nor_conv_3x3, avg_pool_3x3``), one ``w`` shared by all cells, as in
NAS-Bench-201's search networks (``TinyNetworkDarts`` with
``NAS201SearchCell``, ``D-X-Y/AutoDL-Projects``). The weights are used as
given: a DARTS method passes ``softmax(alpha, -1)``, BayesNAS its switches.
``none`` contributes nothing (its weight gets a zero gradient, as the zero op
does in the authors' code). ``apply`` is differentiable in the weights to any
order (``jax.hessian``).

Batch norm in the cells' convolutions (``ContinuousConfig``): the authors'
DARTS search on NAS-Bench-201 builds the cells' ReLU-conv-BN ops with
``affine=False`` and takes ``track_running_stats`` as a script argument
(``exps/NAS-Bench-201-algos/DARTS-V1.py``, ``scripts-search/NAS-Bench-201-algos/DARTS-V1.sh``;
their other weight-sharing searches default it to 0). So by default
(``cell_bn_affine=False``, ``cell_bn_running_stats=False``) the cells' batch
norms have no scale and bias parameters and always normalise with the batch
statistics (also with ``train=False``); the stem, the residual blocks and the
head keep affine batch norms with running statistics, as there. With both
fields True the network has exactly the supernet's parameters and statistics.

``derive(weights)``: the arg-max op of every edge, ``none`` included
(NAS-Bench-201's ``genotype()``).

Example:
    >>> cfg = ContinuousConfig(num_classes=10, init_channels=4, layers=1)
    >>> params, stats = init(jax.random.key(0), cfg, (8, 8, 1))
    >>> alpha = 1e-3 * jax.random.normal(jax.random.key(1), (6, 5))
    >>> derive(alpha)  # arg-max op per edge
    array([4, 1, 4, 1, 3, 1], dtype=int32)

  The forward pass (not run here: it compiles for a few seconds) is
  differentiable in the weights::

    x = jnp.ones((2, 8, 8, 1))
    logits, stats = apply(params, stats, jax.nn.softmax(alpha, -1), x, config=cfg, train=True)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import ops
from nas_jax.networks import supernet as supernet_lib
from nas_jax.spaces.nb201 import NUM_EDGES, NUM_OPS, OPS

from .common import (AVG, CONV_KEY, NONE, SKIP, Params, SupernetConfig, apply_cell, apply_head, apply_res, apply_stem,
                     init_edge, init_head, init_res, init_stem)


@dataclasses.dataclass(frozen=True)
class ContinuousConfig(SupernetConfig):
  """Settings of the relaxed NAS-Bench-201 network (``SupernetConfig`` plus the cells' batch norm).

  Attributes:
    num_classes, init_channels, layers, num_nodes: as ``SupernetConfig``.
    cell_bn_affine: learn a scale and bias in the cells' batch norms (the
      authors' NAS-Bench-201 DARTS: False, ``affine=False`` in ``DARTS-V1.py``).
    cell_bn_running_stats: the cells' batch norms track running statistics
      and use them when ``train=False``; False: batch statistics always
      (PyTorch ``track_running_stats=False``; the authors' weight-sharing
      search scripts default it to 0).
  """
  cell_bn_affine: bool = False  # NAS-Bench-201 DARTS-V1.py: "affine": False
  cell_bn_running_stats: bool = False  # NAS-Bench-201 search scripts: --track_running_stats default 0

  def __post_init__(self):
    super().__post_init__()
    for name in ("cell_bn_affine", "cell_bn_running_stats"):
      if not isinstance(getattr(self, name), (bool, np.bool_)):
        raise ValueError(f"ContinuousConfig.{name} must be True or False, got {getattr(self, name)!r}")


def as_config(config: ContinuousConfig | SupernetConfig | dict[str, Any]) -> ContinuousConfig:
  """A ``ContinuousConfig`` from itself, a ``SupernetConfig`` (default BN fields) or a dict of fields."""
  if isinstance(config, ContinuousConfig):
    return config
  if isinstance(config, SupernetConfig):
    return ContinuousConfig(**dataclasses.asdict(config))
  return supernet_lib.config_from_fields(ContinuousConfig, dict(config))


def weights_shape(config: Any = None) -> tuple[int, int]:
  """``(6, 5)``: one weight per (edge, op)."""
  del config
  return (NUM_EDGES, NUM_OPS)


def init(key: jax.Array, config: ContinuousConfig | dict[str, Any],
         input_shape: tuple[int, ...]) -> tuple[Params, Params]:
  """Parameters and batch statistics of the relaxed network.

  The same layout and, for the same key, the same convolution weights as
  ``supernet.init_supernet``: ``stem``, ``block_<i>`` (cells: ``e<e>`` with
  ``c1`` and ``c3``, each ``{"w"}`` plus ``"bn"`` when ``cell_bn_affine``;
  residual blocks as the supernet's) and ``head``. Cell statistics exist only
  with ``cell_bn_running_stats``.

  Args:
    key: PRNG key.
    config: ``ContinuousConfig`` (or a dict of its fields).
    input_shape: ``(H, W, C_in)`` (or ``(N, H, W, C_in)``).

  Returns:
    ``(params, batch_stats)``.
  """
  cfg = as_config(config)
  plan = cfg.plan()
  keys = jax.random.split(key, len(plan) + 2)
  params, stats = {}, {}
  params["stem"], stats["stem"] = init_stem(keys[0], int(input_shape[-1]), cfg.init_channels)
  for i, block in enumerate(plan):
    if block["kind"] == "res":
      params[f"block_{i}"], stats[f"block_{i}"] = init_res(keys[i + 1], block["c_in"], block["c_out"])
      continue
    p, s = {}, {}
    for e, k in enumerate(jax.random.split(keys[i + 1], NUM_EDGES)):
      pe, se = init_edge(k, block["c_in"])
      p[f"e{e}"] = {name: (conv if cfg.cell_bn_affine else {"w": conv["w"]}) for name, conv in pe.items()}
      if cfg.cell_bn_running_stats:
        s[f"e{e}"] = se
    params[f"block_{i}"], stats[f"block_{i}"] = p, s
  params["head"], stats["head"] = init_head(keys[-1], plan[-1]["c_out"], cfg.num_classes)
  return params, stats


def _conv_op(op, p, s, h, train, cfg):
  """ReLU-conv-BN of edge op ``op`` with the cells' batch-norm settings: ``(y, new_conv_stats or None)``."""
  name = CONV_KEY[op]
  c = p[name]["w"].shape[-1]
  bn_p = p[name]["bn"] if cfg.cell_bn_affine else {"scale": jnp.ones((c,), h.dtype), "bias": jnp.zeros((c,), h.dtype)}
  if cfg.cell_bn_running_stats:
    y, new = ops.relu_conv_bn({"w": p[name]["w"], "bn": bn_p}, s[name], h, train=train)
    return y, new
  # Batch statistics always; the running statistics are placeholders nobody reads.
  placeholder = {"bn": {"mean": jnp.zeros((c,), h.dtype), "var": jnp.ones((c,), h.dtype)}}
  y, _ = ops.relu_conv_bn({"w": p[name]["w"], "bn": bn_p}, placeholder, h, train=True)
  return y, None


def _mixed_edge(p, s, h, w, train, cfg):
  """``sum_o w[o] * op_o(h)`` and the edge's new statistics (``none`` adds nothing)."""
  out, new_s = 0.0, {}
  for op in range(NUM_OPS):
    if op == NONE:
      continue
    if op == SKIP:
      y = h
    elif op == AVG:
      y = ops.avg_pool(h)
    else:
      y, new = _conv_op(op, p, s, h, train, cfg)
      if new is not None:
        new_s[CONV_KEY[op]] = new
    out = out + w[op] * y
  return out, new_s


def continuous_cell(p: Params, s: Params, h: jax.Array, weights: jax.Array, *,
                    config: ContinuousConfig | dict[str, Any], train: bool) -> tuple[jax.Array, Params]:
  """One relaxed cell: node ``j`` sums ``sum_o weights[e, o] * op_o(node_i)`` over its edges ``e = (j <- i)``.

  Args:
    p, s: the cell's params / statistics (``params["block_<i>"]`` of a cell).
    h: the cell input ``[N, H, W, C]``.
    weights: float[6, 5] op weights, used as given.
    config: the ``ContinuousConfig``.
    train: BN mode (the cells' batch norms without running statistics always
      use the batch's).

  Returns:
    ``(node 3, new cell statistics)`` (empty without ``cell_bn_running_stats``).
  """
  cfg = as_config(config)
  chex.assert_shape(weights, (NUM_EDGES, NUM_OPS))

  def edge(e, pe, se, h_in):
    y, new_s = _mixed_edge(pe, se, h_in, weights[e], train, cfg)
    return y, (new_s if cfg.cell_bn_running_stats else None)

  return apply_cell(p, s, h, edge)


def apply(params: Params, batch_stats: Params, weights: jax.Array, x: jax.Array, *,
          config: ContinuousConfig | dict[str, Any], train: bool) -> tuple[jax.Array, Params]:
  """Logits of the relaxed network: every edge is ``sum_o weights[e, o] * op_o(h)``.

  Args:
    params, batch_stats: from ``init``.
    weights: float[6, 5] op weights, used as given (differentiable to any order).
    x: images ``[N, H, W, C_in]``.
    config: the ``ContinuousConfig``.
    train: batch statistics (True) or running statistics (False) in the batch
      norms that track them.

  Returns:
    ``(logits [N, num_classes], new_batch_stats)``.
  """
  cfg = as_config(config)
  chex.assert_rank(x, 4)
  chex.assert_shape(weights, (NUM_EDGES, NUM_OPS))
  new = {}
  h, new["stem"] = apply_stem(params["stem"], batch_stats["stem"], x, train)
  for i, block in enumerate(cfg.plan()):
    p, s = params[f"block_{i}"], batch_stats[f"block_{i}"]
    if block["kind"] == "res":
      h, new[f"block_{i}"] = apply_res(p, s, h, train)
    else:
      h, new[f"block_{i}"] = continuous_cell(p, s, h, weights, config=cfg, train=train)
  logits, new["head"] = apply_head(params["head"], batch_stats["head"], h, train)
  return logits, new


def derive(weights: Any, config: Any = None) -> np.ndarray:
  """The architecture the weights stand for: the arg-max op of every edge, ``none`` included.

  NAS-Bench-201's ``genotype()`` rule (ties go to the first op).

  Args:
    weights: float[6, 5] (logits, softmaxed weights or switches: the arg-max
      is the same).
    config: unused (the cell has one shape).

  Returns:
    ``int32[6]``, an architecture of the ``nb201`` space.

  Example:
    >>> derive(np.eye(6, 5)).tolist()
    [0, 1, 2, 3, 4, 0]
  """
  del config
  w = np.asarray(weights, np.float64)
  if w.shape != (NUM_EDGES, NUM_OPS):
    raise ValueError(f"nb201 op weights must have shape ({NUM_EDGES}, {NUM_OPS}) (edges x {OPS}), got {w.shape}")
  return np.argmax(w, axis=-1).astype(np.int32)


def one_hot_weights(arch: Any) -> jax.Array:
  """float32[6, 5] weights that select ``arch``'s op on every edge (the relaxation then computes that cell).

  Example:
    >>> derive(one_hot_weights([3, 1, 2, 0, 4, 3])).tolist()
    [3, 1, 2, 0, 4, 3]
  """
  a = np.asarray(arch).reshape(-1)
  if a.shape != (NUM_EDGES,) or not np.all((a >= 0) & (a < NUM_OPS)):
    raise ValueError(f"nb201 arch must be {NUM_EDGES} op ids in 0..{NUM_OPS - 1} ({', '.join(OPS)}), got {a.tolist()}")
  return jax.device_put(np.eye(NUM_OPS, dtype=np.float32)[a.astype(np.int64)])

