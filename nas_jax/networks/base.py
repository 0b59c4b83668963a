"""The contract of a network family: what a search space's networks provide.

Every search space has one network family (``nas_jax.networks.family(space
name)``), an object that satisfies ``NetworkFamily``. A family always builds
the fixed *child* network of one architecture (final training, scratch
evaluation, costs) and says which tasks it serves. It may also offer a
weight-sharing supernet (``supernet``: the architecture is a traced input, one
compilation serves every architecture; ENAS, NAO-WS, random search with weight
sharing) and a continuous relaxation (``continuous``: every op weighted by
architecture parameters; DARTS, BayesNAS). A capability the family lacks is
``None``, and the evaluator or method that needs it says so in one line.

Example:
    >>> from nas_jax import networks
    >>> fam = networks.family("nb201")
    >>> isinstance(fam, NetworkFamily), fam.tasks
    (True, ('images',))
    >>> fam.supernet is not None
    True
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import jax
import optax

Params = dict[str, Any]


@runtime_checkable
class WeightSharing(Protocol):
  """A weight-sharing supernet whose architecture is a traced int array.

  ``config(**fields)`` builds the family's network config (``num_classes``,
  ``init_channels``, ``layers``, ... as the family documents); the rest takes
  that config. Optionally ``space_fields(space)`` gives the config fields a
  space fixes (the macro space's ``num_layers``; ``supernet.WeightSharingBase``:
  none), which evaluators pass to ``config``.
  """

  def config(self, **fields: Any) -> Any:
    """The network config (a frozen dataclass) from keyword fields."""

  def init(self, key: jax.Array, config: Any, input_shape: tuple[int, ...]) -> tuple[Params, Params]:
    """``(params, batch_stats)`` of the supernet."""

  def init_train_state(self, params: Params, batch_stats: Params,
                       tx: optax.GradientTransformation) -> dict[str, Any]:
    """``{"params", "batch_stats", "opt_state", "step"}``."""

  def default_optimizer(self, learning_rate: Any = 0.05, momentum: float = 0.9,
                        weight_decay: float = 3e-4, clip_norm: float = 5.0) -> optax.GradientTransformation:
    """The supernet's optimizer (SGD, Nesterov momentum, weight decay, clipping)."""

  def make_train_step(self, config: Any, tx: optax.GradientTransformation, *, donate: bool = True,
                      drop_path: float | Callable = 0.0) -> Callable:
    """``train_step(state, arch, (x, y), key) -> (state, {"loss", "acc"})``, jitted once."""

  def make_eval_archs(self, config: Any, *, method: str = "map", bn: str = "batch") -> Callable:
    """``eval_archs(params, batch_stats, archs[K, ...], x, y) -> (acc[K], loss[K])``, jitted once."""

  def child_variables(self, arch: Any, params: Params, batch_stats: Params, config: Any,
                      child_variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The child network's variables taken from the supernet (same function)."""


@runtime_checkable
class ContinuousRelaxation(Protocol):
  """A supernet in which every op of every edge runs, weighted (DARTS, BayesNAS).

  The op weights are given already transformed (softmax for DARTS, raw
  switches for BayesNAS): ``apply`` computes ``sum_o w[..., o] * op_o(x)`` on
  every edge. ``weights_shape`` is the shape of those weights (one pytree leaf
  or a dict of leaves per cell type); ``op_names`` names the last axis.
  """

  op_names: tuple[str, ...]

  def config(self, **fields: Any) -> Any:
    """The network config (a frozen dataclass) from keyword fields."""

  def weights_shape(self, config: Any) -> Any:
    """Shape (tuple, or a dict of tuples) of the op weights."""

  def init(self, key: jax.Array, config: Any, input_shape: tuple[int, ...]) -> tuple[Params, Params]:
    """``(params, batch_stats)`` of the relaxed supernet."""

  def apply(self, params: Params, batch_stats: Params, weights: Any, x: jax.Array, *, config: Any,
            train: bool) -> tuple[jax.Array, Params]:
    """``(logits, new_batch_stats)``; differentiable in ``weights`` (any order)."""

  def derive(self, weights: Any, config: Any) -> Any:
    """The discrete architecture (int32 array of the space) the weights stand for."""

  def one_hot_weights(self, arch: Any, config: Any = None) -> Any:
    """Weights under which ``apply`` computes exactly ``arch``'s network (one-hot per edge).

    ``derive(one_hot_weights(a))`` is ``a`` (up to the space's canonical form);
    a one-shot method scores a derived architecture with them.
    """


@runtime_checkable
class NetworkFamily(Protocol):
  """The networks of one search space.

  Attributes:
    name: the space's registry name.
    tasks: the tasks (``nas_jax.tasks``) its child network serves, e.g.
      ``("images",)`` or ``("language_model",)``.
    supernet: the weight-sharing supernet, or None.
    continuous: the continuous relaxation, or None.
  """

  name: str
  tasks: tuple[str, ...]
  supernet: WeightSharing | None
  continuous: ContinuousRelaxation | None

  def build_child(self, space: Any, arch: Any, **config: Any) -> Any:
    """The fixed child network of ``arch`` (a flax module).

    Image families: ``__call__(x, *, train, drop_prob=0.0) -> (logits,
    aux_logits or None)``. Language-model families: see
    ``nas_jax.tasks.language_model``.
    """
