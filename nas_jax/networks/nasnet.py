"""Networks of the ``nasnet`` cell space: supernets and the child network.

Architecture (see ``nas_jax.spaces.nasnet``): ``int32[2, B, 4]`` indexed
``[cell (0 normal, 1 reduction), node, (input0, op0, input1, op1)]``; inputs
0, 1 are the cell inputs ``c_{k-2}, c_{k-1}``, ``2 + j`` is node ``j``; ops
``0 sep_conv_3x3, 1 sep_conv_5x5, 2 avg_pool_3x3, 3 max_pool_3x3, 4 identity``.
In a reduction cell, ops applied to a cell input have stride 2 (identity then
becomes a factorized reduce).

Macro structure (DARTS/NAO): stem conv3x3(``stem_multiplier * C``)-BN, then
``layers`` cells with reductions (channels doubled) at ``layers // 3`` and
``2 * layers // 3``; each cell first maps its inputs to ``C`` channels with a
ReLU-conv1x1-BN (a factorized reduce for ``c_{k-2}`` after a reduction); then
global average pooling and a linear classifier.

Cell output (the same function in every network): the concatenation of the
*loose ends* (nodes that no other node of the cell uses). The supernet, whose
architecture is traced, keeps a fixed shape by concatenating all B nodes,
each multiplied by its 0/1 loose-end flag; every consumer of a cell output
(the next cells' 1x1 preprocessing and factorized reduce, the classifier) is
linear in its input channels after a ReLU, so the zero blocks contribute
nothing and the child, which concatenates only the loose ends, computes exactly
the same function with the corresponding rows of those weights
(``child_variables_from_supernet``).

Weight-sharing supernet (ENAS / NAO-WS)
---------------------------------------
Parameters exist once for every (cell, node, slot, op): ``sep_conv_3x3`` and
``sep_conv_5x5`` weights per slot (shared between the strided and unstrided
uses), plus a factorized reduce per slot in reduction cells (identity on a cell
input). The architecture is a traced int32 argument: each node input is
picked by dynamic indexing over the available states and each op by
``lax.switch``, which on CPU runs only the chosen branch, so one compiled
train step serves every architecture. Cells are unrolled; the 2B edges of a
cell run in one ``lax.scan`` (``EDGE_LOOP = "scan"``), so the edge code is
compiled once per cell, and that scan has a hand-written backward scan
(``_cell_scan``) that recomputes only each edge's chosen branch and adds the
input gradient into one slice of the gradient buffer in place. In normal cells
the cell inputs and the nodes share one state buffer that each branch reads
from itself (no materialised copy of the selected input), and the cell output
(the masked concatenation of the nodes) is part of the custom VJP, so its
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
architectures, steps alternating, per-architecture time ratio 0.84-0.86.)

``EDGE_LOOP = "unroll"`` keeps the unrolled per-edge variant (``_edge``).
See ``benchmarks/supernet.py`` for the current figures; its ``--child-archs``
option times the fixed child network of the same architectures, which on this
CPU is no faster than the supernet (the ops, not the weight sharing, bound the
step).

Drop-path (``supernet_apply(..., rng=key, drop_prob=p)``, or
``make_train_step(..., drop_path=p or schedule)``): every edge whose op is not
a plain identity is zeroed for a sample with probability ``p`` and otherwise
scaled by ``1 / (1 - p)``, as in the child network; the per-edge factors
(``drop_path_scale``) enter the cell scan and its hand-written backward.

Evaluation (``make_eval_archs``) runs ``supernet_eval_apply``, a forward-only
form of ``supernet_apply`` (same function, tested): unrolled edges whose ops
read their input among the cell's states in place, cell outputs kept as node
lists whose masked concatenation is never built, each node's two edges summed
in one kernel pass that applies their last batch norms and computes pools and
identities in place, and the stem computed once for all K architectures.
Same-process A/B on the benchmark supernet (500 images, 8 random archs, 2-core
CPU): 0.80-0.82 vs 1.81-1.93 s per architecture, identical accuracies.

Batch norm in the supernet: training uses batch statistics (as ENAS and NAO-WS
do) and also tracks running statistics of every op (updated only for the ops
that ran). ``eval_archs`` scores architectures with *batch statistics* by
default (``bn="batch"``: the running averages are mixtures over many
architectures and misrepresent any single one; ENAS/NAO-WS evaluate this way);
``bn="running"`` uses the running statistics instead, which is the mode in
which a child built by ``child_variables_from_supernet`` reproduces the
supernet exactly (``train=False``).

Continuous relaxation (DARTS / BayesNAS)
----------------------------------------
Every node is connected to every earlier state by a mixed edge running all 5
ops; ``arch_params`` (``float32[2, E, 5]``, E = 2 + 3 + ... + (B+1) edges per
cell type, ordered node by node and input by input, see ``edge_index``) weight
them: ``mode="softmax"`` uses ``softmax(arch_params[c, e])`` (DARTS),
``mode="switch"`` uses the raw values as multiplicative switches
``sum_k z_k op_k(x)`` (BayesNAS). All B nodes are concatenated.
``derive_arch`` turns the weights into a discrete architecture.

Example:
    >>> cfg = SupernetConfig(num_classes=10, init_channels=16, layers=8)
    >>> params, stats = init_supernet(jax.random.key(0), cfg, (32, 32, 3))
    >>> state = init_train_state(params, stats, default_optimizer())
    >>> train_step = make_train_step(cfg, default_optimizer())
    >>> state, metrics = train_step(state, arch, (x, y), jax.random.key(1))
    >>> eval_archs = make_eval_archs(cfg)
    >>> acc, loss = eval_archs(state["params"], state["batch_stats"], archs, x_val, y_val)
    >>> child = build_child(space, arch, num_classes=10, init_channels=16, layers=8)
    >>> variables = child_variables_from_supernet(arch, state["params"],
    ...                                           state["batch_stats"], cfg)
    >>> logits, _ = child.apply(variables, x_val, train=False)
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
from nas_jax.kernels import fused as kernel_fused
from nas_jax.kernels import pick as kernel_pick
from nas_jax.networks import supernet as supernet_lib

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


def _as_config(config: SupernetConfig | dict[str, Any]) -> SupernetConfig:
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


def _loose_ends_np(cell_arch: np.ndarray) -> list[int]:
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
def _init_stem(key, c_in, c_out):
  return ops.init_relu_conv_bn(key, c_in, c_out, kernel=3)


def _stem(p, s, x, train):
  return ops.relu_conv_bn(p, s, x, train=train, relu=False, conv_impl=ops.stem_conv_impl())


def _init_preprocess(key, c_prev_prev, c_prev, c, reduction_prev):
  k0, k1 = jax.random.split(key)
  if reduction_prev:
    p0, s0 = ops.init_factorized_reduce(k0, c_prev_prev, c)
  else:
    p0, s0 = ops.init_relu_conv_bn(k0, c_prev_prev, c, 1)
  p1, s1 = ops.init_relu_conv_bn(k1, c_prev, c, 1)
  return {"pre0": p0, "pre1": p1}, {"pre0": s0, "pre1": s1}


def _preprocess(p, s, h0, h1, reduction_prev, train):
  if reduction_prev:
    x0, t0 = ops.factorized_reduce(p["pre0"], s["pre0"], h0, train=train)
  else:
    x0, t0 = ops.relu_conv_bn(p["pre0"], s["pre0"], h0, train=train)
  x1, t1 = ops.relu_conv_bn(p["pre1"], s["pre1"], h1, train=train)
  return x0, x1, {"pre0": t0, "pre1": t1}


def _init_edge(key, c, reduction, with_fr):
  """Params of one (node, slot) of the weight-sharing supernet."""
  k3, k5, kf = jax.random.split(key, 3)
  p3, s3 = ops.init_sep_conv(k3, c, c, 3)
  p5, s5 = ops.init_sep_conv(k5, c, c, 5)
  p, s = {"sep3": p3, "sep5": p5}, {"sep3": s3, "sep5": s5}
  if reduction and with_fr:
    p["fr"], s["fr"] = ops.init_factorized_reduce(kf, c, c)
  return p, s


def _apply_op(op: int, p, s, h, stride: int, train: bool):
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


def _init_head(key, c_in, num_classes):
  return ops.init_dense(key, c_in, num_classes)


def _head(p, h):
  return ops.dense(p, jnp.mean(h, axis=(1, 2)))


_cross_entropy = supernet_lib.cross_entropy


# --- weight-sharing supernet --------------------------------------------------------
def _stacked(init_fn: Callable, keys: jax.Array):
  """``vmap(init_fn)(keys)``, drawn per key on the host when the keys are concrete."""
  if ops.host_rng(keys[0]) is None:
    return jax.vmap(init_fn)(keys)
  # Stacked on the host: an eager jnp.stack (or jnp.asarray) compiles one XLA program per signature.
  return jax.tree.map(lambda *a: jax.device_put(np.stack([np.asarray(v) for v in a])), *[init_fn(k) for k in keys])


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
  cfg = _as_config(config)
  c_in = int(input_shape[-1])
  keys = jax.random.split(key, cfg.layers + 2)
  c_stem = cfg.stem_multiplier * cfg.init_channels
  params, stats = {}, {}
  params["stem"], stats["stem"] = _init_stem(keys[0], c_in, c_stem)
  c_pp, c_p = c_stem, c_stem
  for i, cell in enumerate(cfg.plan()):
    c = cell["channels"]
    kpre, kn = jax.random.split(keys[i + 1])
    p, s = _init_preprocess(kpre, c_pp, c_p, c, cell["reduction_prev"])
    edge_keys = jax.random.split(kn, 2 * cfg.num_nodes)
    p["edges"], s["edges"] = _stacked(lambda k: _init_edge(k, c, cell["reduction"], True), edge_keys)
    params[f"cell_{i}"], stats[f"cell_{i}"] = p, s
    c_pp, c_p = c_p, cfg.num_nodes * c
  params["classifier"] = _init_head(keys[-1], c_p, cfg.num_classes)
  return params, stats


def _branch_specs(reduction: bool) -> list[tuple[int, int]]:
  """``(op, stride)`` of each branch of an edge's switch (scan and unrolled cells).

  Normal cells: the 5 ops (stride 1). Reduction cells: the 5 ops at stride 2
  on a cell input, then the 5 ops at stride 1 on a node (branch
  ``op + 5 * (idx >= 2)``, see ``_which_branch``).
  """
  strides = (2, 1) if reduction else (1,)
  return [(o, st) for st in strides for o in range(NUM_OPS)]


def _which_branch(reduction, idx_e, op_e):
  return op_e + NUM_OPS * (idx_e >= 2).astype(jnp.int32) if reduction else op_e


def _branch(op, stride, train, p, s, h_full, h_node):
  return _apply_op(op, p, s, h_full if stride > 1 else h_node, stride, train)


def _edge_branches(reduction: bool, with_nodes: bool, train: bool) -> list[Callable]:
  """The branches ``(p, s, h_full, h_node) -> (y, s)`` of one edge's switch.

  Normal cells: the 5 ops at stride 1 on ``h_node``, the selected input
  (``h_full`` is None). Reduction cells: the 5 ops at stride 2 on the selected cell input
  ``h_full``, then (``with_nodes``, else ``h_node`` is None) the 5 ops at
  stride 1 on the selected node ``h_node``.
  """
  specs = _branch_specs(reduction)
  if reduction and not with_nodes:
    specs = specs[:NUM_OPS]
  return [functools.partial(_branch, o, st, train) for o, st in specs]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _edge(reduction: bool, with_nodes: bool, train: bool, which, p, s, h_full, h_node):
  """``branch[which](p, s, h_full, h_node)``: one edge with a traced op.

  The forward runs only the chosen branch (``lax.switch``). The backward is
  custom: it keeps only the edge's inputs and recomputes the chosen branch
  inside its VJP, where autodiff of ``lax.switch`` would store the union of
  every branch's residuals, zero-filled for the branches not taken. Used by the
  unrolled cell (``EDGE_LOOP = "unroll"``); the default scan has its own
  backward (``_cell_scan``). First-order reverse mode only (no ``jax.jvp`` of
  the weight-sharing supernet; the continuous relaxation, which second-order
  methods use, does not go through here).
  """
  return lax.switch(which, _edge_branches(reduction, with_nodes, train), p, s, h_full, h_node)


def _edge_fwd(reduction, with_nodes, train, which, p, s, h_full, h_node):
  out = lax.switch(which, _edge_branches(reduction, with_nodes, train), p, s, h_full, h_node)
  return out, (which, p, s, h_full, h_node)


def _edge_bwd(reduction, with_nodes, train, res, ct):
  which, p, s, h_full, h_node = res
  g_y = ct[0]  # the new batch statistics carry no gradient

  def vjp_of(branch):
    def run(p, s, h_full, h_node, g_y):
      _, pullback = jax.vjp(lambda p, a, b: branch(p, s, a, b)[0], p, h_full, h_node)
      return pullback(g_y)
    return run

  branches = [vjp_of(b) for b in _edge_branches(reduction, with_nodes, train)]
  d_p, d_full, d_node = lax.switch(which, branches, p, s, h_full, h_node, g_y)
  return None, d_p, None, d_full, d_node


_edge.defvjp(_edge_fwd, _edge_bwd)


def _edge_switch(p, s, h_full, h_node, idx, op, reduction: bool, train: bool, with_nodes: bool = True):
  """``op(input)`` of one edge with a traced op (and stride chosen by ``idx``).

  Normal cells: ``h_full`` is the selected input. Reduction cells: ``h_full``
  is the selected cell input (strided ops), ``h_node`` the selected node.
  """
  if not reduction:
    return _edge(False, False, train, op, p, s, None, h_full)
  if not with_nodes:
    return _edge(True, False, train, op, p, s, h_full, None)
  return _edge(True, True, train, _which_branch(True, idx, op), p, s, h_full, h_node)


def _supernet_cell_unrolled(p, s, x0, x1, cell_arch, reduction, num_nodes, train, scale=None):
  """Nodes and edges as unrolled Python loops (more code, no loop overhead);
  ``scale``: per-edge drop-path factors ``[2B, N]`` or None."""
  states, new_edges = [x0, x1], []
  for n in range(num_nodes):
    node = None
    for slot in range(2):
      e = 2 * n + slot
      pe, se = jax.tree.map(lambda a: a[e], (p, s))
      idx, op = cell_arch[n, 2 * slot], cell_arch[n, 2 * slot + 1]
      if not reduction:
        y, se = _edge_switch(pe, se, lax.select_n(idx, *states), None, idx, op, False, train)
      else:
        h_full = lax.select_n(jnp.minimum(idx, 1), x0, x1)
        nodes = states[2:]
        h_node = lax.select_n(jnp.clip(idx - 2, 0, len(nodes) - 1), *nodes) if nodes else None
        y, se = _edge_switch(pe, se, h_full, h_node, idx, op, True, train, with_nodes=bool(nodes))
      if scale is not None:
        y = y * ops.per_sample(scale[e], y)
      new_edges.append(se)
      node = y if node is None else node + y
    states.append(node)
  new_s = jax.tree.map(lambda *a: jnp.stack(a), *new_edges)
  return states[2:], new_s


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
  return _apply_op(op, pe, se, _read_input(stride, inputs, nodes, idx_e), stride, train)


def _pullback_branch(op, stride, train, pe, se, inputs, nodes, idx_e, g):
  """VJP of ``_forward_branch`` w.r.t. the edge params and the chosen input.

  Returns ``(d_pe, d_h)``; the caller adds ``d_h`` into the input's slice.
  """
  h = _read_input(stride, inputs, nodes, idx_e)
  _, pull = jax.vjp(lambda q, x: _apply_op(op, q, se, x, stride, train)[0], pe, h)
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
  branches = [functools.partial(_forward_branch, o, st, train) for o, st in _branch_specs(reduction)]

  def body(states, xs):
    pe, se, idx_e, op_e, e, scale_e = xs
    src = (inputs, states) if reduction else (states, None)
    y, se = lax.switch(_which_branch(reduction, idx_e, op_e), branches, pe, se, *src, idx_e)
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
  specs = _branch_specs(reduction)

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
    d_p, d_in, d_node = lax.switch(_which_branch(True, idx_e, op_e), pullbacks, pe, se, inputs, states,
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
    >>> scale = drop_path_scale(jax.random.key(0), arch[0], False, 0.2, 64)  # [10, 64]
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
  return _cell_scan_jit(reduction, num_nodes, train, p, s, x0, x1, idx, op, loose_end_mask(cell_arch), scale)


# The cells of a stage run the same edge scan on the same shapes; as a nested
# jit, the scan and its backward are traced and lowered once per shape instead
# of once per cell (XLA still inlines each call). Measured on the benchmark
# supernet: tracing + lowering the train step 9.9 s -> 7.6 s.
_cell_scan_jit = jax.jit(_cell_scan, static_argnums=(0, 1, 2))


EDGE_LOOP = "scan"  # "scan" or "unroll": see _supernet_cell_scan / _unrolled


def _supernet_cell(p, s, h0, h1, cell_arch, cell, num_nodes, train, scale=None):
  x0, x1, new_s = _preprocess(p, s, h0, h1, cell["reduction_prev"], train)
  if EDGE_LOOP == "scan":
    out, new_s["edges"] = _supernet_cell_scan(p["edges"], s["edges"], x0, x1, cell_arch, cell["reduction"],
                                              num_nodes, train, scale)
    return out, new_s
  nodes, new_s["edges"] = _supernet_cell_unrolled(p["edges"], s["edges"], x0, x1, cell_arch, cell["reduction"],
                                                  num_nodes, train, scale)
  return _cell_output(jnp.stack(nodes), loose_end_mask(cell_arch)), new_s


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
  cfg = _as_config(config)
  chex.assert_rank(x, 4)
  chex.assert_shape(arch, (2, cfg.num_nodes, 4))
  arch = jnp.asarray(arch, jnp.int32)
  new_stats = {}
  h, new_stats["stem"] = _stem(params["stem"], batch_stats["stem"], x, train)
  h0 = h1 = h
  for i, cell in enumerate(cfg.plan()):
    cell_arch = arch[int(cell["reduction"])]
    scale = None
    if rng is not None:
      scale = drop_path_scale(jax.random.fold_in(rng, i), cell_arch, cell["reduction"], drop_prob, x.shape[0])
    out, new_stats[f"cell_{i}"] = _supernet_cell(params[f"cell_{i}"], batch_stats[f"cell_{i}"], h0, h1,
                                                 cell_arch, cell, cfg.num_nodes, train, scale)
    h0, h1 = h1, out
  return _head(params["classifier"], h1), new_stats


default_optimizer = supernet_lib.default_optimizer
init_train_state = supernet_lib.init_train_state


def make_train_step(config: SupernetConfig | dict[str, Any], tx: optax.GradientTransformation,
                    *, donate: bool = True, drop_path: float | Callable = 0.0) -> Callable:
  """One jitted supernet training step that serves every architecture.

  ``train_step(state, arch int32[2, B, 4], (x, y), key) -> (state, {"loss", "acc"})``;
  ``drop_path`` (a probability or a schedule of the step) and the rest as in
  ``nas_jax.networks.supernet.make_train_step``.
  """
  cfg = _as_config(config)
  return supernet_lib.make_train_step(functools.partial(supernet_apply, config=cfg), tx, donate=donate,
                                      drop_path=drop_path)


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
  cfg = _as_config(config)
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
      specs = _branch_specs(reduction)
      if reduction and n == 0:
        specs = specs[:NUM_OPS]  # no node yet: every input is a cell input
      branches = [functools.partial(_eval_branch, o, st, train, reduction) for o, st in specs]
      which = _which_branch(reduction, idx, op) if reduction and n > 0 else op
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
  stem, _ = _stem(params["stem"], batch_stats["stem"], x, train)
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

  Example:
    >>> logits = supernet_eval_apply(params, stats, arch, x, config=cfg, train=True)
  """
  cfg = _as_config(config)
  chex.assert_rank(x, 4)
  chex.assert_shape(arch, (2, cfg.num_nodes, 4))
  arch = jnp.asarray(arch, jnp.int32)
  return _eval_arch(params, batch_stats, arch, _eval_shared(params, batch_stats, x, cfg, train), cfg, train)


# --- continuous relaxation (DARTS / BayesNAS) -------------------------------------------
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
  cfg = _as_config(config)
  c_in = int(input_shape[-1])
  keys = jax.random.split(key, cfg.layers + 2)
  c_stem = cfg.stem_multiplier * cfg.init_channels
  params, stats = {}, {}
  params["stem"], stats["stem"] = _init_stem(keys[0], c_in, c_stem)
  c_pp, c_p = c_stem, c_stem
  n_edges = num_mixed_edges(cfg.num_nodes)
  for i, cell in enumerate(cfg.plan()):
    c = cell["channels"]
    kpre, kn = jax.random.split(keys[i + 1])
    p, s = _init_preprocess(kpre, c_pp, c_p, c, cell["reduction_prev"])
    p["edges"], s["edges"] = _stacked(lambda k: _init_edge(k, c, cell["reduction"], True),
                                      jax.random.split(kn, n_edges))
    params[f"cell_{i}"], stats[f"cell_{i}"] = p, s
    c_pp, c_p = c_p, cfg.num_nodes * c
  params["classifier"] = _init_head(keys[-1], c_p, cfg.num_classes)
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
  cfg = _as_config(config)
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
    y, se = _apply_op(o, pe, se, h, stride, train)
    out = out + w[o] * y
  return out, se


def continuous_cell(p: Params, s: Params, x0: jax.Array, x1: jax.Array, weights: jax.Array, *,
                    reduction: bool, num_nodes: int, train: bool,
                    loop: str = "scan") -> tuple[jax.Array, Params]:
  """One relaxed cell after preprocessing: every op of every edge runs.

  Args:
    p, s: the cell's ``"edges"`` params/stats (leading axis E).
    x0, x1: preprocessed cell inputs ``[N, H, W, C]``.
    weights: float32[E, 5] op weights (already softmaxed or raw switches).
    reduction: strided ops on the cell inputs.
    num_nodes: B.
    train: BN mode.
    loop: "scan" (one ``lax.scan`` over the E edges: compiled once per cell)
      or "unroll" (Python loops).

  Returns:
    ``(concat of all B nodes, new edge stats)``.
  """
  n_edges = num_mixed_edges(num_nodes)
  chex.assert_shape(weights, (n_edges, NUM_OPS))
  if loop == "unroll":
    states, new_edges = [x0, x1], []
    for n in range(num_nodes):
      node = 0.0
      for inp in range(n + 2):
        e = edge_index(n, inp)
        pe, se = jax.tree.map(lambda a: a[e], (p, s))
        y, se = _mixed_op(pe, se, states[inp], weights[e], 2 if reduction and inp < 2 else 1, train)
        node = node + y
        new_edges.append(se)
      states.append(node)
    return jnp.concatenate(states[2:], axis=-1), jax.tree.map(lambda *a: jnp.stack(a), *new_edges)
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
  cfg = _as_config(config)
  _check_mode(mode)
  chex.assert_rank(x, 4)
  chex.assert_shape(arch_params, (2, num_mixed_edges(cfg.num_nodes), NUM_OPS))
  weights = jax.nn.softmax(arch_params, axis=-1) if mode == "softmax" else arch_params
  new_stats = {}
  h, new_stats["stem"] = _stem(params["stem"], batch_stats["stem"], x, train)
  h0 = h1 = h
  for i, cell in enumerate(cfg.plan()):
    p, s = params[f"cell_{i}"], batch_stats[f"cell_{i}"]
    x0, x1, ns = _preprocess(p, s, h0, h1, cell["reduction_prev"], train)
    out, ns["edges"] = continuous_cell(p["edges"], s["edges"], x0, x1, weights[int(cell["reduction"])],
                                       reduction=cell["reduction"], num_nodes=cfg.num_nodes, train=train)
    new_stats[f"cell_{i}"] = ns
    h0, h1 = h1, out
  return _head(params["classifier"], h1), new_stats


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


# --- child network ------------------------------------------------------------------
def _child_channels(cfg: SupernetConfig, arch: np.ndarray) -> list[dict[str, Any]]:
  """The supernet plan plus, per cell, its loose ends and input/output widths."""
  plan = cfg.plan()
  c_stem = cfg.stem_multiplier * cfg.init_channels
  c_pp, c_p = c_stem, c_stem
  for cell in plan:
    loose = _loose_ends_np(arch[int(cell["reduction"])])
    cell.update(loose=loose, c_pp=c_pp, c_p=c_p)
    c_pp, c_p = c_p, len(loose) * cell["channels"]
  return plan


def _init_child_cell(key, cell, cell_arch, num_nodes):
  c = cell["channels"]
  kpre, kn = jax.random.split(key)
  p, s = _init_preprocess(kpre, cell["c_pp"], cell["c_p"], c, cell["reduction_prev"])
  node_keys = jax.random.split(kn, num_nodes * 2)
  for n in range(num_nodes):
    for slot in range(2):
      inp, op = int(cell_arch[n, 2 * slot]), int(cell_arch[n, 2 * slot + 1])
      strided = cell["reduction"] and inp < 2
      k = node_keys[2 * n + slot]
      if op in (SEP3, SEP5):
        p[f"node{n}_{slot}"], s[f"node{n}_{slot}"] = ops.init_sep_conv(k, c, c, 3 if op == SEP3 else 5)
      elif op == IDENTITY and strided:
        p[f"node{n}_{slot}"], s[f"node{n}_{slot}"] = ops.init_factorized_reduce(k, c, c)
  return p, s


def _child_cell(p, s, h0, h1, cell, cell_arch, num_nodes, train, drop_prob, rng):
  x0, x1, new_s = _preprocess(p, s, h0, h1, cell["reduction_prev"], train)
  states = [x0, x1]
  for n in range(num_nodes):
    node = None
    for slot in range(2):
      inp, op = int(cell_arch[n, 2 * slot]), int(cell_arch[n, 2 * slot + 1])
      stride = 2 if cell["reduction"] and inp < 2 else 1
      key = f"node{n}_{slot}"
      h = states[inp]
      if op in (SEP3, SEP5):
        y, new_s[key] = ops.sep_conv(p[key], s[key], h, train=train, stride=stride)
      elif op == AVG:
        y = ops.avg_pool(h, stride)
      elif op == MAX:
        y = ops.max_pool(h, stride)
      elif stride == 1:
        y = h
      else:
        y, new_s[key] = ops.factorized_reduce(p[key], s[key], h, train=train)
      if rng is not None and not (op == IDENTITY and stride == 1):
        y = ops.drop_path(rng(), y, drop_prob)
      node = y if node is None else node + y
    states.append(node)
  out = jnp.concatenate([states[2 + j] for j in cell["loose"]], axis=-1)
  return out, new_s


def _init_aux(key, c_in, num_classes):
  k1, k2 = jax.random.split(key)
  p, s = ops.init_relu_conv_bn(k1, c_in, 128, 1)
  return {"conv": p, "classifier": ops.init_dense(k2, 128, num_classes)}, {"conv": s}


def _aux(p, s, h, train):
  h, new_s = ops.relu_conv_bn(p["conv"], s["conv"], h, train=train)
  return ops.dense(p["classifier"], jnp.mean(jax.nn.relu(h), axis=(1, 2))), {"conv": new_s}


class NasNetChild(nn.Module):
  """The fixed child network of one ``nasnet`` architecture.

  Same macro structure and op functions as the supernet. Auxiliary head
  (optional, after the second reduction cell; size-agnostic so that 8x8 inputs
  work): ReLU-conv1x1(128)-BN-ReLU-global-average-pool-linear. Drop-path
  (rng stream ``drop_path``) on every non-identity op output when
  ``train and drop_prob > 0``.

  Attributes:
    arch: the architecture as nested tuples of ints (``int32[2, B, 4]``).
    num_classes, init_channels, layers, stem_multiplier, num_nodes: see
      ``SupernetConfig``.
    auxiliary: add the auxiliary head (its logits are returned in train mode).
  """
  arch: tuple
  num_classes: int = 10
  init_channels: int = 16
  layers: int = 8
  stem_multiplier: int = 3
  num_nodes: int = 5
  auxiliary: bool = False

  def config(self) -> SupernetConfig:
    return SupernetConfig(self.num_classes, self.init_channels, self.layers, self.num_nodes,
                          self.stem_multiplier)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, drop_prob: float = 0.0):
    chex.assert_rank(x, 4)
    if min(x.shape[1], x.shape[2]) < 1:
      raise ValueError(f"empty image shape {x.shape}")
    cfg = self.config()
    arch = np.asarray(self.arch, np.int32)
    plan = _child_channels(cfg, arch)
    c_in = x.shape[-1]
    update = train and self.is_mutable_collection("batch_stats")
    rng = None
    if train and not (isinstance(drop_prob, (int, float)) and drop_prob == 0.0):
      rng = lambda: self.make_rng("drop_path")

    def module(name, init_fn):
      p = self.param(name, lambda key: init_fn(key)[0])
      s = self.variable("batch_stats", name, lambda: init_fn(self.make_rng("params"))[1])
      return p, s

    c_stem = cfg.stem_multiplier * cfg.init_channels
    p, s = module("stem", lambda k: _init_stem(k, c_in, c_stem))
    h, new = _stem(p, s.value, x, train)
    if update:
      s.value = new
    h0 = h1 = h
    aux_logits = None
    for i, cell in enumerate(plan):
      cell_arch = arch[int(cell["reduction"])]
      p, s = module(f"cell_{i}", functools.partial(_init_child_cell_key, cell=cell, cell_arch=cell_arch,
                                                   num_nodes=cfg.num_nodes))
      out, new = _child_cell(p, s.value, h0, h1, cell, cell_arch, cfg.num_nodes, train, drop_prob, rng)
      if update:
        s.value = new
      h0, h1 = h1, out
      if self.auxiliary and i == 2 * cfg.layers // 3:
        c_aux = out.shape[-1]
        pa, sa = module("aux", lambda k: _init_aux(k, c_aux, cfg.num_classes))
        if train:
          aux_logits, new = _aux(pa, sa.value, out, train)
          if update:
            sa.value = new
        elif self.is_initializing():
          _aux(pa, sa.value, out, train)
    c_last = h1.shape[-1]
    p_head = self.param("classifier", lambda key: _init_head(key, c_last, cfg.num_classes))
    return _head(p_head, h1), aux_logits


def _init_child_cell_key(key, *, cell, cell_arch, num_nodes):
  return _init_child_cell(key, cell, cell_arch, num_nodes)


def build_child(space: Any, arch: Any, *, num_classes: int, init_channels: int = 16, layers: int = 8,
                auxiliary: bool = False, stem_multiplier: int = 3, **unused: Any) -> NasNetChild:
  """The child network of ``arch`` (a flax module, see ``NasNetChild``).

  Args:
    space: the ``nasnet`` search space (used to validate ``arch`` when it has
      a ``validate`` method).
    arch: int32[2, B, 4].
    num_classes, init_channels, layers, auxiliary, stem_multiplier: network
      settings; other keyword arguments are ignored.

  Returns:
    ``NasNetChild``; ``apply(variables, x, train=..., drop_prob=...)`` returns
    ``(logits, aux_logits or None)``.
  """
  del unused
  a = np.asarray(space.validate(arch)) if hasattr(space, "validate") else np.asarray(arch)
  a = check_arch(a, a.shape[1] if a.ndim == 3 else 5)
  arch_t = tuple(tuple(tuple(int(v) for v in node) for node in cell) for cell in a)
  return NasNetChild(arch=arch_t, num_classes=num_classes, init_channels=init_channels, layers=layers,
                     stem_multiplier=stem_multiplier, num_nodes=a.shape[1], auxiliary=auxiliary)


def _rows(loose: list[int], c: int) -> np.ndarray:
  return np.concatenate([np.arange(j * c, (j + 1) * c) for j in loose])


def _slice_pre(p: Params, rows: np.ndarray) -> Params:
  p = dict(p)
  if "w" in p:
    p["w"] = p["w"][:, :, rows, :]
  else:
    p["w1"], p["w2"] = p["w1"][rows], p["w2"][rows]
  return p


def child_variables_from_supernet(arch: Any, params: Params, batch_stats: Params,
                                  config: SupernetConfig | dict[str, Any],
                                  child_variables: dict[str, Any] | None = None) -> dict[str, Any]:
  """Variables of the child of ``arch`` taken from the supernet's weights.

  The child then computes exactly the supernet's function for ``arch``
  (``train=False`` with the supernet's running statistics, or ``train=True``
  with batch statistics).

  Args:
    arch: int32[2, B, 4] (concrete).
    params, batch_stats: weight-sharing supernet pytrees (``init_supernet``).
    config: the supernet's ``SupernetConfig``.
    child_variables: variables of an initialised child; required when the child
      has an auxiliary head (not in the supernet), whose weights are kept.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` for ``build_child(...).apply``.
  """
  cfg = _as_config(config)
  a = check_arch(arch, cfg.num_nodes)
  plan = _child_channels(cfg, a)
  out_p = {"stem": params["stem"], "classifier": None}
  out_s = {"stem": batch_stats["stem"]}
  prev_loose = [None, None]  # loose ends of the cells producing h0, h1 (None: stem)
  prev_c = [None, None]
  for i, cell in enumerate(plan):
    sp, ss = params[f"cell_{i}"], batch_stats[f"cell_{i}"]
    p = {"pre0": sp["pre0"], "pre1": sp["pre1"]}
    s = {"pre0": ss["pre0"], "pre1": ss["pre1"]}
    if prev_loose[0] is not None:
      p["pre0"] = _slice_pre(sp["pre0"], _rows(prev_loose[0], prev_c[0]))
    if prev_loose[1] is not None:
      p["pre1"] = _slice_pre(sp["pre1"], _rows(prev_loose[1], prev_c[1]))
    cell_arch = a[int(cell["reduction"])]
    for n in range(cfg.num_nodes):
      for slot in range(2):
        inp, op = int(cell_arch[n, 2 * slot]), int(cell_arch[n, 2 * slot + 1])
        key = f"node{n}_{slot}"
        name = {SEP3: "sep3", SEP5: "sep5"}.get(op)
        if op == IDENTITY and cell["reduction"] and inp < 2:
          name = "fr"
        if name is not None:
          e = 2 * n + slot
          p[key], s[key] = jax.tree.map(lambda a: a[e], (sp["edges"][name], ss["edges"][name]))
    out_p[f"cell_{i}"], out_s[f"cell_{i}"] = p, s
    prev_loose = [prev_loose[1], cell["loose"]]
    prev_c = [prev_c[1], cell["channels"]]
  head = dict(params["classifier"])
  head["w"] = head["w"][_rows(prev_loose[1], prev_c[1])]
  out_p["classifier"] = head
  if "aux" in (child_variables or {}).get("params", {}):
    out_p["aux"] = child_variables["params"]["aux"]
    out_s["aux"] = child_variables["batch_stats"]["aux"]
  return {"params": out_p, "batch_stats": out_s}
