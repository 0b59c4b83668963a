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
family may provide a closed form (``family.cost``: every family here does),
tested equal to the traced count.

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
    fn = getattr(fam, "cost", None)
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
