"""The child network of one ``nasnet`` architecture, and its variables taken from the supernet.

Same macro structure and op functions as the supernets (``common.py``). Cell
output: the concatenation of the cell's *loose ends* (nodes that no other node
uses). The weight-sharing supernet concatenates all B nodes, each times its
0/1 loose-end flag; every consumer of a cell output is linear in its input
channels after a ReLU, so ``child_variables_from_supernet`` takes the rows of
those weights that the loose ends use, and the child then computes exactly the
supernet's function for its architecture (an independent implementation of it,
which the tests use as the reference).

Example:
    >>> from nas_jax.networks.nasnet import SupernetConfig, init_supernet
    >>> from nas_jax.spaces import get_space
    >>> space = get_space("nasnet")
    >>> arch = np.array([[[0, 4, 1, 0]] * 5, [[0, 2, 1, 3]] * 5])  # normal, reduction cell
    >>> child = build_child(space, arch, num_classes=10, init_channels=4, layers=3)
    >>> cfg = SupernetConfig(num_classes=10, init_channels=4, layers=3)
    >>> params, stats = init_supernet(jax.random.key(0), cfg, (8, 8, 1))
    >>> variables = child_variables_from_supernet(arch, params, stats, cfg)
    >>> sum(p.size for p in jax.tree_util.tree_leaves(variables["params"]))  # of the supernet's 40766
    2966

  ``child.apply(variables, x, train=False)`` then returns ``(logits, None)``,
  the supernet's logits for ``arch`` with running statistics (not run here:
  the child's forward pass compiles for several seconds).
"""
from __future__ import annotations

import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import ops

from .common import (AVG, IDENTITY, MAX, SEP3, SEP5, Params, SupernetConfig, apply_head, apply_preprocess,
                     apply_stem, as_config, check_arch, init_head, init_preprocess, init_stem, loose_ends)


def _child_channels(cfg: SupernetConfig, arch: np.ndarray) -> list[dict[str, Any]]:
  """The supernet plan plus, per cell, its loose ends and input/output widths."""
  plan = cfg.plan()
  c_stem = cfg.stem_multiplier * cfg.init_channels
  c_pp, c_p = c_stem, c_stem
  for cell in plan:
    loose = loose_ends(arch[int(cell["reduction"])])
    cell.update(loose=loose, c_pp=c_pp, c_p=c_p)
    c_pp, c_p = c_p, len(loose) * cell["channels"]
  return plan


def _init_child_cell(key, cell, cell_arch, num_nodes):
  c = cell["channels"]
  kpre, kn = jax.random.split(key)
  p, s = init_preprocess(kpre, cell["c_pp"], cell["c_p"], c, cell["reduction_prev"])
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
  x0, x1, new_s = apply_preprocess(p, s, h0, h1, cell["reduction_prev"], train)
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
    p, s = module("stem", lambda k: init_stem(k, c_in, c_stem))
    h, new = apply_stem(p, s.value, x, train)
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
    p_head = self.param("classifier", lambda key: init_head(key, c_last, cfg.num_classes))
    return apply_head(p_head, h1), aux_logits


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
  cfg = as_config(config)
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


def _half(size: tuple[int, int]) -> tuple[int, int]:
  return (size[0] + 1) // 2, (size[1] + 1) // 2


def child_cost(arch: Any, *, num_classes: int = 10, init_channels: int = 16, layers: int = 8,
                num_nodes: int = 5, stem_multiplier: int = 3,
                input_shape: tuple[int, int, int] = (32, 32, 3), **unused: Any) -> dict[str, int]:
  """Closed-form cost of the ``nasnet`` child network of ``arch`` (auxiliary head excluded).

  Stem conv3x3 (``stem_multiplier * C``); per cell a 1x1 (or, after a
  reduction, a factorized reduce) preprocessing of each input; per node input
  a separable conv (two ReLU-dw-pw-BN halves, the first strided on a
  reduction cell's inputs), a pool, an identity or, strided, a factorized
  reduce; the cell output concatenates the loose ends; global pooling and a
  linear classifier. Same convention as ``nas_jax.cost.count_cost``.

  Example:
    >>> arch = np.zeros((2, 5, 4), np.int32)  # every node: sep_conv_3x3 of input 0, twice
    >>> child_cost(arch, init_channels=8, layers=3, input_shape=(8, 8, 1))["params"] > 0
    True
  """
  del unused
  sep_k = {SEP3: 3, SEP5: 5}
  identity = IDENTITY
  a = np.asarray(arch, np.int64).reshape(2, num_nodes, 4)
  cfg = SupernetConfig(num_classes=num_classes, init_channels=init_channels, layers=layers,
                       num_nodes=num_nodes, stem_multiplier=stem_multiplier)
  h, w, c_in = (int(v) for v in input_shape)
  c_stem = stem_multiplier * init_channels
  flops, params = h * w * 9 * c_in * c_stem, 9 * c_in * c_stem + 2 * c_stem
  size_pp = size_p = (h, w)
  c_pp = c_p = c_stem
  for cell in cfg.plan():
    c, red = cell["channels"], cell["reduction"]
    area_p = size_p[0] * size_p[1]
    if cell["reduction_prev"]:  # factorized reduce of c_{k-2} to the size of c_{k-1}
      flops += area_p * c_pp * c
    else:
      flops += size_pp[0] * size_pp[1] * c_pp * c
    flops += area_p * c_p * c
    params += (c_pp * c + 2 * c) + (c_p * c + 2 * c)
    out = _half(size_p) if red else size_p
    area = out[0] * out[1]
    cell_arch = a[int(red)]
    for n in range(num_nodes):
      for slot in range(2):
        inp, op = int(cell_arch[n, 2 * slot]), int(cell_arch[n, 2 * slot + 1])
        if op in sep_k:
          k = sep_k[op]
          flops += 2 * area * (k * k * c + c * c)
          params += 2 * (k * k * c + c * c + 2 * c)
        elif op == identity and red and inp < 2:
          flops += area * c * c
          params += c * c + 2 * c
    size_pp, size_p = size_p, out
    c_pp, c_p = c_p, len(loose_ends(cell_arch)) * c
  flops += c_p * num_classes
  params += c_p * num_classes + num_classes
  return {"flops": int(flops), "params": int(params)}
