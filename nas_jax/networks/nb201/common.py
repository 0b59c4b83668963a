"""Shared pieces of the ``nb201`` networks: config, useful edges and the blocks of the macro network.

Architecture (see ``nas_jax.spaces.nb201``): ``int32[6]``, one op per edge
``(1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)``; ops ``0 none,
1 skip_connect, 2 nor_conv_1x1, 3 nor_conv_3x3, 4 avg_pool_3x3``. The blocks
here (stem, residual block, head, one edge's op, the cell's node sums) are used
by the weight-sharing supernet (``supernet.py``), the continuous relaxation
(``continuous.py``) and the child network (``child.py``).

Example:
    >>> [b["kind"] for b in SupernetConfig(layers=1).plan()]
    ['cell', 'res', 'cell', 'res', 'cell']
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import ops
from nas_jax.spaces.nb201 import EDGES, NUM_EDGES, NUM_OPS

Params = dict[str, Any]
NONE, SKIP, CONV1, CONV3, AVG = range(NUM_OPS)
CONV_KEY = {CONV1: "c1", CONV3: "c3"}


@dataclasses.dataclass(frozen=True)
class SupernetConfig:
  """Macro settings of the NAS-Bench-201 network.

  Attributes:
    num_classes: classifier outputs.
    init_channels: C of the first stage (the benchmark: 16).
    layers: N, cells per stage (the benchmark: 5; 3N cells in all).
    num_nodes: accepted for interface compatibility with the nasnet family and
      ignored (the cell has 4 nodes).
  """
  num_classes: int = 10
  init_channels: int = 16
  layers: int = 5
  num_nodes: int = 4

  def __post_init__(self):
    for name in ("num_classes", "init_channels", "layers"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"nb201 SupernetConfig.{name} must be >= 1, got {getattr(self, name)}")

  def plan(self) -> list[dict[str, Any]]:
    """The blocks in order: ``{"kind": "cell" | "res", "c_in", "c_out"}``."""
    blocks, c = [], self.init_channels
    for stage in range(3):
      if stage:
        blocks.append({"kind": "res", "c_in": c, "c_out": 2 * c})
        c *= 2
      blocks += [{"kind": "cell", "c_in": c, "c_out": c} for _ in range(self.layers)]
    return blocks


def as_config(config: SupernetConfig | dict[str, Any]) -> SupernetConfig:
  """``config`` itself, or a ``SupernetConfig`` of the dict's known fields (others are ignored)."""
  if isinstance(config, SupernetConfig):
    return config
  fields = {f.name for f in dataclasses.fields(SupernetConfig)}
  return SupernetConfig(**{k: v for k, v in dict(config).items() if k in fields})


def useful_edges(arch: Any) -> list[bool]:
  """Per edge: its op is not ``none`` and its target node reaches the output.

  Args:
    arch: concrete int[6].

  Returns:
    six bools.

  Example:
    >>> useful_edges([3, 3, 0, 1, 3, 0])  # node 2 feeds nothing
    [True, False, False, True, True, False]
  """
  a = [int(v) for v in np.asarray(arch).reshape(-1)]
  reaches = [False, False, False, True]
  for e in reversed(range(NUM_EDGES)):
    to, frm = EDGES[e]
    if a[e] != NONE and reaches[to]:
      reaches[frm] = True
  return [a[e] != NONE and reaches[EDGES[e][0]] for e in range(NUM_EDGES)]


# --- blocks shared by the supernet and the child ------------------------------------
def init_stem(key, c_in, c):
  """The stem: conv3x3(``c_in -> c``)-BN."""
  return ops.init_relu_conv_bn(key, c_in, c, 3)


def apply_stem(p, s, x, train):
  """``(y, new_stats)`` of the stem (no ReLU before the conv)."""
  return ops.relu_conv_bn(p, s, x, train=train, relu=False, conv_impl=ops.stem_conv_impl())


def init_res(key, c_in, c_out):
  """The residual block between stages (see the package docstring)."""
  ka, kb, kc = jax.random.split(key, 3)
  pa, sa = ops.init_relu_conv_bn(ka, c_in, c_out, 3)
  pb, sb = ops.init_relu_conv_bn(kb, c_out, c_out, 3)
  w = ops.normal(kc, (1, 1, c_in, c_out), np.sqrt(2.0 / c_in))
  return {"a": pa, "b": pb, "short": {"w": w}}, {"a": sa, "b": sb}


def pool2(x):
  """2x2 average pooling, stride 2, no padding (odd sizes are floored)."""
  n, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2, :]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def apply_res(p, s, x, train):
  """``(y, new_stats)``: ``ReLU-conv3x3/2-BN -> ReLU-conv3x3-BN`` plus the pooled 1x1 shortcut."""
  y, sa = ops.relu_conv_bn(p["a"], s["a"], x, train=train, stride=2)
  y, sb = ops.relu_conv_bn(p["b"], s["b"], y, train=train)
  short = ops.conv2d(pool2(x), p["short"]["w"])
  if short.shape != y.shape:  # odd input sizes: conv/2 gives ceil, pool floor
    short = jnp.pad(short, ((0, 0), (0, y.shape[1] - short.shape[1]), (0, y.shape[2] - short.shape[2]),
                            (0, 0)))
  return y + short, {"a": sa, "b": sb}


def init_head(key, c, num_classes):
  """The head: BN, ReLU, global average pooling, linear classifier."""
  bp, bs = ops.init_bn(c)
  return {"bn": bp, "dense": ops.init_dense(key, c, num_classes)}, {"bn": bs}


def apply_head(p, s, h, train):
  """``(logits, new_stats)`` of the head."""
  h, bs = ops.batch_norm(p["bn"], s["bn"], h, train=train)
  return ops.dense(p["dense"], jnp.mean(jax.nn.relu(h), axis=(1, 2))), {"bn": bs}


def init_edge(key, c, op_ids=(CONV1, CONV3)):
  """Params/stats of the convs of one edge: ``{"c1": ..., "c3": ...}`` (those in ``op_ids``)."""
  k1, k3 = jax.random.split(key)
  p, s = {}, {}
  for op, k in ((CONV1, k1), (CONV3, k3)):
    if op in op_ids:
      p[CONV_KEY[op]], s[CONV_KEY[op]] = ops.init_relu_conv_bn(k, c, c, 1 if op == CONV1 else 3)
  return p, s


def apply_op(op: int, p, s, h, train, conv_impl="lax"):
  """One op (a Python int) on ``h``; returns ``(y, new_edge_stats)``."""
  if op == NONE:
    return jnp.zeros_like(h), s
  if op == SKIP:
    return h, s
  if op == AVG:
    return ops.avg_pool(h), s
  key = CONV_KEY[op]
  y, new = ops.relu_conv_bn(p[key], s[key], h, train=train, conv_impl=conv_impl)
  return y, {**s, key: new}


def apply_cell(p, s, x, edge_fn):
  """Node j sums ``edge_fn(e, p_e, s_e, node_i)`` over its edges; returns node 3."""
  nodes, new_s = [x], {}
  for j in (1, 2, 3):
    total = None
    for e, (to, frm) in enumerate(EDGES):
      if to != j:
        continue
      out = edge_fn(e, p.get(f"e{e}"), s.get(f"e{e}"), nodes[frm])
      if out is None:
        continue
      y, new_s[f"e{e}"] = out
      total = y if total is None else total + y
    nodes.append(jnp.zeros_like(x) if total is None else total)
  return nodes[3], {k: v for k, v in new_s.items() if v is not None}

