"""Networks of the ``darts`` space: the evaluation network and the continuous relaxation.

Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019;
the authors' code (github.com/quark0/darts, ``cnn/model.py``,
``cnn/model_search.py``, ``cnn/operations.py``) fixes the details below.

Architecture (``nas_jax.spaces.darts``): ``int32[2, 4, 4]`` indexed
``[cell (0 normal, 1 reduction), node, (input0, op0, input1, op1)]``; inputs
0, 1 are the cell inputs ``c_{k-2}, c_{k-1}``, ``2 + j`` is node ``j``; op ids
index ``spaces.darts.OPS``. Every cell concatenates its 4 nodes.

Macro structure (both networks, DARTS ``NetworkCIFAR`` / ``Network``): stem
conv3x3(``stem_multiplier * C``)-BN; ``layers`` cells with reductions
(channels doubled, ops on the cell inputs at stride 2) at ``layers // 3`` and
``2 * layers // 3``; each cell maps its inputs to C channels with
ReLU-conv1x1-BN (a factorized reduce for ``c_{k-2}`` after a reduction); global
average pooling and a linear classifier.

Ops (``cnn/operations.py``): ``sep_conv_kxk`` = (ReLU-dw(k)-pw-BN) twice, the
first depthwise strided; ``dil_conv_kxk`` = ReLU-dw(k, dilation 2)-pw-BN;
pools 3x3 (average without the padded cells); ``skip_connect`` = identity, or a
factorized reduce at stride 2; ``none`` (relaxation only) = zeros.

Evaluation network (``build_child`` -> ``DartsChild``): the ops above with
affine batch norms and no batch norm after the pools; drop-path on every
branch but a stride-1 ``skip_connect``; optional auxiliary head after cell
``2 * layers // 3`` (DARTS ``AuxiliaryHeadCIFAR``: ReLU-avgpool5/3-conv1x1(128)
-BN-ReLU-conv2x2(768)-BN-ReLU-linear; on maps smaller than 8x8 its windows
shrink to fit).

Continuous relaxation (``CONTINUOUS``, DARTS's search network): every node is
connected to every earlier state (14 edges per cell, ordered node by node
and input by input as in DARTS, ``edge_index``), each edge a mixed op
``sum_o w[o] * op_o(x)`` over the 8 ops of ``OP_NAMES`` (``none`` first); the
weights ``float[2, 14, 8]`` are given already transformed (DARTS: softmax of
the alphas). All batch norms but the stem's have no affine parameters and
the pools are followed by one (``model_search.py``: ``affine=False``).

Program structure of the relaxation, chosen by measurement (2-core CPU shared
with other jobs, jax 0.10, CPU kernels; compile / median step of
forward+backward w.r.t. params and weights): each cell runs its 8 edges from
the cell inputs in one ``lax.scan`` and its 6 edges from earlier nodes in
another (``edge_loop="scan"``), so the mixed op is compiled twice per cell.

  - C=4, 3 cells, batch 8, 16x16 (load ~1.2): scan 22 s / 0.095 s; unrolled
    edges 304 s / 0.28 s.
  - C=16, 8 cells, batch 64, 32x32 (DARTS's search network; load ~7): scan
    23 s trace + 99 s compile / 28.6 s per step. Same process, load ~10,
    against the nasnet family's relaxation (20 edges of 5 ops) at the same
    size: 162 vs 115 s trace+compile, step time ratio 0.96-1.01 (30 s each).

One scan of all 14 edges in normal cells (a 6-state buffer) compiled no
faster (69 s vs 62 s, 3 cells, loaded). The step is bound by the ops: one
mixed edge at 32x32x16, batch 64, costs 1.4-1.7x the sum of its 7 ops run
alone, and the 8-cell step is about the sum of its edges.

Nested derivatives (DARTS's second-order step, ``jax.hessian``) inside the
edge scans need ``ops.implementation(fusion=False)`` until the fused
separable-conv primitive (``kernels.fused.relu_conv_moments_p``) has a JVP
rule of its own: JAX's partial evaluation of a scan inlines the custom-JVP
function around it, and a second derivative then meets the bare primitive.

Example:
    >>> from nas_jax.spaces.darts import DartsSpace, PUBLISHED
    >>> space = DartsSpace()
    >>> arch = space.from_genotype(PUBLISHED["DARTS_V2"])
    >>> model = FAMILY.build_child(space, arch, num_classes=10, init_channels=36, layers=20, auxiliary=True)
    >>> child_cost(arch, init_channels=36, layers=20)  # DARTS's CIFAR-10 network: 3.3M parameters
    {'flops': 528359040, 'params': 3349342}
    >>> cfg = CONTINUOUS.config(init_channels=4, layers=3)
    >>> CONTINUOUS.weights_shape(cfg), CONTINUOUS.op_names[0]
    ((2, 14, 8), 'none')
    >>> w = CONTINUOUS.one_hot_weights(arch, cfg)  # the relaxation's weights that select arch
    >>> bool((CONTINUOUS.derive(w, cfg) == space.canonical(arch)).all())
    True

  Running them (not run here: each compiles for several seconds, the
  relaxation's forward+backward for tens of seconds)::

    variables = model.init({"params": jax.random.key(0)}, x, train=False)
    logits, aux = model.apply(variables, x, train=False)
    params, stats = CONTINUOUS.init(jax.random.key(0), cfg, (8, 8, 1))
    w = jax.nn.softmax(alphas, axis=-1)                    # alphas: float[2, 14, 8]
    logits, stats = CONTINUOUS.apply(params, stats, w, x, config=cfg, train=True)
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nas_jax import ops
from nas_jax.spaces import darts as space_lib

Params = dict[str, Any]

NUM_NODES = space_lib.NUM_NODES
#: Ops of the relaxation, in DARTS's ``PRIMITIVES`` order (``cnn/genotypes.py``):
#: index ``o + 1`` is the space's op ``o``.
OP_NAMES: tuple[str, ...] = ("none",) + space_lib.OPS
NUM_RELAXED_OPS = len(OP_NAMES)
_NODE_OFFSETS = tuple(sum(i + 2 for i in range(n)) for n in range(NUM_NODES))  # (0, 2, 5, 9)
NUM_EDGES = sum(i + 2 for i in range(NUM_NODES))  # 14
_KERNEL = {"sep_conv_3x3": 3, "sep_conv_5x5": 5, "dil_conv_3x3": 3, "dil_conv_5x5": 5}
_BN_KEYS = ("bn", "bn1", "bn2")  # batch-norm entries of the ops' params (dropped where affine=False)


def edge_index(node: int, inp: int) -> int:
  """Position of the edge ``inp -> node`` on axis 1 of the relaxation's weights (DARTS order).

  Example:
    >>> edge_index(3, 4)
    13
  """
  if not (0 <= node < NUM_NODES and 0 <= inp <= node + 1):
    raise ValueError(f"edge {inp} -> node {node}: need node in 0..{NUM_NODES - 1} and input in 0..{node + 1}")
  return _NODE_OFFSETS[node] + inp


# Edges of a cell in two groups: those reading a cell input (strided in a
# reduction cell), node-major, and those reading an earlier node.
_INPUT_EDGES = tuple((n, i) for n in range(NUM_NODES) for i in range(2))
_NODE_EDGES = tuple((n, i) for n in range(NUM_NODES) for i in range(2, n + 2))


@dataclasses.dataclass(frozen=True)
class DartsConfig:
  """Macro settings of the relaxed network (and of the child's channel plan).

  Attributes:
    num_classes: classifier outputs.
    init_channels: C of the first stage (DARTS search: 16, ``train_search.py``).
    layers: number of cells (DARTS search: 8).
    stem_multiplier: the stem outputs ``stem_multiplier * C`` channels (DARTS: 3).
    edge_loop: how the relaxed cell runs its 14 edges: "scan" (two
      ``lax.scan``s per cell, over the 8 edges from the cell inputs and the 6
      from earlier nodes: one compiled mixed op per scan) or "unroll" (every
      edge traced separately: 14x slower to compile, 3x slower to run on
      CPU; see the module docstring).
  """
  num_classes: int = 10
  init_channels: int = 16  # DARTS train_search.py --init_channels
  layers: int = 8  # DARTS train_search.py --layers
  stem_multiplier: int = 3  # DARTS model_search.Network(stem_multiplier=3)
  edge_loop: str = "scan"

  def __post_init__(self):
    for name in ("num_classes", "init_channels", "layers", "stem_multiplier"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"darts config {name} must be a positive int, got {value!r}")
    if self.init_channels < 2:
      raise ValueError(f"darts config init_channels must be >= 2 (factorized reduce), got {self.init_channels}")
    if self.edge_loop not in ("scan", "unroll"):
      raise ValueError(f"darts config edge_loop must be 'scan' or 'unroll', got {self.edge_loop!r}")

  @property
  def reduction_layers(self) -> tuple[int, ...]:
    return tuple(sorted({self.layers // 3, 2 * self.layers // 3}))

  def plan(self) -> list[dict[str, Any]]:
    """Per cell: ``reduction``, ``reduction_prev``, ``channels`` (C of the cell), ``c_pp``, ``c_p`` (input widths)."""
    cells, c, reduction_prev = [], self.init_channels, False
    c_pp = c_p = self.stem_multiplier * self.init_channels
    for i in range(self.layers):
      reduction = i in self.reduction_layers
      if reduction:
        c *= 2
      cells.append({"reduction": reduction, "reduction_prev": reduction_prev, "channels": c, "c_pp": c_pp,
                    "c_p": c_p})
      reduction_prev = reduction
      c_pp, c_p = c_p, NUM_NODES * c
    return cells


# --- ops ------------------------------------------------------------------------------
def _unit_bn(c: int) -> Params:
  """Scale 1, bias 0: a batch norm without affine parameters (DARTS ``affine=False``)."""
  return {"scale": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}


def _drop_affine(params: Params) -> Params:
  return {k: v for k, v in params.items() if k not in _BN_KEYS}


def _with_unit_bn(params: Params, stats: Params, c: int) -> Params:
  """``params`` plus constant unit batch norms for every BN entry of ``stats``."""
  return {**params, **{k: _unit_bn(c) for k in stats if k in _BN_KEYS}}


def _init_op(key: jax.Array, name: str, c: int, stride: int, search: bool) -> tuple[Params, Params]:
  """``(params, stats)`` of one op on C channels. ``search``: DARTS's search ops
  (no affine BN parameters, a BN after each pool)."""
  if name in ("max_pool_3x3", "avg_pool_3x3"):
    p, s = ({}, {"bn": ops.init_bn(c)[1]}) if search else ({}, {})
  elif name == "skip_connect":
    p, s = ops.init_factorized_reduce(key, c, c) if stride > 1 else ({}, {})
  elif name.startswith("sep_conv"):
    p, s = ops.init_sep_conv(key, c, c, _KERNEL[name])
  elif name.startswith("dil_conv"):
    p, s = ops.init_dil_conv(key, c, c, _KERNEL[name])
  else:
    raise ValueError(f"unknown darts op {name!r}; choose one of {list(OP_NAMES[1:])}")
  return (_drop_affine(p) if search else p), s


def _apply_op(name: str, p: Params, s: Params, h: jax.Array, *, stride: int, train: bool,
              search: bool) -> tuple[jax.Array, Params]:
  """One op; ``(y, new_stats)``. ``search`` as in ``_init_op``."""
  c = h.shape[-1]
  if search:
    p = _with_unit_bn(p, s, c)
  if name in ("max_pool_3x3", "avg_pool_3x3"):
    y = ops.max_pool(h, stride) if name == "max_pool_3x3" else ops.avg_pool(h, stride)
    if not search:
      return y, s
    y, bn_s = ops.batch_norm(p["bn"], s["bn"], y, train=train)
    return y, {"bn": bn_s}
  if name == "skip_connect":
    return (h, s) if stride == 1 else ops.factorized_reduce(p, s, h, train=train)
  if name.startswith("sep_conv"):
    return ops.sep_conv(p, s, h, train=train, stride=stride)
  return ops.dil_conv(p, s, h, train=train, stride=stride, dilation=2)


def _init_stem(key, c_in, c_out):
  return ops.init_relu_conv_bn(key, c_in, c_out, kernel=3)


def _stem(p, s, x, train):
  return ops.relu_conv_bn(p, s, x, train=train, relu=False, conv_impl=ops.stem_conv_impl())


def _init_preprocess(key, cell, search):
  k0, k1 = jax.random.split(key)
  c = cell["channels"]
  if cell["reduction_prev"]:
    p0, s0 = ops.init_factorized_reduce(k0, cell["c_pp"], c)
  else:
    p0, s0 = ops.init_relu_conv_bn(k0, cell["c_pp"], c, 1)
  p1, s1 = ops.init_relu_conv_bn(k1, cell["c_p"], c, 1)
  if search:
    p0, p1 = _drop_affine(p0), _drop_affine(p1)
  return {"pre0": p0, "pre1": p1}, {"pre0": s0, "pre1": s1}


def _preprocess(p, s, h0, h1, cell, train, search):
  c = cell["channels"]
  p0, p1 = p["pre0"], p["pre1"]
  if search:
    p0, p1 = _with_unit_bn(p0, s["pre0"], c), _with_unit_bn(p1, s["pre1"], c)
  if cell["reduction_prev"]:
    x0, t0 = ops.factorized_reduce(p0, s["pre0"], h0, train=train)
  else:
    x0, t0 = ops.relu_conv_bn(p0, s["pre0"], h0, train=train)
  x1, t1 = ops.relu_conv_bn(p1, s["pre1"], h1, train=train)
  return x0, x1, {"pre0": t0, "pre1": t1}


def _head(p, h):
  return ops.dense(p, jnp.mean(h, axis=(1, 2)))


# --- evaluation network (NetworkCIFAR) ---------------------------------------------------
def check_arch(arch: Any) -> np.ndarray:
  """``arch`` validated by the darts space, as int32 numpy."""
  return space_lib.DartsSpace().validate(arch)


def _init_child_cell(key, *, cell, cell_arch):
  p, s = _init_preprocess(jax.random.fold_in(key, 0), cell, search=False)
  for k in range(2 * NUM_NODES):
    n, slot = divmod(k, 2)
    inp, op = int(cell_arch[n, 2 * slot]), space_lib.OPS[int(cell_arch[n, 2 * slot + 1])]
    stride = 2 if cell["reduction"] and inp < 2 else 1
    pk, sk = _init_op(jax.random.fold_in(key, k + 1), op, cell["channels"], stride, search=False)
    if pk or sk:
      p[f"op{k}"], s[f"op{k}"] = pk, sk
  return p, s


def _child_cell(p, s, h0, h1, cell, cell_arch, train, drop_prob, rng):
  x0, x1, new_s = _preprocess(p, s, h0, h1, cell, train, search=False)
  states = [x0, x1]
  for n in range(NUM_NODES):
    node = None
    for slot in range(2):
      k = 2 * n + slot
      inp, op = int(cell_arch[n, 2 * slot]), space_lib.OPS[int(cell_arch[n, 2 * slot + 1])]
      stride = 2 if cell["reduction"] and inp < 2 else 1
      y, sk = _apply_op(op, p.get(f"op{k}", {}), s.get(f"op{k}", {}), states[inp], stride=stride, train=train,
                        search=False)
      if sk:
        new_s[f"op{k}"] = sk
      if rng is not None and not (op == "skip_connect" and stride == 1):  # DARTS: not on Identity
        y = ops.drop_path(rng(), y, drop_prob)
      node = y if node is None else node + y
    states.append(node)
  return jnp.concatenate(states[2:], axis=-1), new_s


def _aux_windows(h: int, w: int) -> tuple[int, int]:
  """(pool window, conv kernel) of the auxiliary head on an ``h x w`` map.

  DARTS (``AuxiliaryHeadCIFAR``, "assuming input size 8x8"): average pool 5
  stride 3 (8x8 -> 2x2), then a 2x2 convolution (-> 1x1). Smaller maps (tiny
  test images) get the largest windows that fit.
  """
  pool = min(5, h, w)
  out = (min(h, w) - pool) // 3 + 1
  return pool, min(2, out)


def _init_aux(key, c_in, num_classes, conv_kernel):
  k1, k2, k3 = jax.random.split(key, 3)
  p1, s1 = ops.init_relu_conv_bn(k1, c_in, 128, 1)  # DARTS AuxiliaryHeadCIFAR: 128, then 768 channels
  p2, s2 = ops.init_relu_conv_bn(k2, 128, 768, conv_kernel)
  return ({"conv1": p1, "conv2": p2, "classifier": ops.init_dense(k3, 768, num_classes)},
          {"conv1": s1, "conv2": s2})


def _aux(p, s, h, train):
  pool, _ = _aux_windows(h.shape[1], h.shape[2])
  h = lax.reduce_window(jax.nn.relu(h), 0.0, lax.add, (1, pool, pool, 1), (1, 3, 3, 1), "VALID") / (pool * pool)
  h, s1 = ops.relu_conv_bn(p["conv1"], s["conv1"], h, train=train, relu=False)
  h, s2 = ops.relu_conv_bn(p["conv2"], s["conv2"], h, train=train)  # ReLU, 2x2 'valid' conv, BN
  logits = ops.dense(p["classifier"], jnp.mean(jax.nn.relu(h), axis=(1, 2)))
  return logits, {"conv1": s1, "conv2": s2}


class DartsChild(nn.Module):
  """The DARTS evaluation network (``NetworkCIFAR``) of one ``darts`` architecture.

  Attributes:
    arch: the architecture as nested tuples of ints (``int32[2, 4, 4]``).
    num_classes, init_channels, layers, stem_multiplier: as in ``DartsConfig``
      (DARTS's CIFAR-10 evaluation network: C=36, 20 layers, ``train.py``).
    auxiliary: add the auxiliary head (its logits are returned in train mode).
  """
  arch: tuple
  num_classes: int = 10
  init_channels: int = 16  # DARTS train_search.py (train.py evaluates at 36)
  layers: int = 8  # DARTS train_search.py (train.py evaluates at 20)
  stem_multiplier: int = 3  # DARTS NetworkCIFAR: stem_multiplier = 3
  auxiliary: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, drop_prob: float = 0.0):
    chex.assert_rank(x, 4)
    if min(x.shape[1], x.shape[2]) < 1:
      raise ValueError(f"empty image shape {x.shape}")
    cfg = DartsConfig(self.num_classes, self.init_channels, self.layers, self.stem_multiplier)
    arch = np.asarray(self.arch, np.int32)
    update = train and self.is_mutable_collection("batch_stats")
    rng = None
    if train and not (isinstance(drop_prob, (int, float)) and drop_prob == 0.0):
      rng = lambda: self.make_rng("drop_path")

    def module(name, init_fn):
      made = []  # one init_fn call gives both collections (its stats do not depend on the key)

      def init(key):
        if not made:
          made.append(init_fn(key))
        return made[0]

      p = self.param(name, lambda key: init(key)[0])
      s = self.variable("batch_stats", name, lambda: init(self.make_rng("params"))[1])
      return p, s

    c_stem = cfg.stem_multiplier * cfg.init_channels
    p, s = module("stem", lambda k: _init_stem(k, x.shape[-1], c_stem))
    h, new = _stem(p, s.value, x, train)
    if update:
      s.value = new
    h0 = h1 = h
    aux_logits = None
    for i, cell in enumerate(cfg.plan()):
      cell_arch = arch[int(cell["reduction"])]
      p, s = module(f"cell_{i}", functools.partial(_init_child_cell, cell=cell, cell_arch=cell_arch))
      out, new = _child_cell(p, s.value, h0, h1, cell, cell_arch, train, drop_prob, rng)
      if update:
        s.value = new
      h0, h1 = h1, out
      if self.auxiliary and i == 2 * cfg.layers // 3:  # DARTS: after the second reduction cell
        _, conv_kernel = _aux_windows(out.shape[1], out.shape[2])
        c_aux = out.shape[-1]
        pa, sa = module("aux", lambda k: _init_aux(k, c_aux, cfg.num_classes, conv_kernel))
        if train:
          aux_logits, new = _aux(pa, sa.value, out, train)
          if update:
            sa.value = new
        elif self.is_initializing():
          _aux(pa, sa.value, out, train)
    c_last = h1.shape[-1]
    p_head = self.param("classifier", lambda key: ops.init_dense(key, c_last, cfg.num_classes))
    return _head(p_head, h1), aux_logits


def build_child(space: Any, arch: Any, *, num_classes: int, init_channels: int = 16, layers: int = 8,
                auxiliary: bool = False, stem_multiplier: int = 3, **unused: Any) -> DartsChild:
  """The DARTS evaluation network of ``arch`` (a flax module, see ``DartsChild``).

  Args:
    space: the ``darts`` search space (validates ``arch``).
    arch: int32[2, 4, 4].
    num_classes, init_channels, layers, auxiliary, stem_multiplier: network
      settings (defaults: the size of DARTS's search network, as the other
      families; DARTS's CIFAR-10 evaluation uses C=36, 20 layers and the
      auxiliary head); other keyword arguments are ignored.

  Returns:
    ``DartsChild``; ``apply(variables, x, train=..., drop_prob=..., rngs={"drop_path": k})``
    returns ``(logits, aux_logits or None)``.

  Example:
    >>> from nas_jax.spaces.darts import DartsSpace, PUBLISHED
    >>> arch = DartsSpace().from_genotype(PUBLISHED["DARTS_V1"])
    >>> model = build_child(DartsSpace(), arch, num_classes=10, init_channels=16, layers=8)
    >>> model.layers, model.auxiliary, model.arch[0][0]  # normal cell, node 0: (input, op) x 2
    (8, False, (1, 3, 0, 3))
  """
  del unused
  a = np.asarray(space.validate(arch)) if hasattr(space, "validate") else check_arch(arch)
  arch_t = tuple(tuple(tuple(int(v) for v in node) for node in cell) for cell in a)
  return DartsChild(arch=arch_t, num_classes=num_classes, init_channels=init_channels, layers=layers,
                    stem_multiplier=stem_multiplier, auxiliary=auxiliary)


def child_cost(arch: Any, *, num_classes: int = 10, init_channels: int = 16, layers: int = 8, stem_multiplier: int = 3,
               input_shape: tuple[int, int, int] = (32, 32, 3), **unused: Any) -> dict[str, int]:
  """Closed-form FLOPs and parameters of the child of ``arch`` (auxiliary head excluded).

  The convention of ``nas_jax.cost.count_cost`` (multiply-adds of convolutions
  and the classifier on one image; every trainable parameter), which it
  equals (tested) in microseconds instead of seconds of tracing.

  Args:
    arch: int32[2, 4, 4].
    num_classes, init_channels, layers, stem_multiplier: as ``build_child``.
    input_shape: ``(H, W, C)`` of one image.

  Returns:
    ``{"flops": int, "params": int}``; DARTS V2 at C=36, 20 cells, 32x32:
    528,359,040 and 3,349,342 (DARTS reports 3.3 M parameters).

  Example:
    >>> from nas_jax.spaces.darts import DartsSpace, PUBLISHED
    >>> child_cost(DartsSpace().from_genotype(PUBLISHED["DARTS_V2"]), init_channels=36, layers=20)["params"]
    3349342
  """
  del unused
  a = check_arch(arch)
  h, w, c_in = (int(v) for v in input_shape)
  cfg = DartsConfig(num_classes, init_channels, layers, stem_multiplier)
  c_stem = stem_multiplier * init_channels
  flops, params = h * w * 9 * c_in * c_stem, 9 * c_in * c_stem + 2 * c_stem
  size_pp = size_p = (h, w)
  for cell in cfg.plan():
    c, c_pp, c_p = cell["channels"], cell["c_pp"], cell["c_p"]
    area_p = size_p[0] * size_p[1]
    # preprocess0: a 1x1 conv at c_{k-2}'s size, or a factorized reduce to c_{k-1}'s size (same MACs per output).
    flops += (area_p if cell["reduction_prev"] else size_pp[0] * size_pp[1]) * c_pp * c + area_p * c_p * c
    params += (c_pp * c + 2 * c) + (c_p * c + 2 * c)
    out = ((size_p[0] + 1) // 2, (size_p[1] + 1) // 2) if cell["reduction"] else size_p
    area = out[0] * out[1]
    cell_arch = a[int(cell["reduction"])]
    for n in range(NUM_NODES):
      for slot in range(2):
        inp, op = int(cell_arch[n, 2 * slot]), space_lib.OPS[int(cell_arch[n, 2 * slot + 1])]
        if op in _KERNEL:
          halves = 2 if op.startswith("sep_conv") else 1
          k = _KERNEL[op]
          flops += halves * area * (k * k * c + c * c)
          params += halves * (k * k * c + c * c + 2 * c)
        elif op == "skip_connect" and cell["reduction"] and inp < 2:  # factorized reduce
          flops += area * c * c
          params += c * c + 2 * c
    size_pp, size_p = size_p, out
  c_last = NUM_NODES * cfg.plan()[-1]["channels"]
  flops += c_last * num_classes
  params += c_last * num_classes + num_classes
  return {"flops": int(flops), "params": int(params)}


# --- continuous relaxation (DARTS search network) -------------------------------------------
def _stacked(init_fn, keys: list[jax.Array]):
  """``init_fn`` per key, stacked on a leading axis (on the host: no XLA program per shape)."""
  return jax.tree.map(lambda *a: jax.device_put(np.stack([np.asarray(v) for v in a])), *[init_fn(k) for k in keys])


def _init_mixed(key, c, stride):
  p, s = {}, {}
  for o, name in enumerate(OP_NAMES[1:]):
    po, so = _init_op(jax.random.fold_in(key, o), name, c, stride, search=True)
    if po:
      p[name] = po
    if so:
      s[name] = so
  return p, s


def _mixed(p, s, h, w, stride, train):
  """``sum_o w[o] * op_o(h)`` over the 7 ops (``none`` adds zeros); ``(y, new_stats)``."""
  out, new_s = None, {}
  for o, name in enumerate(OP_NAMES):
    if name == "none":
      continue
    y, so = _apply_op(name, p.get(name, {}), s.get(name, {}), h, stride=stride, train=train, search=True)
    if so:
      new_s[name] = so
    out = w[o] * y if out is None else out + w[o] * y
  return out, new_s


def _edge_rows(edges) -> np.ndarray:
  return np.array([edge_index(n, i) for n, i in edges], np.int32)


def _relaxed_cell(p, s, x0, x1, weights, cell, train, edge_loop):
  """One relaxed cell after preprocessing. ``weights``: float[14, 8]. Returns ``(concat of the 4 nodes, stats)``."""
  stride = 2 if cell["reduction"] else 1
  w_in, w_node = weights[_edge_rows(_INPUT_EDGES)], weights[_edge_rows(_NODE_EDGES)]
  src = np.array([i for _, i in _NODE_EDGES], np.int32) - 2
  dst = np.array([n for n, _ in _NODE_EDGES], np.int32)
  if edge_loop == "unroll":
    take = lambda tree, k: jax.tree.map(lambda a: a[k], tree)
    ys, s_in = [], []
    for k, (_, i) in enumerate(_INPUT_EDGES):
      y, se = _mixed(take(p["input_edges"], k), take(s["input_edges"], k), (x0, x1)[i], w_in[k], stride, train)
      ys.append(y)
      s_in.append(se)
    nodes = [ys[2 * n] + ys[2 * n + 1] for n in range(NUM_NODES)]
    s_node = []
    for k in range(len(_NODE_EDGES)):
      y, se = _mixed(take(p["node_edges"], k), take(s["node_edges"], k), nodes[src[k]], w_node[k], 1, train)
      nodes[dst[k]] = nodes[dst[k]] + y
      s_node.append(se)
    stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)
    return jnp.concatenate(nodes, axis=-1), {"input_edges": stack(s_in), "node_edges": stack(s_node)}

  inputs = jnp.stack([x0, x1])

  def input_edge(_, xs):
    pe, se, w, i = xs
    y, se = _mixed(pe, se, lax.dynamic_index_in_dim(inputs, i, keepdims=False), w, stride, train)
    return None, (y, se)

  which = jnp.asarray([i for _, i in _INPUT_EDGES], jnp.int32)
  _, (ys, s_in) = lax.scan(input_edge, None, (p["input_edges"], s["input_edges"], w_in, which))
  nodes = ys[0::2] + ys[1::2]  # [4, N, H, W, C]: each node's two edges from the cell inputs

  def node_edge(nodes, xs):
    pe, se, w, j, n = xs
    y, se = _mixed(pe, se, lax.dynamic_index_in_dim(nodes, j, keepdims=False), w, 1, train)
    nodes = lax.dynamic_update_index_in_dim(nodes, lax.dynamic_index_in_dim(nodes, n, keepdims=False) + y, n, 0)
    return nodes, se

  # Edges ordered by destination node: each source node is complete before it is read.
  nodes, s_node = lax.scan(node_edge, nodes, (p["node_edges"], s["node_edges"], w_node, jnp.asarray(src),
                                              jnp.asarray(dst)))
  return jnp.concatenate([nodes[n] for n in range(NUM_NODES)], axis=-1), {"input_edges": s_in, "node_edges": s_node}


def one_hot_weights(arch: Any) -> jax.Array:
  """Relaxation weights ``float32[2, 14, 8]`` under which the relaxed network computes ``arch``.

  Every branch ``(input, op)`` of node ``n`` puts 1 on op ``op + 1`` of edge
  ``edge_index(n, input)``; a node whose two inputs are the same state puts
  both ops on that edge (2 if both are the same op). Jittable and vmappable.

  Args:
    arch: int32[2, 4, 4] (validated when concrete).

  Returns:
    float32[2, 14, 8].

  Example:
    >>> from nas_jax.spaces.darts import DartsSpace, PUBLISHED
    >>> w = one_hot_weights(DartsSpace().from_genotype(PUBLISHED["DARTS_V2"]))
    >>> w.shape, float(w.sum())  # 2 cells x 4 nodes x 2 chosen edges
    ((2, 14, 8), 16.0)
  """
  if not isinstance(arch, jax.core.Tracer):
    arch = check_arch(arch)
  a = jnp.asarray(arch, jnp.int32)
  chex.assert_shape(a, (2, NUM_NODES, 4))
  edges = jnp.asarray(_NODE_OFFSETS, jnp.int32)[None, :, None] + a[..., 0::2]  # [2, 4, 2]
  cells = jnp.broadcast_to(jnp.arange(2, dtype=jnp.int32)[:, None, None], edges.shape)
  return jnp.zeros((2, NUM_EDGES, NUM_RELAXED_OPS), jnp.float32).at[cells, edges, a[..., 1::2] + 1].add(1.0)


def derive(weights: Any, config: Any = None) -> np.ndarray:
  """The discrete architecture of relaxed weights, by DARTS's rule (``model_search.Network.genotype``).

  For each node, the two incoming edges whose strongest non-``none`` op
  weighs most are kept (ties: the lower input), each with that op (ties: the
  lower op index). A node's branches are listed strongest first, as DARTS
  lists them.

  Args:
    weights: float[2, 14, 8] (e.g. the softmax of the alphas).
    config: unused (the cell layout is fixed); accepted for the protocol.

  Returns:
    int32[2, 4, 4].

  Example:
    >>> from nas_jax.spaces.darts import DartsSpace, PUBLISHED
    >>> a = DartsSpace().from_genotype(PUBLISHED["DARTS_V2"])
    >>> bool((derive(one_hot_weights(a)) == DartsSpace().canonical(a)).all())
    True
  """
  del config
  w = np.asarray(weights, np.float64)
  if w.shape != (2, NUM_EDGES, NUM_RELAXED_OPS):
    raise ValueError(f"darts relaxation weights must have shape (2, {NUM_EDGES}, {NUM_RELAXED_OPS}), "
                     f"got {w.shape}")
  arch = np.zeros((2, NUM_NODES, 4), np.int32)
  for c in range(2):
    for n in range(NUM_NODES):
      rows = w[c, _NODE_OFFSETS[n]:_NODE_OFFSETS[n] + n + 2, 1:]  # drop 'none'
      strength = rows.max(axis=1)
      keep = sorted(range(n + 2), key=lambda i: -strength[i])[:2]  # stable: ties keep the lower input
      arch[c, n] = [keep[0], int(np.argmax(rows[keep[0]])), keep[1], int(np.argmax(rows[keep[1]]))]
  return arch


class DartsContinuous:
  """DARTS's search network as a ``ContinuousRelaxation`` (``networks.base``).

  ``weights``: float[2, 14, 8] = [normal/reduce, edge (``edge_index``), op
  (``op_names``)], already transformed (DARTS: softmax over the last axis).
  ``apply`` is differentiable to any order in params and weights (DARTS's
  second-order step, ``jax.hessian`` for BayesNAS; beyond first order under
  ``ops.implementation(fusion=False)`` for now, see the module docstring);
  one compilation serves every value of the weights.
  """

  op_names = OP_NAMES

  def config(self, **fields: Any) -> DartsConfig:
    """``DartsConfig(**fields)``; unknown fields raise ``ValueError``."""
    known = {f.name for f in dataclasses.fields(DartsConfig)}
    unknown = set(fields) - known
    if unknown:
      raise ValueError(f"unknown darts network setting(s) {sorted(unknown)}; allowed: {sorted(known)}")
    return DartsConfig(**fields)

  def weights_shape(self, config: Any = None) -> tuple[int, int, int]:
    """``(2, 14, 8)``."""
    del config
    return (2, NUM_EDGES, NUM_RELAXED_OPS)

  def init(self, key: jax.Array, config: DartsConfig, input_shape: tuple[int, ...]) -> tuple[Params, Params]:
    """``(params, batch_stats)`` of the relaxed network.

    Per cell: ``pre0``, ``pre1`` and, stacked on a leading edge axis, the
    mixed ops of the 8 edges from the cell inputs (``input_edges``, order
    ``(node, input)`` node-major) and of the 6 from earlier nodes
    (``node_edges``); each mixed op holds the params of ``sep_conv_*``,
    ``dil_conv_*`` and (strided) ``skip_connect``.
    """
    cfg = _as_config(config)
    keys = jax.random.split(key, cfg.layers + 2)
    c_stem = cfg.stem_multiplier * cfg.init_channels
    params, stats = {}, {}
    params["stem"], stats["stem"] = _init_stem(keys[0], int(input_shape[-1]), c_stem)
    for i, cell in enumerate(cfg.plan()):
      kpre, kin, knode = jax.random.split(keys[i + 1], 3)
      p, s = _init_preprocess(kpre, cell, search=True)
      c, stride = cell["channels"], 2 if cell["reduction"] else 1
      p["input_edges"], s["input_edges"] = _stacked(lambda k: _init_mixed(k, c, stride),
                                                    list(jax.random.split(kin, len(_INPUT_EDGES))))
      p["node_edges"], s["node_edges"] = _stacked(lambda k: _init_mixed(k, c, 1),
                                                  list(jax.random.split(knode, len(_NODE_EDGES))))
      params[f"cell_{i}"], stats[f"cell_{i}"] = p, s
    params["classifier"] = ops.init_dense(keys[-1], NUM_NODES * cfg.plan()[-1]["channels"], cfg.num_classes)
    return params, stats

  def apply(self, params: Params, batch_stats: Params, weights: jax.Array, x: jax.Array, *, config: DartsConfig,
            train: bool) -> tuple[jax.Array, Params]:
    """``(logits, new_batch_stats)`` of the relaxed network.

    Args:
      params, batch_stats: from ``init``.
      weights: float[2, 14, 8] op weights (traced; differentiable).
      x: images ``[N, H, W, C_in]``.
      config: the ``DartsConfig``.
      train: batch statistics (True, running statistics updated) or running
        statistics (False) in every BN.
    """
    cfg = _as_config(config)
    chex.assert_rank(x, 4)
    chex.assert_shape(weights, (2, NUM_EDGES, NUM_RELAXED_OPS))
    new_stats = {}
    h, new_stats["stem"] = _stem(params["stem"], batch_stats["stem"], x, train)
    h0 = h1 = h
    for i, cell in enumerate(cfg.plan()):
      p, s = params[f"cell_{i}"], batch_stats[f"cell_{i}"]
      x0, x1, ns = _preprocess(p, s, h0, h1, cell, train, search=True)
      out, edge_stats = _relaxed_cell(p, s, x0, x1, weights[int(cell["reduction"])], cell, train, cfg.edge_loop)
      new_stats[f"cell_{i}"] = {**ns, **edge_stats}
      h0, h1 = h1, out
    return _head(params["classifier"], h1), new_stats

  def derive(self, weights: Any, config: Any = None) -> np.ndarray:
    """See the module function ``derive``."""
    return derive(weights, config)

  def one_hot_weights(self, arch: Any, config: Any = None) -> jax.Array:
    """See the module function ``one_hot_weights``."""
    return one_hot_weights(arch)


def _as_config(config: Any) -> DartsConfig:
  if isinstance(config, DartsConfig):
    return config
  return CONTINUOUS.config(**dict(config))


CONTINUOUS = DartsContinuous()


class DartsFamily:
  """The ``darts`` network family (``networks.base.NetworkFamily``)."""

  name = "darts"
  tasks = ("images",)
  supernet = None  # no weight-sharing supernet yet
  continuous = CONTINUOUS

  def build_child(self, space: Any, arch: Any, **config: Any) -> DartsChild:
    """See the module function ``build_child``."""
    return build_child(space, arch, **config)

  def cost(self, arch: Any, **config: Any) -> dict[str, int]:
    """See the module function ``child_cost`` (used by ``runner.costs.CostModel``)."""
    return child_cost(arch, **config)


FAMILY = DartsFamily()
