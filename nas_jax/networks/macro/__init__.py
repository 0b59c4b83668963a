"""Networks of ENAS's ``macro`` space: the macro network and its weight-sharing supernet.

Architecture (see ``nas_jax.spaces.macro``): ``int32[L + L(L-1)/2]``, per
layer an op id (``0 conv_3x3, 1 sep_conv_3x3, 2 conv_5x5, 3 sep_conv_5x5,
4 avg_pool_3x3, 5 max_pool_3x3``) followed by its skip bits. The network
(``common``'s docstring, after ENAS ``src/cifar10/general_child.py``): a
conv stem, L layers each applying its branch to the previous layer and
adding its skip nodes before a batch norm, factorized reductions of every
node after the pool layers, global pooling and a linear classifier.

The package, by concern:

- ``common``: ``MacroConfig``, ``needed_reductions`` and the blocks;
- ``supernet``: the weight-sharing supernet, the architecture traced
  (``init_supernet``, ``supernet_apply``, ``make_train_step``,
  ``make_eval_archs``);
- ``child``: the child network (``MacroChild``, ``build_child``,
  ``child_variables_from_supernet``, ``child_cost``).

``FAMILY`` is the family object (``nas_jax.networks.base.NetworkFamily``)
that ``nas_jax.networks.family("macro")`` returns; it has a supernet, so
``evaluators.supernet.SupernetEvaluator`` and ``--strategy enas_oneshot``
run on the space unchanged; no continuous relaxation (ENAS's macro space is
searched by its controller).

Example:
    >>> from nas_jax.spaces.macro import MacroSpace
    >>> FAMILY.tasks, FAMILY.supernet.config(init_channels=4, num_layers=3)
    (('images',), MacroConfig(num_classes=10, init_channels=4, num_layers=3, double_channels=False, layers=None, num_nodes=None))
    >>> model = FAMILY.build_child(MacroSpace(3), [0, 4, 1, 3, 0, 1], num_classes=10, init_channels=4)
    >>> model.arch, model.double_channels
    ((0, 4, 1, 3, 0, 1), True)
    >>> FAMILY.cost([0, 4, 1, 3, 0, 1], init_channels=4, input_shape=(8, 8, 1))
    {'flops': 19424, 'params': 1910}
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from nas_jax.networks import supernet as supernet_lib

from . import child as child_lib
from .child import MacroChild, build_child, child_cost, child_variables_from_supernet
from .common import MacroConfig, needed_reductions
from .supernet import (default_optimizer, init_supernet, init_train_state, make_eval_archs, make_train_step,
                       supernet_apply)

__all__ = ["FAMILY", "MacroChild", "MacroConfig", "build_child", "child_cost", "child_variables_from_supernet",
           "default_optimizer", "init_supernet", "init_train_state", "make_eval_archs", "make_train_step",
           "needed_reductions", "supernet_apply"]


class MacroSupernet(supernet_lib.WeightSharingBase):
  """The weight-sharing supernet as a ``networks.base.WeightSharing`` object.

  ``config(**fields)`` builds a ``MacroConfig`` (``num_layers`` must be the
  space's L, 12 for the registry's ``macro``: ``space_fields(space)`` gives
  it; ``layers`` and ``num_nodes`` are accepted and ignored); the other
  methods are the module functions of the same meaning.
  """

  config_class = MacroConfig

  def space_fields(self, space: Any) -> dict[str, Any]:
    """``{"num_layers": L}`` of the space (e.g. ``MacroSpace(6)``: 6; the registry's ``macro``: 12)."""
    return {"num_layers": int(space.num_layers)}

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


class MacroFamily:
  """The ``macro`` network family (``networks.base.NetworkFamily``)."""

  name = "macro"
  tasks = ("images",)
  supernet = MacroSupernet()
  continuous = None

  def build_child(self, space: Any, arch: Any, **config: Any) -> MacroChild:
    """See the module function ``build_child``."""
    return build_child(space, arch, **config)

  def cost(self, arch: Any, **config: Any) -> dict[str, int]:
    """Closed-form FLOPs / parameters of the child (``child.child_cost``; ``runner.costs.CostModel``)."""
    return child_lib.child_cost(arch, **config)


FAMILY = MacroFamily()
