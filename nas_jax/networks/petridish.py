"""Petridish's growable macro network: seed, candidates, gated children, warm-start transfer.

``PetridishNet`` computes one grown network of the ``petridish`` space
(``nas_jax.spaces.petridish``): the seed (stem; per resolution a factorized
reduction, except the first, then ``layers_per_stage`` residual separable-conv
layers; ReLU, global average pool, linear classifier) plus the added layers of
``arch``, each behind a scalar gate::

    x_join <- x_join + gate_e * op_e(x_input)        gate_e initialised to 0

so a child built from its parent's variables (``transfer``) computes the
parent's function at step 0 (petridishnn ``finalized_gated_layer``, init 0).

With ``candidates`` (rows ``(op, input, join)`` like the arch's) the network
is the *candidate phase* model: at each join node ``j`` it adds

    z_j = sum_i omega_i * op_i(stop_gradient(x_input_i))
    x_j <- x_j + (z_j - stop_gradient(z_j))

The forward value of ``z - stop_gradient(z)`` is exactly 0, so the parent's
outputs are unchanged; the loss's gradient reaches ``z`` (so ``omega`` and
the candidates' op weights learn what adding them would do), but never
reaches the parent's weights through them (petridishnn
``candidate_gated_layer``; Archai ``StopForward`` / ``StopGradient``). The
merge weights ``omega`` start at ``1 / n_j`` and carry an L1 penalty
``lambda_j * |omega|`` with ``lambda_j = 1e-2 / n_j`` (both petridishnn
``_init_feature_select``), ``n_j`` the candidates at join ``j``. The penalty
enters as its subgradient in the backward pass of ``omega``
(``l1_penalised``), so the generic training loop (``nas_jax.train``) trains
the candidate model unchanged.

Example:
    >>> from nas_jax.spaces.petridish import PetridishSpace
    >>> space = PetridishSpace(stages=2, layers_per_stage=1, max_layers=4)
    >>> parent = space.empty()
    >>> model = build_child(space, parent, num_classes=10, init_channels=4)
    >>> x = jnp.zeros((2, 8, 8, 1))
    >>> shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, train=False))
    >>> sorted(shapes["params"])
    ['head', 'layer_s0_0', 'layer_s1_0', 'reduce_1', 'stem']
    >>> cand = build_candidates(space, parent, [(4, 0, 1), (3, 1, 1)], num_classes=10, init_channels=4)
    >>> shapes = jax.eval_shape(lambda: cand.init({"params": jax.random.key(0)}, x, train=False))
    >>> sorted(shapes["params"])[:3], shapes["params"]["omega"].shape
    (['cand_0', 'cand_1', 'head'], (2,))
"""
from __future__ import annotations

import functools
import re
from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import ops
from nas_jax.spaces.petridish import NUM_OPS, OPS

#: L1 weight of the candidates' merge weights: ``L1_SCALE / n_j`` (petridishnn
#: ``_init_feature_select``: ``feat_sel_lambda = 1e-2 / n_inputs`` when unset).
L1_SCALE = 1e-2


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def l1_penalised(w: jax.Array, lam: Any) -> jax.Array:
  """The identity whose backward pass adds ``lam * sign(w)``: an L1 penalty ``lam * |w|_1``.

  ``lam`` is a float or a tuple of floats (one per entry of ``w``).

  Example:
    >>> jax.grad(lambda w: l1_penalised(w, 0.5).sum())(jnp.asarray([2.0, -1.0])).tolist()
    [1.5, 0.5]
  """
  del lam
  return w


def _l1_fwd(w, lam):
  return w, w


def _l1_bwd(lam, w, g):
  return (g + jnp.asarray(lam, g.dtype) * jnp.sign(w),)


l1_penalised.defvjp(_l1_fwd, _l1_bwd)


def _init_op(key, op: int, c: int):
  """Params and stats of op ``op`` (1-based, see ``OPS``) at width ``c``."""
  name = OPS[op - 1]
  if name.startswith("sep_conv"):
    return ops.init_sep_conv(key, c, c, int(name[-1]))
  if name.startswith("dil_conv"):
    return ops.init_dil_conv(key, c, c, int(name[-1]))
  return {}, {}


def _apply_op(op: int, p, s, x, train: bool):
  name = OPS[op - 1]
  if name.startswith("sep_conv"):
    return ops.sep_conv(p, s, x, train=train)
  if name.startswith("dil_conv"):
    return ops.dil_conv(p, s, x, train=train)
  if name == "max_pool_3x3":
    return ops.max_pool(x), s
  if name == "avg_pool_3x3":
    return ops.avg_pool(x), s
  return x, s  # skip_connect


class PetridishNet(nn.Module):
  """A grown Petridish network (see the module docstring).

  Attributes:
    arch: the added layers, a tuple of ``(op, input, join)`` rows (used rows only).
    candidates: candidate layers of the candidate phase (empty for a child).
    num_classes: classifier outputs.
    init_channels: width of the first resolution (doubled at each reduction;
      petridishnn ``--init_channel=16``).
    stages, layers_per_stage: the seed (see ``PetridishSpace``).

  ``__call__(x, *, train, drop_prob=0.0)`` returns ``(logits, None)``
  (``drop_prob`` is accepted and ignored: the seed uses no drop-path).
  """
  arch: tuple = ()
  candidates: tuple = ()
  num_classes: int = 10
  init_channels: int = 16
  stages: int = 3
  layers_per_stage: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, drop_prob: float = 0.0):
    del drop_prob
    chex.assert_rank(x, 4)
    update = train and self.is_mutable_collection("batch_stats")
    L = self.layers_per_stage

    def module(name, init_fn):
      p = self.param(name, lambda key: init_fn(key)[0])
      s = self.variable("batch_stats", name, lambda: init_fn(self.make_rng("params"))[1])
      return p, s

    def run(name, init_fn, apply_fn, h):
      p, s = module(name, init_fn)
      y, new = apply_fn(p, s.value, h)
      if update:
        s.value = new
      return y

    by_join: dict[int, list[int]] = {}
    for e, (_, _, j) in enumerate(self.arch):
      by_join.setdefault(int(j), []).append(e)
    cand_by_join: dict[int, list[int]] = {}
    for i, (_, _, j) in enumerate(self.candidates):
      cand_by_join.setdefault(int(j), []).append(i)
    omega = None
    if self.candidates:
      n_at = [len(cand_by_join[int(j)]) for _, _, j in self.candidates]
      omega = self.param("omega", lambda key: jnp.asarray([1.0 / n for n in n_at], jnp.float32))
      omega = l1_penalised(omega, tuple(L1_SCALE / n for n in n_at))

    values: list[jax.Array] = []
    c = self.init_channels
    h = x
    for node in range(self.stages * (L + 1)):
      stage, pos = divmod(node, L + 1)
      if node == 0:
        h = run("stem", lambda k: ops.init_relu_conv_bn(k, x.shape[-1], c, 3),
                lambda p, s, a: ops.relu_conv_bn(p, s, a, train=train, relu=False), x)
      elif pos == 0:
        c_in, c = c, 2 * c
        h = run(f"reduce_{stage}", functools.partial(ops.init_factorized_reduce, c_in=c_in, c_out=c),
                lambda p, s, a: ops.factorized_reduce(p, s, a, train=train), values[-1])
      else:
        prev = values[-1]
        y = run(f"layer_s{stage}_{pos - 1}", lambda k: ops.init_sep_conv(k, c, c, 3),
                lambda p, s, a: ops.sep_conv(p, s, a, train=train), prev)
        h = prev + y
      base = h
      read = lambda i: base if i == node else values[i]  # noqa: E731  an input equal to the join reads base
      for e in by_join.get(node, ()):
        op, i, _ = (int(v) for v in self.arch[e])
        y = run(f"layer_{e}", functools.partial(_init_op, op=op, c=c),
                lambda p, s, a, op=op: _apply_op(op, p, s, a, train), read(i))
        gate = self.param(f"gate_{e}", nn.initializers.zeros, ())
        h = h + gate * y
      if node in cand_by_join:
        z = 0.0
        for ci in cand_by_join[node]:
          op, i, _ = (int(v) for v in self.candidates[ci])
          y = run(f"cand_{ci}", functools.partial(_init_op, op=op, c=c),
                  lambda p, s, a, op=op: _apply_op(op, p, s, a, train),
                  jax.lax.stop_gradient(read(i)))
          z = z + omega[ci] * y
        h = h + (z - jax.lax.stop_gradient(z))  # stop-forward: +0 forward, gradient to z
      values.append(h)
    p, s = module("head", lambda k: ({"dense": ops.init_dense(k, c, self.num_classes)}, {}))
    feat = jnp.mean(jax.nn.relu(values[-1]), axis=(1, 2))
    return ops.dense(p["dense"], feat), None


def _rows(arch: Any) -> tuple:
  a = np.asarray(arch, np.int32).reshape(-1, 3)
  return tuple(tuple(int(v) for v in r) for r in a if r[0] > 0)


def build_child(space: Any, arch: Any, *, num_classes: int, init_channels: int = 16,
                **unused: Any) -> PetridishNet:
  """The grown network of ``arch`` (a flax module, see ``PetridishNet``).

  Args:
    space: the ``petridish`` space (validates ``arch``; gives the seed's shape).
    arch: int32[max_layers, 3].
    num_classes: classifier outputs.
    init_channels: width of the first resolution.
    **unused: other settings of the training loop (``layers``, ``auxiliary``):
      ignored, the seed's depth belongs to the space.

  Returns:
    ``PetridishNet``.
  """
  del unused
  a = space.validate(arch)
  return PetridishNet(arch=_rows(a), num_classes=num_classes, init_channels=init_channels,
                      stages=space.stages, layers_per_stage=space.layers_per_stage)


def build_candidates(space: Any, arch: Any, candidates: Sequence[Sequence[int]], *, num_classes: int,
                     init_channels: int = 16, **unused: Any) -> PetridishNet:
  """The candidate-phase model: ``arch``'s network with ``candidates`` attached.

  Args:
    space, arch, num_classes, init_channels: as ``build_child``.
    candidates: rows ``(op, input, join)`` (op 1-based), each a valid row of
      the space.

  Raises:
    ValueError: a candidate row the space rejects (the message names it).
  """
  del unused
  a = space.validate(arch)
  rows = tuple(tuple(int(v) for v in r) for r in candidates)
  if not rows:
    raise ValueError("build_candidates needs at least one candidate row (op, input, join)")
  for r in rows:
    probe = space.empty()
    probe[0] = r
    space.validate(probe)
  return PetridishNet(arch=_rows(a), candidates=rows, num_classes=num_classes,
                      init_channels=init_channels, stages=space.stages,
                      layers_per_stage=space.layers_per_stage)


def candidate_rows(space: Any, join: int, inputs: Sequence[int], op_ids: Sequence[int] | None = None):
  """Every ``(op, input, join)`` row for ``join`` over ``inputs`` and ops (1-based ids)."""
  op_ids = range(1, NUM_OPS + 1) if op_ids is None else op_ids
  return [(int(op), int(i), int(join)) for i in inputs for op in op_ids]


def select_candidates(omega: Any, k: int, threshold: float) -> list[int]:
  """Indices of at most ``k`` candidates with the largest ``|omega|`` above ``threshold``.

  Largest first; ties keep the lower index (Archai ``PetridishOp.finalize``
  keeps the 3 largest).

  Example:
    >>> select_candidates([0.5, -0.9, 0.0001, 0.3], k=2, threshold=1e-3)
    [1, 0]
  """
  w = np.abs(np.asarray(omega, np.float64).reshape(-1))
  order = sorted(range(len(w)), key=lambda i: (-w[i], i))
  return [i for i in order if w[i] > threshold][:max(int(k), 0)]


def transfer_from_candidates(num_parent_layers: int, selected: Sequence[int]):
  """A ``train_child(transfer=...)`` that maps the candidate model into the child.

  The child's first ``num_parent_layers`` layers are the parent's; its next
  ones are the ``selected`` candidates in that order. Every parent leaf is
  copied by name; candidate ``selected[k]``'s op weights and statistics
  (``<prefix>cand_<c>``, the prefix naming a cell instance in the cell
  network) become the child's ``<prefix>layer_<num_parent_layers + k>``; the
  child's new gates keep their initial 0, so the child computes its parent's
  function.

  Args:
    num_parent_layers: used rows of the parent's arch.
    selected: candidate indices, in the order they were appended to the arch.

  Returns:
    ``transfer(candidate_variables, child_init) -> child_variables``.
  """
  new_index = {int(c): num_parent_layers + k for k, c in enumerate(selected)}

  def renamed(name):
    """``<prefix>cand_<c>`` -> ``<prefix>layer_<new>`` for a selected ``c`` (None: dropped)."""
    m = re.fullmatch(r"(.*)cand_(\d+)", name)
    if m is None:
      return name
    c = int(m.group(2))
    return f"{m.group(1)}layer_{new_index[c]}" if c in new_index else None

  def new_gate(name):
    m = re.fullmatch(r"(.*)gate_(\d+)", name)
    return m is not None and int(m.group(2)) >= num_parent_layers

  def transfer(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for col, tree in child.items():
      src = {}
      for name, value in dict(parent.get(col, {})).items():
        if renamed(name) is not None:
          src[renamed(name)] = value
      merged = {}
      for name, leaf in tree.items():
        if name in src and new_gate(name):
          merged[name] = leaf
        elif name in src:
          got = src[name]
          if jax.tree.structure(got) != jax.tree.structure(leaf) or any(
              np.shape(a) != np.shape(b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(leaf))):
            raise ValueError(f"petridish transfer: {col}/{name} does not fit the child; the child must "
                             "be the parent's arch with the selected candidates appended")
          merged[name] = got
        else:
          merged[name] = leaf
      out[col] = merged
    return out

  transfer.__qualname__ = f"transfer_from_candidates({num_parent_layers}, {list(selected)})"
  return transfer


def child_cost(arch: Any, *, num_classes: int = 10, init_channels: int = 16, stages: int = 3,
               layers_per_stage: int = 1, input_shape: tuple[int, int, int] = (32, 32, 3),
               **unused: Any) -> dict[str, int]:
  """Closed-form multiply-adds (one image, inference) and trainable parameters.

  The ``nas_jax.cost.count_cost`` convention: convolutions and the classifier
  count, BN scale and bias count as parameters, pools and additions are free;
  the gates count as parameters (one each). Tested equal to the traced count.
  """
  del unused
  h, w, c_in = (int(v) for v in input_shape)
  c = init_channels
  flops = h * w * 9 * c_in * c
  params = 9 * c_in * c + 2 * c
  L = layers_per_stage

  def op_cost(op, c, hw):
    name = OPS[op - 1]
    if name.startswith("sep_conv"):
      k = int(name[-1])
      return 2 * hw * (k * k * c + c * c), 2 * (k * k * c + c * c + 2 * c)
    if name.startswith("dil_conv"):
      k = int(name[-1])
      return hw * (k * k * c + c * c), k * k * c + c * c + 2 * c
    return 0, 0

  rows = _rows(arch)
  for node in range(stages * (L + 1)):
    stage, pos = divmod(node, L + 1)
    if node and pos == 0:
      h, w = (h + 1) // 2, (w + 1) // 2
      flops += h * w * c * 2 * c
      params += c * 2 * c + 2 * 2 * c
      c = 2 * c
    elif pos:
      f, p = op_cost(OPS.index("sep_conv_3x3") + 1, c, h * w)
      flops, params = flops + f, params + p
    for op, _, j in rows:
      if j == node:
        f, p = op_cost(op, c, h * w)
        flops, params = flops + f, params + p + 1
  flops += c * num_classes
  params += c * num_classes + num_classes
  return {"flops": int(flops), "params": int(params)}


class PetridishFamily:
  """The ``petridish`` network family (``networks.base.NetworkFamily``)."""

  name = "petridish"
  tasks = ("images",)
  supernet = None
  continuous = None

  def build_child(self, space: Any, arch: Any, **config: Any) -> PetridishNet:
    """See the module function ``build_child``."""
    return build_child(space, arch, **config)

  def build_candidates(self, space: Any, arch: Any, candidates, **config: Any) -> PetridishNet:
    """See the module function ``build_candidates``."""
    return build_candidates(space, arch, candidates, **config)

  def cost(self, arch: Any, *, space: Any = None, **config: Any) -> dict[str, int]:
    """Closed-form FLOPs / parameters (``child_cost``) of the default-shaped space's child."""
    from nas_jax.spaces.petridish import PetridishSpace  # pylint: disable=import-outside-toplevel
    space = space or PetridishSpace()
    return child_cost(arch, stages=space.stages, layers_per_stage=space.layers_per_stage, **config)


FAMILY = PetridishFamily()
