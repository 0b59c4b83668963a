"""Petridish's cell-based network: shared normal / reduction cells that grow.

``PetridishCellNet`` is the network of the ``petridish_cell`` space
(``nas_jax.spaces.petridish_cell``): a 3x3 stem; per resolution
``cells_per_stage`` normal cells, a reduction cell (width doubled, stride 2)
between resolutions. Cell ``k`` projects its inputs (the two previous cells'
outputs; a factorized reduction where the older one has twice the
resolution, else ReLU-1x1-BN) to ``in0``, ``in1`` and computes its node::

    node = sep_conv_3x3(in1) + skip(in0)                   the seed
    node <- node + gate_e * op_e(input_e)                  every added row of its type

(``skip`` and ops reading ``in0``/``in1`` have stride 2 in a reduction cell;
a strided skip is a factorized reduction). Every instance of a cell type has
its own weights and gates (``c<k>_layer_<e>``, ``c<k>_gate_<e>``, gates
initialised to 0); the structure is shared. Candidates attach the same way
as in the macro network (``nas_jax.networks.petridish``): stop-gradient on
their inputs, stop-forward at the node, one merge weight per candidate row
shared by all instances of its cell type (Archai shares a cell type's
architecture weights), with the same L1 penalty.

Example:
    >>> from nas_jax.spaces.petridish_cell import PetridishCellSpace
    >>> space = PetridishCellSpace(stages=2, cells_per_stage=1, max_layers=4)
    >>> arch = space.append(space.empty(), [(4, 2, 0), (1, 0, 1)])
    >>> model = build_child(space, arch, num_classes=10, init_channels=4)
    >>> shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((2, 8, 8, 1)),
    ...                                            train=False))
    >>> sorted(k for k in shapes["params"] if k.startswith("c1_"))  # the reduction cell
    ['c1_gate_1', 'c1_layer_1', 'c1_pre0', 'c1_pre1', 'c1_seed_conv', 'c1_seed_skip']
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from nas_jax import ops
from nas_jax.networks.petridish import L1_SCALE, _rows, l1_penalised
from nas_jax.spaces.petridish import OPS


def _init_op(key, op: int, c: int, stride: int):
  name = OPS[op - 1]
  if name.startswith("sep_conv"):
    return ops.init_sep_conv(key, c, c, int(name[-1]))
  if name.startswith("dil_conv"):
    return ops.init_dil_conv(key, c, c, int(name[-1]))
  if name == "skip_connect" and stride == 2:
    return ops.init_factorized_reduce(key, c, c)
  return {}, {}


def _apply_op(op: int, p, s, x, train: bool, stride: int):
  name = OPS[op - 1]
  if name.startswith("sep_conv"):
    return ops.sep_conv(p, s, x, train=train, stride=stride)
  if name.startswith("dil_conv"):
    return ops.dil_conv(p, s, x, train=train, stride=stride)
  if name == "max_pool_3x3":
    return ops.max_pool(x, stride), s
  if name == "avg_pool_3x3":
    return ops.avg_pool(x, stride), s
  if stride == 2:
    return ops.factorized_reduce(p, s, x, train=train)
  return x, s


class PetridishCellNet(nn.Module):
  """A grown cell-based Petridish network (see the module docstring).

  Attributes:
    arch: used rows ``(op, input, cell)``.
    candidates: candidate rows of the candidate phase (empty for a child).
    num_classes, init_channels, stages, cells_per_stage: the network's shape.
  """
  arch: tuple = ()
  candidates: tuple = ()
  num_classes: int = 10
  init_channels: int = 16
  stages: int = 3
  cells_per_stage: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, drop_prob: float = 0.0):
    del drop_prob
    chex.assert_rank(x, 4)
    update = train and self.is_mutable_collection("batch_stats")

    def run(name, init_fn, apply_fn, h):
      p = self.param(name, lambda key: init_fn(key)[0])
      s = self.variable("batch_stats", name, lambda: init_fn(self.make_rng("params"))[1])
      y, new = apply_fn(p, s.value, h)
      if update:
        s.value = new
      return y

    omega = None
    if self.candidates:
      n_at = [sum(1 for r in self.candidates if r[2] == c) for _, _, c in self.candidates]
      omega = self.param("omega", lambda key: jnp.asarray([1.0 / n for n in n_at], jnp.float32))
      omega = l1_penalised(omega, tuple(L1_SCALE / n for n in n_at))

    c = self.init_channels
    stem = run("stem", lambda k: ops.init_relu_conv_bn(k, x.shape[-1], c, 3),
               lambda p, s, a: ops.relu_conv_bn(p, s, a, train=train, relu=False), x)
    kinds = []
    for stage in range(self.stages):
      if stage:
        kinds.append(1)
      kinds += [0] * self.cells_per_stage
    prev_prev, prev = stem, stem
    for k, kind in enumerate(kinds):
      c_pp, c_p = prev_prev.shape[-1], prev.shape[-1]
      if kind == 1:
        c = 2 * c
      stride = 2 if kind == 1 else 1
      if prev_prev.shape[1] > prev.shape[1]:
        in0 = run(f"c{k}_pre0", functools.partial(ops.init_factorized_reduce, c_in=c_pp, c_out=c),
                  lambda p, s, a: ops.factorized_reduce(p, s, a, train=train), prev_prev)
      else:
        in0 = run(f"c{k}_pre0", lambda key, c_pp=c_pp: ops.init_relu_conv_bn(key, c_pp, c, 1),
                  lambda p, s, a: ops.relu_conv_bn(p, s, a, train=train), prev_prev)
      in1 = run(f"c{k}_pre1", lambda key, c_p=c_p: ops.init_relu_conv_bn(key, c_p, c, 1),
                lambda p, s, a: ops.relu_conv_bn(p, s, a, train=train), prev)
      conv = OPS.index("sep_conv_3x3") + 1
      skip = OPS.index("skip_connect") + 1
      base = run(f"c{k}_seed_conv", functools.partial(_init_op, op=conv, c=c, stride=stride),
                 lambda p, s, a: _apply_op(conv, p, s, a, train, stride), in1)
      if stride == 2:
        base = base + run(f"c{k}_seed_skip", functools.partial(_init_op, op=skip, c=c, stride=2),
                          lambda p, s, a: _apply_op(skip, p, s, a, train, 2), in0)
      else:
        base = base + in0
      sources = (in0, in1, base)
      h = base
      for e, (op, i, cell) in enumerate(self.arch):
        if cell != kind:
          continue
        st = 1 if i == 2 else stride
        y = run(f"c{k}_layer_{e}", functools.partial(_init_op, op=op, c=c, stride=st),
                lambda p, s, a, op=op, st=st: _apply_op(op, p, s, a, train, st), sources[i])
        h = h + self.param(f"c{k}_gate_{e}", nn.initializers.zeros, ()) * y
      z = None
      for ci, (op, i, cell) in enumerate(self.candidates):
        if cell != kind:
          continue
        st = 1 if i == 2 else stride
        y = run(f"c{k}_cand_{ci}", functools.partial(_init_op, op=op, c=c, stride=st),
                lambda p, s, a, op=op, st=st: _apply_op(op, p, s, a, train, st),
                jax.lax.stop_gradient(sources[i]))
        z = omega[ci] * y if z is None else z + omega[ci] * y
      if z is not None:
        h = h + (z - jax.lax.stop_gradient(z))  # stop-forward: +0 forward, gradient to z
      prev_prev, prev = prev, h
    p = self.param("head", lambda key: {"dense": ops.init_dense(key, prev.shape[-1], self.num_classes)})
    self.variable("batch_stats", "head", dict)
    feat = jnp.mean(jax.nn.relu(prev), axis=(1, 2))
    return ops.dense(p["dense"], feat), None


def build_child(space: Any, arch: Any, *, num_classes: int, init_channels: int = 16,
                **unused: Any) -> PetridishCellNet:
  """The grown cell network of ``arch`` (``unused``: ``layers``, ``auxiliary``, ignored)."""
  del unused
  a = space.validate(arch)
  return PetridishCellNet(arch=_rows(a), num_classes=num_classes, init_channels=init_channels,
                          stages=space.stages, cells_per_stage=space.cells_per_stage)


def build_candidates(space: Any, arch: Any, candidates: Sequence[Sequence[int]], *, num_classes: int,
                     init_channels: int = 16, **unused: Any) -> PetridishCellNet:
  """The candidate-phase model: ``arch``'s network with ``candidates`` in every cell of their type."""
  del unused
  a = space.validate(arch)
  rows = tuple(tuple(int(v) for v in r) for r in candidates)
  if not rows:
    raise ValueError("build_candidates needs at least one candidate row (op, input, cell)")
  for r in rows:
    probe = space.empty()
    probe[0] = r
    space.validate(probe)
  return PetridishCellNet(arch=_rows(a), candidates=rows, num_classes=num_classes,
                          init_channels=init_channels, stages=space.stages,
                          cells_per_stage=space.cells_per_stage)


class PetridishCellFamily:
  """The ``petridish_cell`` network family (``networks.base.NetworkFamily``)."""

  name = "petridish_cell"
  tasks = ("images",)
  supernet = None
  continuous = None

  def build_child(self, space: Any, arch: Any, **config: Any) -> PetridishCellNet:
    return build_child(space, arch, **config)

  def build_candidates(self, space: Any, arch: Any, candidates, **config: Any) -> PetridishCellNet:
    return build_candidates(space, arch, candidates, **config)

  def cost(self, arch: Any, *, space: Any = None, input_shape=(32, 32, 3), **config: Any) -> dict[str, int]:
    """Traced FLOPs / parameters (``nas_jax.cost.count_cost``)."""
    from nas_jax import cost  # pylint: disable=import-outside-toplevel
    from nas_jax.spaces.petridish_cell import PetridishCellSpace  # pylint: disable=import-outside-toplevel
    return cost.count_cost(space or PetridishCellSpace(), arch, input_shape=input_shape, **config)


FAMILY = PetridishCellFamily()
