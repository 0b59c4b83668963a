"""Networks of the ``nasnet`` cell space (NAO / ENAS micro): supernets and the child network.

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

The package, by concern:

- ``common``: ops, ``SupernetConfig``, architecture helpers, the blocks every
  network shares (stem, preprocessing, an edge's ops, classifier);
- ``supernet``: the weight-sharing supernet's training path (``init_supernet``,
  ``supernet_apply``, the cell scan with its hand-written backward,
  drop-path, ``make_train_step``);
- ``supernet_eval``: its forward-only evaluation (``supernet_eval_apply``,
  ``make_eval_archs``);
- ``continuous``: the continuous relaxation (DARTS / BayesNAS);
- ``child``: the child network (``NasNetChild``, ``build_child``,
  ``child_variables_from_supernet``).

The public names of all five are re-exported here, and ``FAMILY`` is the
family object (``nas_jax.networks.base.NetworkFamily``) that
``nas_jax.networks.family("nasnet")`` returns.

Example:
    >>> from nas_jax import networks
    >>> net = networks.family("nasnet").supernet
    >>> cfg = net.config(num_classes=10, init_channels=4, layers=3)
    >>> params, stats = net.init(jax.random.key(0), cfg, (8, 8, 1))
    >>> sorted(params), sum(p.size for p in jax.tree_util.tree_leaves(params))
    (['cell_0', 'cell_1', 'cell_2', 'classifier', 'stem'], 40766)

  Training and scoring (not run here: compiling the train step takes tens of
  seconds, the scoring call about 5 s)::

    tx = net.default_optimizer()
    state = net.init_train_state(params, stats, tx)
    state, metrics = net.make_train_step(cfg, tx)(state, arch, (x, y), jax.random.key(1))
    acc, loss = net.make_eval_archs(cfg)(state["params"], state["batch_stats"], archs, x_val, y_val)
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import optax

from nas_jax.networks import supernet as supernet_lib

from . import child as child_lib
from . import continuous as continuous_lib
from .child import NasNetChild, build_child, child_variables_from_supernet
from .common import (AVG, IDENTITY, MAX, NUM_OPS, OPS, SEP3, SEP5, SupernetConfig, as_config, check_arch,
                     loose_end_mask, random_arch)
from .continuous import (continuous_apply, continuous_cell, derive_arch, edge_index, init_arch_params,
                         init_continuous, num_mixed_edges)
from .supernet import (default_optimizer, drop_path_scale, init_supernet, init_train_state, make_train_step,
                       supernet_apply)
from .supernet_eval import make_eval_archs, supernet_eval_apply

__all__ = [
    "AVG", "IDENTITY", "MAX", "NUM_OPS", "OPS", "SEP3", "SEP5", "NasNetChild", "SupernetConfig", "build_child",
    "check_arch", "child_variables_from_supernet", "continuous_apply", "continuous_cell", "default_optimizer",
    "derive_arch", "drop_path_scale", "edge_index", "init_arch_params", "init_continuous", "init_supernet",
    "init_train_state", "loose_end_mask", "make_eval_archs", "make_train_step", "num_mixed_edges",
    "random_arch", "supernet_apply", "supernet_eval_apply", "FAMILY",
]


class NasnetSupernet(supernet_lib.WeightSharingBase):
  """The weight-sharing supernet as a ``networks.base.WeightSharing`` object.

  ``config(**fields)`` builds a ``SupernetConfig``; the other methods are the
  module functions of the same meaning (``init_supernet``,
  ``supernet_apply``, ``make_train_step``, ``make_eval_archs``,
  ``child_variables_from_supernet``). Architectures are ``int32[2, B, 4]``.
  """

  config_class = SupernetConfig

  def init(self, key: jax.Array, config: Any, input_shape: tuple[int, ...]) -> tuple[dict, dict]:
    """See ``init_supernet``."""
    return init_supernet(key, config, input_shape)

  def apply(self, params: dict, batch_stats: dict, arch: jax.Array, x: jax.Array, *, config: Any, train: bool,
            rng: jax.Array | None = None, drop_prob: float | jax.Array = 0.0) -> tuple[jax.Array, dict]:
    """See ``supernet_apply``."""
    return supernet_apply(params, batch_stats, arch, x, config=config, train=train, rng=rng, drop_prob=drop_prob)

  def make_train_step(self, config: Any, tx: optax.GradientTransformation, *, donate: bool = True,
                      drop_path: float | Callable = 0.0) -> Callable:
    """See the module function ``make_train_step``."""
    return make_train_step(config, tx, donate=donate, drop_path=drop_path)

  def make_eval_archs(self, config: Any, *, method: str = "map", bn: str = "batch",
                      fast: bool | None = None) -> Callable:
    """See the module function ``make_eval_archs``."""
    return make_eval_archs(config, method=method, bn=bn, fast=fast)

  def child_variables(self, arch: Any, params: dict, batch_stats: dict, config: Any,
                      child_variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """See ``child_variables_from_supernet``."""
    return child_variables_from_supernet(arch, params, batch_stats, config, child_variables)


class NasnetContinuous:
  """The continuous relaxation as a ``networks.base.ContinuousRelaxation`` object.

  The weights (``float32[2, E, 5]``: cell type, mixed edge ``edge_index(node,
  input)``, op) are used as given, ``sum_o w[c, e, o] * op_o(h)`` on every
  edge (``continuous_apply(..., mode="switch")``): a DARTS method passes
  ``softmax(alpha, -1)``, BayesNAS its switches. ``derive`` is ``derive_arch``
  (per node the two inputs with the largest op weight, each with its arg-max
  op; DARTS's rule without the ``none`` op, which this space lacks).
  """

  op_names = OPS

  def config(self, **fields: Any) -> SupernetConfig:
    """A ``SupernetConfig`` from keyword fields."""
    return supernet_lib.config_from_fields(SupernetConfig, fields)

  def weights_shape(self, config: Any) -> tuple[int, int, int]:
    """``(2, E, 5)`` with ``E = num_mixed_edges(num_nodes)``."""
    return (2, num_mixed_edges(as_config(config).num_nodes), len(OPS))

  def init(self, key: jax.Array, config: Any, input_shape: tuple[int, ...]) -> tuple[dict, dict]:
    """See ``init_continuous``."""
    return init_continuous(key, config, input_shape)

  def apply(self, params: dict, batch_stats: dict, weights: jax.Array, x: jax.Array, *, config: Any,
            train: bool) -> tuple[jax.Array, dict]:
    """``continuous_apply(..., mode="switch")``: the weights used as given."""
    return continuous_apply(params, batch_stats, weights, x, config=config, train=train, mode="switch")

  def derive(self, weights: Any, config: Any = None) -> np.ndarray:
    """See ``derive_arch`` (``config`` gives B; None: the default 5)."""
    return derive_arch(weights, 5 if config is None else as_config(config).num_nodes)

  def one_hot_weights(self, arch: Any, config: Any = None) -> jax.Array:
    """See ``continuous.one_hot_weights`` (the cell output keeps all B nodes)."""
    return continuous_lib.one_hot_weights(arch, None if config is None else as_config(config).num_nodes)


class NasnetFamily:
  """The ``nasnet`` network family (``networks.base.NetworkFamily``)."""

  name = "nasnet"
  tasks = ("images",)
  supernet = NasnetSupernet()
  continuous = NasnetContinuous()

  def build_child(self, space: Any, arch: Any, **config: Any) -> NasNetChild:
    """See the module function ``build_child``."""
    return build_child(space, arch, **config)

  def cost(self, arch: Any, **config: Any) -> dict[str, int]:
    """Closed-form FLOPs / parameters of the child (``child.child_cost``; ``runner.costs.CostModel``)."""
    return child_lib.child_cost(arch, **config)


FAMILY = NasnetFamily()
