"""Shared pieces of the ``macro`` networks: config, layout and the blocks of ENAS's macro network.

The network (ENAS ``src/cifar10/general_child.py``, ``whole_channels``):

- stem: conv3x3(C)-BN (no ReLU);
- layer ``i``: one of six branches on node ``i`` (the previous layer's
  output), each starting with its own conv1x1(C)-BN-ReLU:
  ``conv_kxk``: then conv kxk(C)-BN-ReLU; ``sep_conv_kxk``: then depthwise
  kxk, pointwise(C), BN, ReLU; ``avg/max_pool_3x3``: then a 3x3 pooling of
  stride 1 (the average does not count padding, TensorFlow's 'SAME');
  for ``i >= 1`` the chosen skip nodes are *added* to the branch output and
  the sum goes through BN (ENAS's search-time ``_enas_layer``);
- after each pool layer (layers ``L // 3 - 1`` and ``2 (L // 3) - 1``, ENAS
  ``pool_layers``) every node so far (stem included) goes through a
  factorized reduction (two offset stride-2 1x1 convs of C/2 channels each,
  concatenated, BN; no ReLU), so later skips read reduced nodes; with
  ``double_channels`` the reductions double the channels (ENAS's fixed-arc
  child; its search keeps ``C`` throughout, ``double_channels=False``);
- head: global average pooling of the last layer, linear classifier.

Differences from the authors' code: the fixed-arc child of ENAS concatenates
the skip nodes with the branch output and projects them with a ReLU-conv1x1-BN
(``_fixed_layer``); here the child adds them as the search does, so the
derived network is the one the supernet scored (and ``child_variables``
gives exactly the supernet's function). ENAS's fixed-arc child also builds
every ``sep_conv`` as a full convolution and has no pooling branch (its
``whole_channels`` branch ids 4 and 5 are ``pass``); here the child uses the
search-time branches. No dropout before the classifier (ENAS: keep 0.9).

Example:
    >>> cfg = MacroConfig(num_layers=6, init_channels=8)
    >>> cfg.pool_layers, cfg.channels()
    ((1, 3), [8, 8, 8, 8, 8, 8, 8])
    >>> MacroConfig(num_layers=6, init_channels=8, double_channels=True).channels()
    [8, 8, 8, 16, 16, 32, 32]
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import ops
from nas_jax.spaces.macro import NUM_OPS, OPS, arch_length, layout

Params = dict[str, Any]
CONV3, SEP3, CONV5, SEP5, AVG, MAX = range(NUM_OPS)
#: kernel size of each conv branch
KERNEL = {CONV3: 3, SEP3: 3, CONV5: 5, SEP5: 5}


@dataclasses.dataclass(frozen=True)
class MacroConfig:
  """Settings of ENAS's macro network.

  Attributes:
    num_classes: classifier outputs.
    init_channels: C, every layer's width (ENAS macro search
      ``--child_out_filters=36``); doubled after each pool layer when
      ``double_channels``.
    num_layers: L, the space's number of layers (ENAS: 12,
      ``--child_num_layers=12``); it must match the architectures.
    double_channels: double C at the pool layers (ENAS's fixed-arc child:
      ``out_filters *= 2``); False in ENAS's search.
    layers, num_nodes: accepted for the interface of the other families
      (the runner's ``layers`` counts cells there) and ignored: the number of
      layers is ``num_layers``.
  """
  num_classes: int = 10
  init_channels: int = 36
  num_layers: int = 12
  double_channels: bool = False
  layers: int | None = None
  num_nodes: int | None = None

  def __post_init__(self):
    for name in ("num_classes", "init_channels", "num_layers"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"macro MacroConfig.{name} must be an integer >= 1, got {value!r}")
    if self.init_channels % 2:
      raise ValueError(f"macro MacroConfig.init_channels={self.init_channels} must be even (the factorized "
                       "reductions split it in two halves, ENAS asserts the same)")

  @property
  def pool_layers(self) -> tuple[int, ...]:
    """Layers after which every node is reduced (ENAS general_child.py ``pool_layers``)."""
    distance = self.num_layers // 3
    return tuple(p for p in (distance - 1, 2 * distance - 1) if 0 <= p < self.num_layers - 1)

  def channels(self) -> list[int]:
    """Channels of node ``k`` (0 = stem, ``k`` = layer ``k - 1``) when produced."""
    out, c = [self.init_channels], self.init_channels
    for i in range(self.num_layers):
      out.append(c)
      if i in self.pool_layers and self.double_channels:
        c *= 2
    return out

  def check_arch(self, arch: Any) -> None:
    """``ValueError`` unless ``arch`` has this network's length (static shapes only)."""
    n = int(np.shape(arch)[-1])
    if np.ndim(arch) != 1 or n != arch_length(self.num_layers):
      raise ValueError(f"macro arch of shape {tuple(np.shape(arch))} does not fit num_layers={self.num_layers} "
                       f"(expected ({arch_length(self.num_layers)},)); set the network's num_layers to the "
                       "space's")


def as_config(config: MacroConfig | dict[str, Any]) -> MacroConfig:
  """``config`` itself, or a ``MacroConfig`` of the dict's known fields (others are ignored)."""
  if isinstance(config, MacroConfig):
    return config
  fields = {f.name for f in dataclasses.fields(MacroConfig)}
  return MacroConfig(**{k: v for k, v in dict(config).items() if k in fields})


def split_arch(arch: Any, num_layers: int) -> tuple[np.ndarray, list[list[int]]]:
  """Concrete ``(ops int[L], skips)``; ``skips[i]`` lists the nodes layer ``i`` adds."""
  a = np.asarray(arch).reshape(-1)
  layer, source, op_pos = layout(num_layers)
  skips = [[] for _ in range(num_layers)]
  for p in np.flatnonzero((source >= 0) & (a == 1)):
    skips[int(layer[p])].append(int(source[p]))
  return a[op_pos].astype(np.int32), skips


def needed_reductions(arch: Any, config: MacroConfig) -> dict[int, list[int]]:
  """Per pool layer, the nodes whose reduction a later layer (or another reduction) reads.

  Node ``k`` is read by layer ``k`` (its input) and by the layers that skip
  from it; its reduction after layer ``p`` is needed when such a read comes
  after layer ``p``. The supernet reduces every node; the child only these.

  Example:
    >>> needed_reductions([0, 0, 0, 0, 0, 0], MacroConfig(num_layers=3))  # pools after layers 0 and 1
    {0: [1], 1: [2]}
  """
  ops_, skips = split_arch(arch, config.num_layers)
  last_read = {k: k for k in range(config.num_layers + 1)}  # node k feeds layer k (or the head)
  for i, srcs in enumerate(skips):
    for j in srcs:
      last_read[j] = max(last_read[j], i)
  return {p: [k for k in range(p + 2) if last_read[k] > p] for p in config.pool_layers}


# --- blocks shared by the supernet and the child ------------------------------------
def init_stem(key, c_in, c):
  """The stem: conv3x3(``c_in -> c``)-BN."""
  return ops.init_relu_conv_bn(key, c_in, c, 3)


def apply_stem(p, s, x, train):
  """``(y, new_stats)`` of the stem (no ReLU)."""
  return ops.relu_conv_bn(p, s, x, train=train, relu=False, conv_impl=ops.stem_conv_impl())


def init_branch(key, op: int, c_in: int, c: int) -> tuple[Params, Params]:
  """Params/stats of one branch: its conv1x1 ``inp`` and, for convs, its ``out`` conv."""
  k_in, k_out = jax.random.split(key)
  p, s = {}, {}
  p["inp"], s["inp"] = ops.init_relu_conv_bn(k_in, c_in, c, 1)
  if op in (CONV3, CONV5):
    p["out"], s["out"] = ops.init_relu_conv_bn(k_out, c, c, KERNEL[op])
  elif op in (SEP3, SEP5):
    p["out"], s["out"] = ops.init_dil_conv(k_out, c, c, KERNEL[op])  # {"dw", "pw", "bn"}
  return p, s


def apply_branch(op: int, p, s, x, train, conv_impl="lax"):
  """One branch (a Python int op) on ``x``; returns ``(y, new_branch_stats)``."""
  y, s_in = ops.relu_conv_bn(p["inp"], s["inp"], x, train=train, relu=False)
  y = jax.nn.relu(y)
  new = {"inp": s_in}
  if op in (CONV3, CONV5):
    y, new["out"] = ops.relu_conv_bn(p["out"], s["out"], y, train=train, relu=False, conv_impl=conv_impl)
    y = jax.nn.relu(y)
  elif op in (SEP3, SEP5):
    y = ops.pointwise_conv(ops.depthwise_conv(y, p["out"]["dw"]), p["out"]["pw"])
    y, bn = ops.batch_norm(p["out"]["bn"], s["out"]["bn"], y, train=train)
    new["out"] = {"bn": bn}
    y = jax.nn.relu(y)
  elif op == AVG:
    y = ops.avg_pool(y)
  else:
    y = ops.max_pool(y)
  return y, new


def init_reduce(key, c_in, c_out):
  """Factorized reduction ``c_in -> c_out`` (ENAS ``_factorized_reduction``)."""
  return ops.init_factorized_reduce(key, c_in, c_out)


def apply_reduce(p, s, x, train):
  """Two offset stride-2 1x1 convs, concatenated, BN (no ReLU, unlike ``ops.factorized_reduce``)."""
  a = x[:, ::2, ::2, :]
  b = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1::2, 1::2, :]
  y = jnp.concatenate([ops.pointwise_conv(a, p["w1"]), ops.pointwise_conv(b, p["w2"])], axis=-1)
  y, bn = ops.batch_norm(p["bn"], s["bn"], y, train=train)
  return y, {"bn": bn}


def init_head(key, c, num_classes):
  """The classifier on the globally averaged last layer."""
  return {"dense": ops.init_dense(key, c, num_classes)}, {}


def apply_head(p, h):
  """Logits: global average pooling, linear."""
  return ops.dense(p["dense"], jnp.mean(h, axis=(1, 2)))


__all__ = ["AVG", "CONV3", "CONV5", "KERNEL", "MAX", "MacroConfig", "OPS", "SEP3", "SEP5", "apply_branch",
           "apply_head", "apply_reduce", "apply_stem", "as_config", "init_branch", "init_head", "init_reduce",
           "init_stem", "needed_reductions", "split_arch"]
