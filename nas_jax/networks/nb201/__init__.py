"""Networks of the ``nb201`` cell space: the NAS-Bench-201 network, its
weight-sharing supernet and its continuous relaxation.

Architecture (see ``nas_jax.spaces.nb201``): ``int32[6]``, one op per edge
``(1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2)``; ops ``0 none,
1 skip_connect, 2 nor_conv_1x1, 3 nor_conv_3x3, 4 avg_pool_3x3``.

Macro structure (NAS-Bench-201, Dong & Yang 2020): stem conv3x3(C)-BN; N cells
at C; a residual block to 2C with stride 2; N cells at 2C; a residual block to
4C; N cells at 4C; BN-ReLU, global average pooling, linear classifier.
``layers`` is N (cells per stage; the benchmark uses N = 5, C = 16). Residual
block: ``ReLU-conv3x3/2-BN -> ReLU-conv3x3-BN`` plus a shortcut
``avgpool2x2/2 -> conv1x1``. Cell: node ``j`` sums ``op(node_i)`` over its
incoming edges; the cell output is node 3. Ops: ``nor_conv_kxk`` is
ReLU-conv-BN, ``avg_pool_3x3`` does not count padding, ``none`` is zero.

The package, by concern:

- ``common``: ``SupernetConfig``, ``useful_edges`` and the blocks every network
  shares;
- ``supernet``: the weight-sharing supernet (``init_supernet``,
  ``supernet_apply``, ``make_train_step``, ``make_eval_archs``);
- ``continuous``: the continuous relaxation for DARTS / BayesNAS
  (``ContinuousConfig``; ``init``, ``apply``, ``derive``, ``one_hot_weights``
  of that module);
- ``child``: the child network (``NB201Child``, ``build_child``,
  ``child_variables_from_supernet``).

Their public names are re-exported here, and ``FAMILY`` is the family object
(``nas_jax.networks.base.NetworkFamily``) that
``nas_jax.networks.family("nb201")`` returns.

Example:
    >>> from nas_jax.spaces import get_space
    >>> space = get_space("nb201")
    >>> FAMILY.tasks, FAMILY.supernet.config(init_channels=4, layers=1)
    (('images',), SupernetConfig(num_classes=10, init_channels=4, layers=1, num_nodes=4))
    >>> FAMILY.continuous.weights_shape(), FAMILY.continuous.op_names[3]
    ((6, 5), 'nor_conv_3x3')
    >>> model = FAMILY.build_child(space, [3, 1, 2, 0, 4, 3], num_classes=10, init_channels=4, layers=1)
    >>> model.arch, model.layers
    ((3, 1, 2, 0, 4, 3), 1)
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
import optax

from nas_jax.networks import supernet as supernet_lib
from nas_jax.spaces.nb201 import EDGES, NUM_EDGES, NUM_OPS, OPS

from . import child as child_lib
from . import continuous as continuous_lib
from .child import NB201Child, build_child, child_variables_from_supernet
from .common import AVG, CONV1, CONV3, NONE, SKIP, SupernetConfig, useful_edges
from .supernet import (default_optimizer, init_supernet, init_train_state, make_eval_archs, make_train_step,
                       supernet_apply)

__all__ = [
    "AVG", "CONV1", "CONV3", "ContinuousConfig", "EDGES", "NB201Child", "NONE", "NUM_EDGES", "NUM_OPS", "OPS", "SKIP",
    "SupernetConfig", "build_child", "child_variables_from_supernet", "default_optimizer", "init_supernet",
    "init_train_state", "make_eval_archs", "make_train_step", "supernet_apply", "useful_edges", "FAMILY",
]


class NB201Supernet(supernet_lib.WeightSharingBase):
  """The weight-sharing supernet as a ``networks.base.WeightSharing`` object.

  ``config(**fields)`` builds a ``SupernetConfig``; the other methods are the
  module functions of the same meaning (``init_supernet``,
  ``supernet_apply``, ``make_train_step``, ``make_eval_archs``,
  ``child_variables_from_supernet``). Architectures are ``int32[6]``.
  """

  config_class = SupernetConfig

  def init(self, key: jax.Array, config: Any, input_shape: tuple[int, ...]) -> tuple[dict, dict]:
    """See ``init_supernet``."""
    return init_supernet(key, config, input_shape)

  def apply(self, params: dict, batch_stats: dict, arch: jax.Array, x: jax.Array, *, config: Any, train: bool,
            rng: jax.Array | None = None, drop_prob: float | jax.Array = 0.0,
            forward_only: bool = False) -> tuple[jax.Array, dict]:
    """See ``supernet_apply``."""
    return supernet_apply(params, batch_stats, arch, x, config=config, train=train, rng=rng, drop_prob=drop_prob,
                          forward_only=forward_only)

  def make_train_step(self, config: Any, tx: optax.GradientTransformation, *, donate: bool = True,
                      drop_path: float | Callable = 0.0) -> Callable:
    """See the module function ``make_train_step``."""
    return make_train_step(config, tx, donate=donate, drop_path=drop_path)

  def make_eval_archs(self, config: Any, *, method: str = "map", bn: str = "batch") -> Callable:
    """See the module function ``make_eval_archs``."""
    return make_eval_archs(config, method=method, bn=bn)

  def child_variables(self, arch: Any, params: dict, batch_stats: dict, config: Any,
                      child_variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """See ``child_variables_from_supernet``."""
    return child_variables_from_supernet(arch, params, batch_stats, config, child_variables)


ContinuousConfig = continuous_lib.ContinuousConfig


class NB201Continuous:
  """The continuous relaxation as a ``networks.base.ContinuousRelaxation`` object (``continuous.py``).

  Weights ``float32[6, 5]`` (edge, op in ``OPS`` order, ``none`` included),
  shared by all cells and used as given; ``config(**fields)`` builds a
  ``ContinuousConfig`` (the supernet's fields plus the cells' batch-norm
  settings ``cell_bn_affine`` and ``cell_bn_running_stats``); ``derive`` is
  the arg-max op per edge (NAS-Bench-201's ``genotype()``).
  """

  op_names = OPS

  def config(self, **fields: Any) -> ContinuousConfig:
    """A ``ContinuousConfig`` from keyword fields (unknown ones raise ``ValueError``)."""
    return supernet_lib.config_from_fields(ContinuousConfig, fields)

  def weights_shape(self, config: Any = None) -> tuple[int, int]:
    """``(6, 5)``."""
    return continuous_lib.weights_shape(config)

  def init(self, key: jax.Array, config: Any, input_shape: tuple[int, ...]) -> tuple[dict, dict]:
    """See ``continuous.init``."""
    return continuous_lib.init(key, config, input_shape)

  def apply(self, params: dict, batch_stats: dict, weights: jax.Array, x: jax.Array, *, config: Any,
            train: bool) -> tuple[jax.Array, dict]:
    """See ``continuous.apply``."""
    return continuous_lib.apply(params, batch_stats, weights, x, config=config, train=train)

  def derive(self, weights: Any, config: Any = None) -> np.ndarray:
    """See ``continuous.derive``."""
    return continuous_lib.derive(weights, config)

  def one_hot_weights(self, arch: Any, config: Any = None) -> jax.Array:
    """See ``continuous.one_hot_weights``."""
    return continuous_lib.one_hot_weights(arch)


class NB201Family:
  """The ``nb201`` network family (``networks.base.NetworkFamily``)."""

  name = "nb201"
  tasks = ("images",)
  supernet = NB201Supernet()
  continuous = NB201Continuous()

  def build_child(self, space: Any, arch: Any, **config: Any) -> NB201Child:
    """See the module function ``build_child``."""
    return build_child(space, arch, **config)

  def cost(self, arch: Any, **config: Any) -> dict[str, int]:
    """Closed-form FLOPs / parameters of the child (``child.child_cost``; ``runner.costs.CostModel``)."""
    return child_lib.child_cost(arch, **config)


FAMILY = NB201Family()
