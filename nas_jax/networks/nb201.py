"""Networks of the ``nb201`` cell space: the NAS-Bench-201 network and its
weight-sharing supernet.

Architecture (see ``nas_jax.spaces.nb201``): ``int32[6]``, one op per edge
``(1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)``; ops ``0 none,
1 skip_connect, 2 nor_conv_1x1, 3 nor_conv_3x3, 4 avg_pool_3x3``.

Macro structure (NAS-Bench-201, Dong & Yang 2020): stem conv3x3(C)-BN; N cells
at C; a residual block to 2C with stride 2; N cells at 2C; a residual block to
4C; N cells at 4C; BN-ReLU, global average pooling, linear classifier.
``layers`` is N (cells per stage; the benchmark uses N = 5, C = 16). Residual
block: ``ReLU-conv3x3/2-BN -> ReLU-conv3x3-BN`` plus a shortcut
``avgpool2x2/2 -> conv1x1``. Cell: node ``j`` sums ``op(node_i)`` over its
incoming edges; the cell output is node 3. Ops: ``nor_conv_kxk`` is
ReLU-conv-BN, ``avg_pool_3x3`` does not count padding, ``none`` is zero.

The child computes every non-``none`` edge whose target node reaches the
output (the others cannot change it), the supernet every edge; so a child
whose variables come from the supernet (``child_variables_from_supernet``)
computes exactly the supernet's function for its architecture.

Weight-sharing supernet: one ReLU-conv-BN 1x1 and 3x3 per (cell, edge); the
architecture is a traced ``int32[6]`` argument and every edge is a
``lax.switch`` over the 5 ops (each branch rematerialised, which keeps the
compiled program small), so one compiled train step serves all 15,625 cells.
The API matches ``nas_jax.networks.nasnet`` (``SupernetConfig``,
``init_supernet``, ``supernet_apply``, ``make_train_step``,
``make_eval_archs``, ``default_optimizer``, ``init_train_state``), so the
supernet evaluator runs on either space.

Example:
    >>> from nas_jax.spaces import get_space
    >>> space = get_space("nb201")
    >>> model = build_child(space, [3, 1, 2, 0, 4, 3], num_classes=10, init_channels=4, layers=1)
    >>> variables = model.init({"params": jax.random.key(0)}, jnp.zeros((2, 8, 8, 3)), train=False)
    >>> logits, aux = model.apply(variables, jnp.zeros((2, 8, 8, 3)), train=False)
    >>> logits.shape, aux
    ((2, 10), None)
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from nas_jax import ops
from nas_jax.networks import supernet as supernet_lib
from nas_jax.spaces.nb201 import EDGES, NUM_EDGES, NUM_OPS, OPS

Params = dict[str, Any]
NONE, SKIP, CONV1, CONV3, AVG = range(NUM_OPS)
_CONV_KEY = {CONV1: "c1", CONV3: "c3"}


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


def _as_config(config: SupernetConfig | dict[str, Any]) -> SupernetConfig:
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
def _init_stem(key, c_in, c):
  return ops.init_relu_conv_bn(key, c_in, c, 3)


def _stem(p, s, x, train):
  return ops.relu_conv_bn(p, s, x, train=train, relu=False, conv_impl=ops.stem_conv_impl())


def _init_res(key, c_in, c_out):
  ka, kb, kc = jax.random.split(key, 3)
  pa, sa = ops.init_relu_conv_bn(ka, c_in, c_out, 3)
  pb, sb = ops.init_relu_conv_bn(kb, c_out, c_out, 3)
  w = ops.normal(kc, (1, 1, c_in, c_out), np.sqrt(2.0 / c_in))
  return {"a": pa, "b": pb, "short": {"w": w}}, {"a": sa, "b": sb}


def _pool2(x):
  """2x2 average pooling, stride 2, no padding (odd sizes are floored)."""
  n, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2, :]
  return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _res(p, s, x, train):
  y, sa = ops.relu_conv_bn(p["a"], s["a"], x, train=train, stride=2)
  y, sb = ops.relu_conv_bn(p["b"], s["b"], y, train=train)
  short = ops.conv2d(_pool2(x), p["short"]["w"])
  if short.shape != y.shape:  # odd input sizes: conv/2 gives ceil, pool floor
    short = jnp.pad(short, ((0, 0), (0, y.shape[1] - short.shape[1]), (0, y.shape[2] - short.shape[2]),
                            (0, 0)))
  return y + short, {"a": sa, "b": sb}


def _init_head(key, c, num_classes):
  bp, bs = ops.init_bn(c)
  return {"bn": bp, "dense": ops.init_dense(key, c, num_classes)}, {"bn": bs}


def _head(p, s, h, train):
  h, bs = ops.batch_norm(p["bn"], s["bn"], h, train=train)
  return ops.dense(p["dense"], jnp.mean(jax.nn.relu(h), axis=(1, 2))), {"bn": bs}


def _init_edge(key, c, op_ids=(CONV1, CONV3)):
  """Params/stats of the convs of one edge: ``{"c1": ..., "c3": ...}`` (those in ``op_ids``)."""
  k1, k3 = jax.random.split(key)
  p, s = {}, {}
  for op, k in ((CONV1, k1), (CONV3, k3)):
    if op in op_ids:
      p[_CONV_KEY[op]], s[_CONV_KEY[op]] = ops.init_relu_conv_bn(k, c, c, 1 if op == CONV1 else 3)
  return p, s


def _apply_op(op: int, p, s, h, train, conv_impl="lax"):
  """One op (a Python int) on ``h``; returns ``(y, new_edge_stats)``."""
  if op == NONE:
    return jnp.zeros_like(h), s
  if op == SKIP:
    return h, s
  if op == AVG:
    return ops.avg_pool(h), s
  key = _CONV_KEY[op]
  y, new = ops.relu_conv_bn(p[key], s[key], h, train=train, conv_impl=conv_impl)
  return y, {**s, key: new}


def _cell(p, s, x, edge_fn):
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


# --- weight-sharing supernet -------------------------------------------------------
def init_supernet(key: jax.Array, config: SupernetConfig | dict[str, Any],
                  input_shape: tuple[int, ...]) -> tuple[Params, Params]:
  """Parameters and batch statistics of the weight-sharing supernet.

  Args:
    key: PRNG key.
    config: ``SupernetConfig`` (or a dict of its fields).
    input_shape: ``(H, W, C_in)`` (or ``(N, H, W, C_in)``).

  Returns:
    ``(params, batch_stats)`` with keys ``stem``, ``block_<i>`` and ``head``.

  Example:
    >>> params, stats = init_supernet(jax.random.key(0), SupernetConfig(init_channels=4, layers=1),
    ...                               (8, 8, 3))
    >>> sorted(params["block_0"])
    ['e0', 'e1', 'e2', 'e3', 'e4', 'e5']
  """
  cfg = _as_config(config)
  plan = cfg.plan()
  keys = jax.random.split(key, len(plan) + 2)
  params, stats = {}, {}
  params["stem"], stats["stem"] = _init_stem(keys[0], int(input_shape[-1]), cfg.init_channels)
  for i, block in enumerate(plan):
    if block["kind"] == "res":
      p, s = _init_res(keys[i + 1], block["c_in"], block["c_out"])
    else:
      p, s = {}, {}
      for e, k in enumerate(jax.random.split(keys[i + 1], NUM_EDGES)):
        p[f"e{e}"], s[f"e{e}"] = _init_edge(k, block["c_in"])
    params[f"block_{i}"], stats[f"block_{i}"] = p, s
  params["head"], stats["head"] = _init_head(keys[-1], plan[-1]["c_out"], cfg.num_classes)
  return params, stats


def _branch(op, train, forward_only, p, s, h):
  # Inside lax.switch, XLA:CPU's convolution backward is 6-24x slower than outside
  # (ops.branch_conv_impl); its forward alone is not, and beats the taps.
  return _apply_op(op, p, s, h, train, "lax" if forward_only else ops.branch_conv_impl())


# Rematerialised switch branches keep the conditional's residuals to the branch
# input; without it every branch emits zero-filled residuals of all the others.
_BRANCHES = {(train, fwd): [jax.checkpoint(functools.partial(_branch, op, train, fwd)) for op in range(NUM_OPS)]
             for train in (False, True) for fwd in (False, True)}


def supernet_apply(params: Params, batch_stats: Params, arch: jax.Array, x: jax.Array, *,
                   config: SupernetConfig | dict[str, Any], train: bool, rng: jax.Array | None = None,
                   drop_prob: float | jax.Array = 0.0, forward_only: bool = False) -> tuple[jax.Array, Params]:
  """Logits of the supernet for one (traced) architecture.

  Args:
    params, batch_stats: from ``init_supernet``.
    arch: int32[6] (may be traced).
    x: float32[N, H, W, C_in].
    config: the ``SupernetConfig``.
    train: batch statistics (True) or running statistics (False) in BN.
    rng: PRNG key for drop-path; None (the default) disables it.
    drop_prob: drop-path probability in [0, 1) of every conv and pool edge
      (as the child network applies it), used when ``rng`` is given; may be
      traced.
    forward_only: the caller will not differentiate the result (evaluation):
      convolutions then run as XLA convolutions, whose forward pass is fast
      inside the op switch on CPU (see ``ops.branch_conv_impl``).

  Returns:
    ``(logits [N, num_classes], new_batch_stats)``; in train mode the running
    statistics of the convs that ran are updated.
  """
  cfg = _as_config(config)
  chex.assert_rank(x, 4)
  chex.assert_shape(arch, (NUM_EDGES,))
  arch = jnp.asarray(arch, jnp.int32)
  new = {}
  h, new["stem"] = _stem(params["stem"], batch_stats["stem"], x, train)

  def edge(e, p, s, h_in, scale=None):
    y, s = lax.switch(arch[e], _BRANCHES[train, forward_only], p, s, h_in)
    if scale is not None:
      y = y * ops.per_sample(scale[e], y)
    return y, s

  droppable = (arch == CONV1) | (arch == CONV3) | (arch == AVG)
  for i, block in enumerate(cfg.plan()):
    p, s = params[f"block_{i}"], batch_stats[f"block_{i}"]
    if block["kind"] == "res":
      h, new[f"block_{i}"] = _res(p, s, h, train)
    else:
      scale = None
      if rng is not None:
        factors = ops.drop_path_factors(jax.random.fold_in(rng, i), drop_prob, (NUM_EDGES, x.shape[0]))
        scale = jnp.where(droppable[:, None], factors, 1.0)
      h, new[f"block_{i}"] = _cell(p, s, h, functools.partial(edge, scale=scale))
  logits, new["head"] = _head(params["head"], batch_stats["head"], h, train)
  return logits, new


default_optimizer = supernet_lib.default_optimizer
init_train_state = supernet_lib.init_train_state


def make_train_step(config: SupernetConfig | dict[str, Any], tx: optax.GradientTransformation,
                    *, donate: bool = True, drop_path: float | Callable = 0.0) -> Callable:
  """One jitted supernet training step that serves every architecture.

  ``train_step(state, arch int32[6], (x, y), key) -> (state, {"loss", "acc"})``;
  ``drop_path`` and the rest as in ``nas_jax.networks.supernet.make_train_step``.
  """
  cfg = _as_config(config)
  return supernet_lib.make_train_step(functools.partial(supernet_apply, config=cfg), tx, donate=donate,
                                      drop_path=drop_path)


def make_eval_archs(config: SupernetConfig | dict[str, Any], *, method: str = "map",
                    bn: str = "batch") -> Callable:
  """One jitted call that scores K architectures on one batch.

  ``eval_archs(params, batch_stats, archs int32[K, 6], x, y) -> (acc [K], loss [K])``;
  ``method`` and ``bn`` as in ``nas_jax.networks.supernet.make_eval_archs``.
  """
  cfg = _as_config(config)
  return supernet_lib.make_eval_archs(functools.partial(supernet_apply, config=cfg, forward_only=True),
                                      arch_rank=1, method=method, bn=bn)


# --- child network -------------------------------------------------------------------
class NB201Child(nn.Module):
  """The NAS-Bench-201 network of one cell.

  Attributes:
    arch: the cell as a tuple of 6 op ids.
    num_classes, init_channels, layers: see ``SupernetConfig``.

  ``__call__(x, *, train, drop_prob=0.0)`` returns ``(logits, None)`` (the
  benchmark has no auxiliary head). With ``train`` and ``drop_prob > 0``,
  drop-path (rng stream ``drop_path``) is applied to every conv and pool edge
  output, as DARTS does; the benchmark itself trains without it.
  """
  arch: tuple
  num_classes: int = 10
  init_channels: int = 16
  layers: int = 5

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, drop_prob: float = 0.0):
    chex.assert_rank(x, 4)
    cfg = SupernetConfig(self.num_classes, self.init_channels, self.layers)
    update = train and self.is_mutable_collection("batch_stats")
    use_drop = train and not (isinstance(drop_prob, (int, float)) and drop_prob == 0.0)
    useful = useful_edges(self.arch)

    def module(name, init_fn):
      p = self.param(name, lambda key: init_fn(key)[0])
      s = self.variable("batch_stats", name, lambda: init_fn(self.make_rng("params"))[1])
      return p, s

    p, s = module("stem", lambda k: _init_stem(k, x.shape[-1], cfg.init_channels))
    h, new = _stem(p, s.value, x, train)
    if update:
      s.value = new
    for i, block in enumerate(cfg.plan()):
      if block["kind"] == "res":
        p, s = module(f"block_{i}", functools.partial(_init_res, c_in=block["c_in"], c_out=block["c_out"]))
        h, new = _res(p, s.value, h, train)
      else:
        p, s = module(f"block_{i}", functools.partial(_init_child_cell, arch=self.arch, c=block["c_in"]))

        def edge(e, p_e, s_e, h_in):
          op = self.arch[e]
          if not useful[e]:
            return None
          y, s_new = _apply_op(op, p_e, s_e, h_in, train)
          if use_drop and op in (CONV1, CONV3, AVG):
            y = ops.drop_path(self.make_rng("drop_path"), y, drop_prob)
          return y, s_new

        h, new = _cell(p, s.value, h, edge)
      if update:
        s.value = new
    p, s = module("head", lambda k: _init_head(k, h.shape[-1], cfg.num_classes))
    logits, new = _head(p, s.value, h, train)
    if update:
      s.value = new
    return logits, None


def _init_child_cell(key, *, arch, c):
  useful = useful_edges(arch)
  p, s = {}, {}
  for e, k in enumerate(jax.random.split(key, NUM_EDGES)):
    if useful[e] and arch[e] in _CONV_KEY:
      p[f"e{e}"], s[f"e{e}"] = _init_edge(k, c, (arch[e],))
  return p, s


def build_child(space: Any, arch: Any, *, num_classes: int, init_channels: int = 16, layers: int = 5,
                auxiliary: bool = False, **unused: Any) -> NB201Child:
  """The NAS-Bench-201 network of ``arch`` (a flax module, see ``NB201Child``).

  Args:
    space: the ``nb201`` search space (validates ``arch``).
    arch: int32[6].
    num_classes: classifier outputs.
    init_channels: C (the benchmark: 16).
    layers: N, cells per stage (the benchmark: 5).
    auxiliary: ignored (the benchmark has no auxiliary head; aux logits are None).
    **unused: other settings of the generic training loop, ignored.

  Returns:
    ``NB201Child``; ``apply(variables, x, train=...)`` returns ``(logits, None)``.

  Example:
    >>> from nas_jax.spaces import get_space
    >>> model = build_child(get_space("nb201"), [3] * 6, num_classes=10, init_channels=4, layers=1)
  """
  del auxiliary, unused
  a = space.validate(arch) if hasattr(space, "validate") else np.asarray(arch, np.int32)
  SupernetConfig(num_classes, init_channels, layers)  # checks the settings
  return NB201Child(arch=tuple(int(v) for v in a), num_classes=num_classes,
                    init_channels=init_channels, layers=layers)


def child_variables_from_supernet(arch: Any, params: Params, batch_stats: Params,
                                  config: SupernetConfig | dict[str, Any],
                                  child_variables: dict[str, Any] | None = None) -> dict[str, Any]:
  """Variables of the child of ``arch`` taken from the supernet's weights.

  The child then computes exactly the supernet's function for ``arch``
  (``train=False`` with the supernet's running statistics, or ``train=True``
  with batch statistics).

  Args:
    arch: int[6] (concrete).
    params, batch_stats: the supernet's pytrees (``init_supernet``).
    config: the supernet's ``SupernetConfig``.
    child_variables: unused (the child has nothing the supernet lacks); kept
      for the nasnet family's signature.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` for ``build_child(...).apply``.
  """
  del child_variables
  cfg = _as_config(config)
  a = [int(v) for v in np.asarray(arch).reshape(-1)]
  if len(a) != NUM_EDGES or not all(0 <= v < NUM_OPS for v in a):
    raise ValueError(f"nb201 arch must be 6 op ids in 0..{NUM_OPS - 1} ({', '.join(OPS)}), got {a}")
  useful = useful_edges(a)
  out_p = {"stem": params["stem"], "head": params["head"]}
  out_s = {"stem": batch_stats["stem"], "head": batch_stats["head"]}
  for i, block in enumerate(cfg.plan()):
    name = f"block_{i}"
    if block["kind"] == "res":
      out_p[name], out_s[name] = params[name], batch_stats[name]
      continue
    p, s = {}, {}
    for e in range(NUM_EDGES):
      if useful[e] and a[e] in _CONV_KEY:
        key = _CONV_KEY[a[e]]
        p[f"e{e}"] = {key: params[name][f"e{e}"][key]}
        s[f"e{e}"] = {key: batch_stats[name][f"e{e}"][key]}
    out_p[name], out_s[name] = p, s
  return {"params": out_p, "batch_stats": out_s}
