"""Shared pieces of the ``nasnet`` networks: ops, config, architecture helpers and blocks.

Architecture (see ``nas_jax.spaces.nasnet``): ``int32[2, B, 4]`` indexed
``[cell (0 normal, 1 reduction), node, (input0, op0, input1, op1)]``; inputs
0, 1 are the cell inputs ``c_{k-2}, c_{k-1}``, ``2 + j`` is node ``j``; ops
``0 sep_conv_3x3, 1 sep_conv_5x5, 2 avg_pool_3x3, 3 max_pool_3x3, 4 identity``.

The blocks here (stem, 1x1 preprocessing, one edge's ops, classifier) are used
by every network of the package: the weight-sharing supernet
(``supernet.py``), its forward-only evaluation (``supernet_eval.py``), the
continuous relaxation (``continuous.py``) and the child network
(``child.py``), which is why the child computes exactly the supernets'
functions from their weights.

Example:
    >>> cfg = SupernetConfig(num_classes=10, init_channels=16, layers=8)
    >>> [c["channels"] for c in cfg.plan()]
    [16, 16, 32, 32, 32, 64, 64, 64]
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import ops

Params = dict[str, Any]

OPS: tuple[str, ...] = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")
NUM_OPS = len(OPS)
SEP3, SEP5, AVG, MAX, IDENTITY = range(NUM_OPS)


@dataclasses.dataclass(frozen=True)
class SupernetConfig:
  """Macro settings shared by the supernets and the child network.

  Attributes:
    num_classes: classifier outputs.
    init_channels: C of the first stage.
    layers: total number of cells (reductions at layers//3 and 2*layers//3).
    num_nodes: B, nodes per cell.
    stem_multiplier: the stem outputs ``stem_multiplier * C`` channels.
  """
  num_classes: int = 10
  init_channels: int = 16
  layers: int = 8
  num_nodes: int = 5
  stem_multiplier: int = 3

  def __post_init__(self):
    for name in ("num_classes", "init_channels", "layers", "num_nodes", "stem_multiplier"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"SupernetConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.init_channels < 2:
      raise ValueError(f"init_channels must be >= 2 (factorized reduce), got {self.init_channels}")

  @property
  def reduction_layers(self) -> tuple[int, ...]:
    return tuple(sorted({self.layers // 3, 2 * self.layers // 3}))

  def plan(self) -> list[dict[str, Any]]:
    """Per cell: ``reduction``, ``reduction_prev`` and ``channels`` (C of the cell)."""
    cells, c, reduction_prev = [], self.init_channels, False
    for i in range(self.layers):
      reduction = i in self.reduction_layers
      if reduction:
        c *= 2
      cells.append({"reduction": reduction, "reduction_prev": reduction_prev, "channels": c})
      reduction_prev = reduction
    return cells


def as_config(config: SupernetConfig | dict[str, Any]) -> SupernetConfig:
  """``config`` itself, or a ``SupernetConfig`` of the dict's known fields (others are ignored)."""
  if isinstance(config, SupernetConfig):
    return config
  fields = {f.name for f in dataclasses.fields(SupernetConfig)}
  return SupernetConfig(**{k: v for k, v in dict(config).items() if k in fields})


# --- arch helpers -------------------------------------------------------------
def loose_end_mask(cell_arch: jax.Array) -> jax.Array:
  """float32[B]: 1 for nodes no other node of the cell uses (jnp, traceable)."""
  b = cell_arch.shape[0]
  inputs = jnp.concatenate([cell_arch[:, 0], cell_arch[:, 2]])
  used = jnp.any(inputs[None, :] == (jnp.arange(b) + 2)[:, None], axis=1)
  return (~used).astype(jnp.float32)


def loose_ends(cell_arch: np.ndarray) -> list[int]:
  """The loose ends of a concrete ``int[B, 4]`` cell (numpy): the nodes no other node uses."""
  used = set(int(v) - 2 for v in np.concatenate([cell_arch[:, 0], cell_arch[:, 2]]) if v >= 2)
  return [j for j in range(cell_arch.shape[0]) if j not in used]


def check_arch(arch: Any, num_nodes: int = 5) -> np.ndarray:
  """Validates a concrete architecture array; returns it as int32 numpy."""
  a = np.asarray(arch)
  if a.shape != (2, num_nodes, 4):
    raise ValueError(f"nasnet arch must have shape (2, {num_nodes}, 4), got {a.shape}")
  a = a.astype(np.int32)
  for c in range(2):
    for i in range(num_nodes):
      for s in (0, 2):
        if not 0 <= a[c, i, s] <= i + 1:
          raise ValueError(f"arch[{c}, {i}, {s}] (input) = {a[c, i, s]} must be in 0..{i + 1}")
      for s in (1, 3):
        if not 0 <= a[c, i, s] < NUM_OPS:
          raise ValueError(f"arch[{c}, {i}, {s}] (op) = {a[c, i, s]} must be in 0..{NUM_OPS - 1}")
  return a


def random_arch(key: jax.Array, num_nodes: int = 5) -> jax.Array:
  """A uniformly random architecture (jittable); same law as the space's sample."""
  k_in, k_op = jax.random.split(key)
  hi = jnp.broadcast_to((jnp.arange(num_nodes) + 2)[None, :, None], (2, num_nodes, 2))
  inputs = jnp.floor(jax.random.uniform(k_in, (2, num_nodes, 2)) * hi).astype(jnp.int32)
  op = jax.random.randint(k_op, (2, num_nodes, 2), 0, NUM_OPS, jnp.int32)
  return jnp.stack([inputs[..., 0], op[..., 0], inputs[..., 1], op[..., 1]], axis=-1)


# --- the pieces shared by all networks ------------------------------------------
def init_stem(key, c_in, c_out):
  """The stem: conv3x3(``c_in -> c_out``)-BN."""
  return ops.init_relu_conv_bn(key, c_in, c_out, kernel=3)


def apply_stem(p, s, x, train):
  """``(y, new_stats)`` of the stem (no ReLU before the conv)."""
  return ops.relu_conv_bn(p, s, x, train=train, relu=False, conv_impl=ops.stem_conv_impl())


def init_preprocess(key, c_prev_prev, c_prev, c, reduction_prev):
  """A cell's input maps to ``c`` channels: ``pre0`` (a factorized reduce after a reduction) and ``pre1``."""
  k0, k1 = jax.random.split(key)
  if reduction_prev:
    p0, s0 = ops.init_factorized_reduce(k0, c_prev_prev, c)
  else:
    p0, s0 = ops.init_relu_conv_bn(k0, c_prev_prev, c, 1)
  p1, s1 = ops.init_relu_conv_bn(k1, c_prev, c, 1)
  return {"pre0": p0, "pre1": p1}, {"pre0": s0, "pre1": s1}


def apply_preprocess(p, s, h0, h1, reduction_prev, train):
  """``(x0, x1, new_stats)``: the cell inputs ``h0, h1`` mapped to the cell's width."""
  if reduction_prev:
    x0, t0 = ops.factorized_reduce(p["pre0"], s["pre0"], h0, train=train)
  else:
    x0, t0 = ops.relu_conv_bn(p["pre0"], s["pre0"], h0, train=train)
  x1, t1 = ops.relu_conv_bn(p["pre1"], s["pre1"], h1, train=train)
  return x0, x1, {"pre0": t0, "pre1": t1}


def init_edge(key, c, reduction, with_fr):
  """Params of one (node, slot) of the weight-sharing supernet."""
  k3, k5, kf = jax.random.split(key, 3)
  p3, s3 = ops.init_sep_conv(k3, c, c, 3)
  p5, s5 = ops.init_sep_conv(k5, c, c, 5)
  p, s = {"sep3": p3, "sep5": p5}, {"sep3": s3, "sep5": s5}
  if reduction and with_fr:
    p["fr"], s["fr"] = ops.init_factorized_reduce(kf, c, c)
  return p, s


def apply_op(op: int, p, s, h, stride: int, train: bool):
  """One op with static id. ``p``/``s``: the edge's params/stats (all ops).

  Returns ``(y, new_edge_stats)``.
  """
  s = dict(s)
  if op == SEP3:
    y, s["sep3"] = ops.sep_conv(p["sep3"], s["sep3"], h, train=train, stride=stride)
  elif op == SEP5:
    y, s["sep5"] = ops.sep_conv(p["sep5"], s["sep5"], h, train=train, stride=stride)
  elif op == AVG:
    y = ops.avg_pool(h, stride)
  elif op == MAX:
    y = ops.max_pool(h, stride)
  elif stride == 1:
    y = ops.identity(h)
  else:
    y, s["fr"] = ops.factorized_reduce(p["fr"], s["fr"], h, train=train)
  return y, s


def init_head(key, c_in, num_classes):
  """The linear classifier after global average pooling."""
  return ops.init_dense(key, c_in, num_classes)


def apply_head(p, h):
  """Logits: global average pooling, then the linear classifier."""
  return ops.dense(p, jnp.mean(h, axis=(1, 2)))


def stacked(init_fn: Callable, keys: jax.Array):
  """``vmap(init_fn)(keys)``, drawn per key on the host when the keys are concrete."""
  if ops.host_rng(keys[0]) is None:
    return jax.vmap(init_fn)(keys)
  # Stacked on the host: an eager jnp.stack (or jnp.asarray) compiles one XLA program per signature.
  return jax.tree.map(lambda *a: jax.device_put(np.stack([np.asarray(v) for v in a])), *[init_fn(k) for k in keys])


def branch_specs(reduction: bool) -> list[tuple[int, int]]:
  """``(op, stride)`` of each branch of an edge's switch (training scan and evaluation cells).

  Normal cells: the 5 ops (stride 1). Reduction cells: the 5 ops at stride 2
  on a cell input, then the 5 ops at stride 1 on a node (branch
  ``op + 5 * (idx >= 2)``, see ``which_branch``).
  """
  strides = (2, 1) if reduction else (1,)
  return [(o, st) for st in strides for o in range(NUM_OPS)]


def which_branch(reduction, idx_e, op_e):
  """The branch of ``branch_specs(reduction)`` that runs op ``op_e`` on input ``idx_e`` (traced ids)."""
  return op_e + NUM_OPS * (idx_e >= 2).astype(jnp.int32) if reduction else op_e

