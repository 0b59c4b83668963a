"""The NAS-Bench-201 network of one cell, and its variables taken from the supernet.

The child computes every non-``none`` edge whose target node reaches the
output (``common.useful_edges``; the others cannot change it) with the same
blocks as the supernets, so ``child_variables_from_supernet`` gives a child
that computes exactly the supernet's function for its architecture.

Example:
    >>> from nas_jax.spaces import get_space
    >>> model = build_child(get_space("nb201"), [3, 1, 2, 0, 4, 3], num_classes=10, init_channels=4, layers=1)
    >>> x = jnp.zeros((2, 8, 8, 3))
    >>> shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, train=False))
    >>> sorted(shapes["params"]["block_0"])  # only the useful conv edges have weights
    ['e0', 'e2', 'e5']
    >>> jax.eval_shape(lambda v: model.apply(v, x, train=False), shapes)  # (logits, aux logits)
    (ShapeDtypeStruct(shape=(2, 10), dtype=float32), None)

  Run for real (``jax.eval_shape`` above only traces; initialising compiles
  for several seconds)::

    variables = model.init({"params": jax.random.key(0)}, x, train=False)
    logits, aux = model.apply(variables, x, train=False)
"""
from __future__ import annotations

import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import numpy as np

from nas_jax import ops
from nas_jax.spaces.nb201 import NUM_EDGES, NUM_OPS, OPS

from .common import (AVG, CONV1, CONV3, CONV_KEY, Params, SupernetConfig, apply_cell, apply_head, apply_op,
                     apply_res, apply_stem, as_config, init_edge, init_head, init_res, init_stem, useful_edges)


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

    p, s = module("stem", lambda k: init_stem(k, x.shape[-1], cfg.init_channels))
    h, new = apply_stem(p, s.value, x, train)
    if update:
      s.value = new
    for i, block in enumerate(cfg.plan()):
      if block["kind"] == "res":
        p, s = module(f"block_{i}", functools.partial(init_res, c_in=block["c_in"], c_out=block["c_out"]))
        h, new = apply_res(p, s.value, h, train)
      else:
        p, s = module(f"block_{i}", functools.partial(_init_child_cell, arch=self.arch, c=block["c_in"]))

        def edge(e, p_e, s_e, h_in):
          op = self.arch[e]
          if not useful[e]:
            return None
          y, s_new = apply_op(op, p_e, s_e, h_in, train)
          if use_drop and op in (CONV1, CONV3, AVG):
            y = ops.drop_path(self.make_rng("drop_path"), y, drop_prob)
          return y, s_new

        h, new = apply_cell(p, s.value, h, edge)
      if update:
        s.value = new
    p, s = module("head", lambda k: init_head(k, h.shape[-1], cfg.num_classes))
    logits, new = apply_head(p, s.value, h, train)
    if update:
      s.value = new
    return logits, None


def _init_child_cell(key, *, arch, c):
  useful = useful_edges(arch)
  p, s = {}, {}
  for e, k in enumerate(jax.random.split(key, NUM_EDGES)):
    if useful[e] and arch[e] in CONV_KEY:
      p[f"e{e}"], s[f"e{e}"] = init_edge(k, c, (arch[e],))
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
    >>> build_child(get_space("nb201"), [3] * 5, num_classes=10)
    Traceback (most recent call last):
    ...
    ValueError: nb201 arch has shape (5,); expected (6,)...
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
  cfg = as_config(config)
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
      if useful[e] and a[e] in CONV_KEY:
        key = CONV_KEY[a[e]]
        p[f"e{e}"] = {key: params[name][f"e{e}"][key]}
        s[f"e{e}"] = {key: batch_stats[name][f"e{e}"][key]}
    out_p[name], out_s[name] = p, s
  return {"params": out_p, "batch_stats": out_s}


def _conv_out(size: int, stride: int) -> int:
  """Spatial size after a 'same'-padded 3x3 or 1x1 convolution with ``stride``."""
  return (size - 1) // stride + 1


def child_cost(arch: Any, *, num_classes: int = 10, init_channels: int = 16, layers: int = 5,
               input_shape: tuple[int, int, int] = (32, 32, 3), **unused: Any) -> dict[str, int]:
  """Closed-form cost of the NAS-Bench-201 network of ``arch``.

  The same convention as ``nas_jax.cost.count_cost``: multiply-adds of the
  convolutions and the classifier for one image; trainable parameters (conv
  weights, BN scale and bias, the classifier's weights and bias). Only the
  edges that reach the cell output count (the child computes only those).

  Example:
    >>> child_cost([0, 0, 0, 0, 0, 0])["flops"] < child_cost([3, 3, 3, 3, 3, 3])["flops"]
    True
  """
  del unused
  conv_k = {CONV1: 1, CONV3: 3}
  a = [int(v) for v in np.asarray(arch).reshape(-1)]
  useful = useful_edges(a)
  h, w, c_in = (int(v) for v in input_shape)
  c = init_channels
  flops = h * w * 9 * c_in * c
  params = 9 * c_in * c + 2 * c
  for stage in range(3):
    if stage:
      h2, w2 = _conv_out(h, 2), _conv_out(w, 2)
      flops += h2 * w2 * 9 * c * 2 * c + h2 * w2 * 9 * 4 * c * c + (h // 2) * (w // 2) * c * 2 * c
      params += 9 * c * 2 * c + 2 * 2 * c + 9 * 4 * c * c + 2 * 2 * c + c * 2 * c
      h, w, c = h2, w2, 2 * c
    per_cell_flops = per_cell_params = 0
    for e, op in enumerate(a):
      if useful[e] and op in conv_k:
        k = conv_k[op]
        per_cell_flops += h * w * k * k * c * c
        per_cell_params += k * k * c * c + 2 * c
    flops += layers * per_cell_flops
    params += layers * per_cell_params
  flops += c * num_classes
  params += 2 * c + c * num_classes + num_classes
  return {"flops": int(flops), "params": int(params)}
