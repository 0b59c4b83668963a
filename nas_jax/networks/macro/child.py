"""ENAS's macro network of one architecture, and its variables taken from the supernet.

The child runs each layer's chosen branch, adds its chosen skip nodes, and
reduces at the pool layers only the nodes that something later reads
(``common.needed_reductions``); with the supernet's weights
(``child_variables_from_supernet``, and ``double_channels`` as in the
supernet) it computes exactly the supernet's function for its architecture.

Example:
    >>> from nas_jax.spaces.macro import MacroSpace
    >>> model = build_child(MacroSpace(3), [0, 4, 1, 3, 0, 1], num_classes=10, init_channels=4)
    >>> x = jnp.zeros((2, 8, 8, 1))
    >>> shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, train=False))
    >>> sorted(shapes["params"]), sorted(shapes["params"]["layer_2"])
    (['head', 'layer_0', 'layer_1', 'layer_2', 'pool_0', 'pool_1', 'stem'], ['b3', 'bn'])
    >>> # layer 1 skips from the stem (node 0), layer 2 from layer 0 (node 1)
    >>> sorted(shapes["params"]["pool_0"]), sorted(shapes["params"]["pool_1"])
    (['n0', 'n1'], ['n1', 'n2'])
    >>> jax.eval_shape(lambda v: model.apply(v, x, train=False), shapes)  # (logits, aux logits)
    (ShapeDtypeStruct(shape=(2, 10), dtype=float32), None)
"""
from __future__ import annotations

import functools
import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import ops
from nas_jax.spaces.macro import layers_of_length

from .common import (AVG, CONV3, CONV5, KERNEL, MAX, MacroConfig, Params, SEP3, SEP5, apply_branch, apply_head,
                     apply_reduce, apply_stem, as_config, init_branch, init_head, init_reduce, init_stem,
                     needed_reductions, split_arch)


class MacroChild(nn.Module):
  """ENAS's macro network of one architecture.

  Attributes:
    arch: the architecture as a tuple of ints.
    num_classes, init_channels, num_layers, double_channels: see ``MacroConfig``.

  ``__call__(x, *, train, drop_prob=0.0)`` returns ``(logits, None)`` (no
  auxiliary head; ``drop_prob`` is ignored: the network has no drop-path).
  """
  arch: tuple
  num_classes: int = 10
  init_channels: int = 36
  num_layers: int = 12
  double_channels: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, drop_prob: float = 0.0):
    del drop_prob
    chex.assert_rank(x, 4)
    cfg = MacroConfig(self.num_classes, self.init_channels, self.num_layers, self.double_channels)
    update = train and self.is_mutable_collection("batch_stats")
    op_ids, skips = split_arch(self.arch, cfg.num_layers)
    needed = needed_reductions(self.arch, cfg)

    def module(name, init_fn):
      p = self.param(name, lambda key: init_fn(key)[0])
      s = self.variable("batch_stats", name, lambda: init_fn(self.make_rng("params"))[1])
      return p, s

    p, s = module("stem", lambda k: init_stem(k, x.shape[-1], cfg.init_channels))
    h, new = apply_stem(p, s.value, x, train)
    if update:
      s.value = new
    nodes: dict[int, jax.Array] = {0: h}
    c = cfg.init_channels
    for i in range(cfg.num_layers):
      op = int(op_ids[i])
      p, s = module(f"layer_{i}", functools.partial(_init_child_layer, op=op, c=c, skip_bn=i > 0))
      y, branch_s = apply_branch(op, p[f"b{op}"], s.value[f"b{op}"], nodes[i], train)
      new = {f"b{op}": branch_s}
      if i > 0:
        for j in skips[i]:
          y = y + nodes[j]
        y, new["bn"] = ops.batch_norm(p["bn"], s.value["bn"], y, train=train)
      if update:
        s.value = new
      nodes[i + 1] = y
      if i in cfg.pool_layers:
        c_new = 2 * c if cfg.double_channels else c
        keep = needed[i]
        p, s = module(f"pool_{i}", functools.partial(_init_child_pool, nodes=tuple(keep), c_in=c, c_out=c_new))
        new = {}
        for k in keep:
          nodes[k], new[f"n{k}"] = apply_reduce(p[f"n{k}"], s.value[f"n{k}"], nodes[k], train)
        for k in set(nodes) - set(keep):
          del nodes[k]  # never read again
        if update:
          s.value = new
        c = c_new
    head = self.param("head", lambda key: init_head(key, c, cfg.num_classes)[0])
    return apply_head(head, nodes[cfg.num_layers]), None


def _init_child_layer(key, *, op, c, skip_bn):
  k_branch, _ = jax.random.split(key)
  p, s = {}, {}
  p[f"b{op}"], s[f"b{op}"] = init_branch(k_branch, op, c, c)
  if skip_bn:
    p["bn"], s["bn"] = ops.init_bn(c)
  return p, s


def _init_child_pool(key, *, nodes, c_in, c_out):
  p, s = {}, {}
  for k, kk in zip(nodes, jax.random.split(key, max(len(nodes), 1))):
    p[f"n{k}"], s[f"n{k}"] = init_reduce(kk, c_in, c_out)
  return p, s


def build_child(space: Any, arch: Any, *, num_classes: int, init_channels: int = 36,
                double_channels: bool = True, layers: int | None = None, auxiliary: bool = False,
                **unused: Any) -> MacroChild:
  """ENAS's macro network of ``arch`` (a flax module, see ``MacroChild``).

  Args:
    space: the ``macro`` search space (validates ``arch``; gives L).
    arch: int32[L + L(L-1)/2].
    num_classes: classifier outputs.
    init_channels: C (ENAS's macro search 36; the runner's ``final.init_channels``).
    double_channels: double C at the pool layers (ENAS's fixed-arc child: True).
    layers: ignored (the runner's cell count; L comes from the space).
    auxiliary: ignored (no auxiliary head; aux logits are None).
    **unused: other settings of the generic training loop, ignored.

  Returns:
    ``MacroChild``; ``apply(variables, x, train=...)`` returns ``(logits, None)``.

  Example:
    >>> from nas_jax.spaces.macro import MacroSpace
    >>> build_child(MacroSpace(2), [0, 1, 2], num_classes=10)
    Traceback (most recent call last):
    ...
    ValueError: macro arch[2] (layer 1 skip from stem) = 2 is out of range 0..1 (off, on)
  """
  del layers, auxiliary, unused
  a = space.validate(arch) if hasattr(space, "validate") else np.asarray(arch, np.int32)
  num_layers = getattr(space, "num_layers", None) or layers_of_length(len(a))
  MacroConfig(num_classes, init_channels, num_layers, double_channels)  # checks the settings
  return MacroChild(arch=tuple(int(v) for v in a), num_classes=num_classes, init_channels=init_channels,
                    num_layers=num_layers, double_channels=double_channels)


def child_variables_from_supernet(arch: Any, params: Params, batch_stats: Params,
                                  config: MacroConfig | dict[str, Any],
                                  child_variables: dict[str, Any] | None = None) -> dict[str, Any]:
  """Variables of the child of ``arch`` taken from the supernet's weights.

  Build the child with the supernet's ``double_channels`` (ENAS's search:
  False); it then computes exactly the supernet's function for ``arch``.

  Args:
    arch: int[L + L(L-1)/2] (concrete).
    params, batch_stats: the supernet's pytrees (``supernet.init_supernet``).
    config: the supernet's ``MacroConfig``.
    child_variables: unused (the child has nothing the supernet lacks).

  Returns:
    ``{"params": ..., "batch_stats": ...}`` for ``build_child(...).apply``.
  """
  del child_variables
  cfg = as_config(config)
  cfg.check_arch(np.asarray(arch))
  op_ids, _ = split_arch(arch, cfg.num_layers)
  needed = needed_reductions(arch, cfg)
  out_p = {"stem": params["stem"], "head": params["head"]}
  out_s = {"stem": batch_stats["stem"]}
  for i in range(cfg.num_layers):
    name, b = f"layer_{i}", f"b{int(op_ids[i])}"
    keys = [b] + (["bn"] if i > 0 else [])
    out_p[name] = {k: params[name][k] for k in keys}
    out_s[name] = {k: batch_stats[name][k] for k in keys}
    if i in cfg.pool_layers:
      name = f"pool_{i}"
      out_p[name] = {f"n{k}": params[name][f"n{k}"] for k in needed[i]}
      out_s[name] = {f"n{k}": batch_stats[name][f"n{k}"] for k in needed[i]}
  return {"params": out_p, "batch_stats": out_s}


def child_cost(arch: Any, *, num_classes: int = 10, init_channels: int = 36, double_channels: bool = True,
               input_shape: tuple[int, int, int] = (32, 32, 3), **unused: Any) -> dict[str, int]:
  """Closed-form cost of the macro network of ``arch``.

  The convention of ``nas_jax.cost.count_cost``: multiply-adds of the
  convolutions and the classifier for one image; trainable parameters (conv
  weights, BN scale and bias, the classifier's weights and bias). Only the
  reductions the child computes count.

  Example:
    >>> child_cost([0, 4, 0])["flops"] > child_cost([5, 5, 0])["flops"]  # conv 3x3 vs max pool
    True
  """
  del unused
  a = np.asarray(arch).reshape(-1)
  cfg = MacroConfig(num_classes, init_channels, layers_of_length(len(a)), double_channels)
  op_ids, _ = split_arch(a, cfg.num_layers)
  needed = needed_reductions(a, cfg)
  h, w, c_in = (int(v) for v in input_shape)
  c = cfg.init_channels
  flops, params = h * w * 9 * c_in * c, 9 * c_in * c + 2 * c
  for i, op in enumerate(int(v) for v in op_ids):
    flops += h * w * c * c  # the branch's conv1x1
    params += c * c + 2 * c
    if op in (CONV3, CONV5):
      k = KERNEL[op]
      flops += h * w * k * k * c * c
      params += k * k * c * c + 2 * c
    elif op in (SEP3, SEP5):
      k = KERNEL[op]
      flops += h * w * (k * k * c + c * c)
      params += k * k * c + c * c + 2 * c
    else:
      assert op in (AVG, MAX)
    if i > 0:
      params += 2 * c
    if i in cfg.pool_layers:
      c_new = 2 * c if cfg.double_channels else c
      h, w = math.ceil(h / 2), math.ceil(w / 2)
      n = len(needed[i])
      flops += n * h * w * c * c_new
      params += n * (c * c_new + 2 * c_new)
      c = c_new
  flops += c * num_classes
  params += c * num_classes + num_classes
  return {"flops": int(flops), "params": int(params)}
