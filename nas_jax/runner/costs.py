"""FLOPs and parameter counts of every evaluated architecture, cached by arch id.

The runner records both for every evaluation (history lines ``flops`` and
``params``), passes them to ``strategy.tell(..., costs=...)`` and draws the
frontier of search score against FLOPs. The network they describe is the one
a user would deploy: the child network with the final-training settings on the
experiment's data, unless the evaluator names another one (the tabular
evaluator: the benchmark's own network, ``Evaluator.cost_network()``).

Counting is exact (``nas_jax.cost``: multiply-adds of one example's
inference pass, trainable parameters). Tracing a child network takes 0.3-1.3 s
on a 2-core CPU, too slow to repeat for thousands of table look-ups, so a
family may provide a closed form (``family.cost``, or the ``ANALYTIC`` table
here), tested equal to the traced count.

Example:
    >>> from nas_jax.spaces import get_space
    >>> model = CostModel(get_space("nb201"), {"num_classes": 10, "init_channels": 16, "layers": 5},
    ...                   input_shape=(32, 32, 3))
    >>> model([[3, 3, 3, 3, 3, 3], [0, 0, 0, 0, 0, 0]])  # NAS-Bench-201's CIFAR-10 network
    {'flops': array([2.2011968e+08, 7.7830400e+06]), 'params': array([1531546.,   73306.])}
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np


def _out(size: int, stride: int) -> int:
  """Spatial size after a 'same'-padded 3x3 or 1x1 convolution with ``stride``."""
  return (size - 1) // stride + 1


def nb201_cost(arch: Any, *, num_classes: int = 10, init_channels: int = 16, layers: int = 5,
               input_shape: tuple[int, int, int] = (32, 32, 3), **unused: Any) -> dict[str, int]:
  """Closed-form cost of the NAS-Bench-201 network of ``arch``.

  The same convention as ``nas_jax.cost.count_cost``: multiply-adds of the
  convolutions and the classifier for one image; trainable parameters (conv
  weights, BN scale and bias, the classifier's weights and bias). Only the
  edges that reach the cell output count (the child computes only those).

  Example:
    >>> nb201_cost([0, 0, 0, 0, 0, 0])["flops"] < nb201_cost([3, 3, 3, 3, 3, 3])["flops"]
    True
  """
  del unused
  from nas_jax.networks.nb201 import useful_edges  # pylint: disable=import-outside-toplevel
  from nas_jax.spaces.nb201 import OPS  # pylint: disable=import-outside-toplevel
  conv_k = {OPS.index("nor_conv_1x1"): 1, OPS.index("nor_conv_3x3"): 3}
  a = [int(v) for v in np.asarray(arch).reshape(-1)]
  useful = useful_edges(a)
  h, w, c_in = (int(v) for v in input_shape)
  c = init_channels
  flops = h * w * 9 * c_in * c
  params = 9 * c_in * c + 2 * c
  for stage in range(3):
    if stage:
      h2, w2 = _out(h, 2), _out(w, 2)
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


def _half(size: tuple[int, int]) -> tuple[int, int]:
  return (size[0] + 1) // 2, (size[1] + 1) // 2


def nasnet_cost(arch: Any, *, num_classes: int = 10, init_channels: int = 16, layers: int = 8,
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
    >>> nasnet_cost(arch, init_channels=8, layers=3, input_shape=(8, 8, 1))["params"] > 0
    True
  """
  del unused
  from nas_jax.networks.nasnet.common import SupernetConfig, loose_ends  # pylint: disable=import-outside-toplevel
  from nas_jax.spaces.nasnet import OPS  # pylint: disable=import-outside-toplevel
  sep_k = {OPS.index("sep_conv_3x3"): 3, OPS.index("sep_conv_5x5"): 5}
  identity = OPS.index("identity")
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


#: Closed forms by space name (``family.cost`` takes precedence).
ANALYTIC: dict[str, Callable[..., dict[str, int]]] = {"nb201": nb201_cost, "nasnet": nasnet_cost}


class CostModel:
  """FLOPs and parameters of architectures of one space and network size.

  Args:
    space: the search space.
    network: ``build_child`` keywords (``num_classes``, ``init_channels``,
      ``layers``, ... or ``vocab_size`` ...).
    input_shape: one example's shape (``(H, W, C)`` for images).

  Calling it on ``K`` architectures returns ``{"flops": float[K], "params":
  float[K]}``; each architecture is counted once (cached by ``arch_id``).
  """

  def __init__(self, space, network: dict[str, Any], input_shape: tuple[int, ...]):
    self.space = space
    self.network = {k: v for k, v in dict(network).items() if k != "auxiliary"}
    self.input_shape = tuple(int(v) for v in input_shape)
    self._cache: dict[str, tuple[int, int]] = {}
    self._fn = self._pick()

  def _pick(self) -> Callable[[Any], dict[str, int]]:
    from nas_jax import networks  # pylint: disable=import-outside-toplevel
    fam = None
    try:
      fam = networks.family(self.space.name)
    except (ValueError, ImportError):
      pass
    fn = getattr(fam, "cost", None) or ANALYTIC.get(self.space.name)
    if fn is not None:
      return lambda arch: fn(arch, input_shape=self.input_shape, **self.network)
    from nas_jax import cost  # pylint: disable=import-outside-toplevel
    return lambda arch: cost.count_cost(self.space, arch, input_shape=self.input_shape,
                                        **self.network)

  def __call__(self, archs: Any) -> dict[str, np.ndarray]:
    flops, params = [], []
    for arch in np.asarray(archs):
      key = self.space.arch_id(arch)
      if key not in self._cache:
        c = self._fn(arch)
        self._cache[key] = (int(c["flops"]), int(c["params"]))
      f, p = self._cache[key]
      flops.append(f)
      params.append(p)
    return {"flops": np.asarray(flops, np.float64), "params": np.asarray(params, np.float64)}

  def describe(self) -> dict[str, Any]:
    """The network the costs describe (for result.json)."""
    return {"network": dict(self.network), "input_shape": list(self.input_shape),
            "convention": "flops: multiply-adds of one example's inference pass; "
                          "params: trainable parameters"}


def finite_or_none(x: float) -> float | int | None:
  """``int(x)`` for a finite whole number, ``x`` for another finite one, else None."""
  if x is None or not math.isfinite(x):
    return None
  return int(x) if float(x).is_integer() else float(x)
