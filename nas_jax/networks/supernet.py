"""Training and batched evaluation of weight-sharing supernets, for any space.

A space's network package (``nas_jax.networks.<space>``) supplies
``supernet_apply(params, batch_stats, arch, x, *, config, train) ->
(logits, new_batch_stats)`` with the architecture as a traced int array; the
functions here turn it into one jitted train step and one jitted call that
scores K architectures, so every space shares the same training code.
``WeightSharingBase`` is the shared part of the families' ``supernet``
objects (``nas_jax.networks.base.WeightSharing``), ``config_from_fields`` the
shared ``config(**fields)``.

Example:
    A toy supernet (``arch[0]`` picks one of three linear classifiers) shows
    the contract; a space's ``supernet_apply`` (e.g.
    ``functools.partial(nasnet.supernet_apply, config=cfg)``) goes in its place:

    >>> def apply(params, batch_stats, arch, x, train, **unused):
    ...   return x.reshape(len(x), -1) @ params["w"][arch[0]], batch_stats
    >>> tx = default_optimizer(0.01)
    >>> state = init_train_state({"w": jnp.zeros((3, 64, 10))}, {}, tx)
    >>> x, y = jnp.ones((4, 8, 8, 1)), jnp.array([1, 1, 1, 1])
    >>> train_step = make_train_step(apply, tx)
    >>> state, metrics = train_step(state, jnp.array([2]), (x, y), jax.random.key(0))
    >>> float(metrics["loss"])  # log(10): all-zero weights
    2.302585...
    >>> state, metrics = train_step(state, jnp.array([0]), (x, y), jax.random.key(1))
    >>> train_step._cache_size()  # one compilation for every architecture
    1
    >>> acc, loss = make_eval_archs(apply, arch_rank=1)(state["params"], state["batch_stats"],
    ...                                                 jnp.array([[0], [1], [2]]), x, y)
    >>> acc  # the trained maps 0 and 2 predict class 1; map 1 is untouched (ties: class 0)
    Array([1., 0., 1.], dtype=float32)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from nas_jax import parallel

Params = dict[str, Any]


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def default_optimizer(learning_rate: float | optax.Schedule = 0.05, momentum: float = 0.9,
                      weight_decay: float = 3e-4, clip_norm: float = 5.0) -> optax.GradientTransformation:
  """SGD with Nesterov momentum, weight decay and gradient clipping (NAO-WS / ENAS style)."""
  return optax.chain(optax.clip_by_global_norm(clip_norm), optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum, nesterov=True))


def init_train_state(params: Params, batch_stats: Params, tx: optax.GradientTransformation) -> dict[str, Any]:
  """``{"params", "batch_stats", "opt_state", "step"}``: the supernet train state (a pytree).

  The optimizer state is built by one jitted ``tx.init``: run eagerly, it
  compiles one small XLA program per distinct parameter shape (25 programs,
  1.8 s, for the benchmark supernet).
  """
  return {"params": params, "batch_stats": batch_stats, "opt_state": jax.jit(tx.init)(params),
          "step": jax.device_put(np.zeros((), np.int32))}


def _drop_path_schedule(drop_path: float | Callable) -> Callable | None:
  """``step -> probability`` for ``drop_path``, or None when it is off."""
  if callable(drop_path):
    return drop_path
  if isinstance(drop_path, bool) or not isinstance(drop_path, (int, float)) or not 0 <= drop_path < 1:
    raise ValueError(f"drop_path must be a probability in [0, 1) or a schedule step -> probability, "
                     f"got {drop_path!r}")
  return None if drop_path == 0 else (lambda step: drop_path)


def make_train_step(apply_fn: Callable, tx: optax.GradientTransformation, *, donate: bool = True,
                    drop_path: float | Callable = 0.0, mesh: Any = None) -> Callable:
  """One jitted supernet training step that serves every architecture.

  Args:
    apply_fn: ``apply_fn(params, batch_stats, arch, x, train=True) -> (logits, new_stats)``;
      with drop-path it is also given ``rng=`` (a key) and ``drop_prob=``.
    tx: the optax optimizer the state was built with.
    donate: donate the state buffers (the input state must not be reused).
    drop_path: drop-path probability of the architecture's edges (0: off),
      or a schedule ``step -> probability`` (as optax schedules; NASNet and
      NAO raise it linearly over training). The probability is traced, so a
      schedule does not recompile.
    mesh: the devices to run on, data-parallel (``nas_jax.parallel``: the
      batch split, the rest replicated); default every device
      (``parallel.default_mesh()``), plain ``jax.jit`` when there is one.

  Returns:
    ``train_step(state, arch, (x, y), key) -> (state, {"loss", "acc"})``; ``arch``
    is traced (no recompilation across architectures), ``key`` draws the
    drop-path masks, ``acc`` is in [0, 1].

  Example:
    >>> import optax
    >>> def apply(params, batch_stats, arch, x, train, rng=None, drop_prob=0.0):
    ...   print("drop_prob traced:", isinstance(drop_prob, jax.core.Tracer))
    ...   return x @ params["w"][arch[0]], batch_stats
    >>> tx = default_optimizer(0.01)
    >>> step = make_train_step(apply, tx, drop_path=optax.linear_schedule(0.0, 0.3, 10_000))
    >>> state = init_train_state({"w": jnp.zeros((2, 3, 4))}, {}, tx)
    >>> state, metrics = step(state, jnp.array([1]), (jnp.ones((2, 3)), jnp.array([0, 1])),
    ...                       jax.random.key(0))
    drop_prob traced: True
    >>> sorted(metrics), int(state["step"])
    (['acc', 'loss'], 1)
  """
  schedule = _drop_path_schedule(drop_path)

  def train_step(state, arch, batch, key):
    x, y = batch
    kwargs = {} if schedule is None else {"rng": key, "drop_prob": schedule(state["step"])}

    def loss_fn(params):
      logits, new_stats = apply_fn(params, state["batch_stats"], arch, x, train=True, **kwargs)
      return jnp.mean(cross_entropy(logits, y)), (logits, new_stats)

    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    acc = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
    return ({"params": optax.apply_updates(state["params"], updates), "batch_stats": new_stats,
             "opt_state": opt_state, "step": state["step"] + 1}, {"loss": loss, "acc": acc})

  return parallel.data_parallel_jit(train_step, batch_argnums=(2,), donate_argnums=(0,) if donate else (),
                                    mesh=mesh)


def make_eval_archs(apply_fn: Callable, *, arch_rank: int, method: str = "map", bn: str = "batch",
                    mesh: Any = None) -> Callable:
  """One jitted call that scores K architectures on one batch.

  Args:
    apply_fn: as for ``make_train_step``.
    arch_rank: rank of one architecture array (the batch adds one).
    method: "map" (``lax.map``: one architecture after the other, each running
      only its chosen ops; fastest on CPU) or "vmap" (all K at once; under vmap
      ``lax.switch`` runs every branch, so it only pays off on accelerators).
    bn: "batch" (batch statistics of the evaluation batch, ENAS/NAO-WS) or
      "running" (the supernet's running statistics).
    mesh: as for ``make_train_step`` (the batch ``x, y`` split over the devices).

  Returns:
    ``eval_archs(params, batch_stats, archs[K, ...], x, y) -> (acc float32[K] in [0, 1], loss float32[K])``.
  """
  if method not in ("map", "vmap"):
    raise ValueError(f"eval method must be 'map' or 'vmap', got {method!r}")
  if bn not in ("batch", "running"):
    raise ValueError(f"bn must be 'batch' or 'running', got {bn!r}")

  def eval_archs(params, batch_stats, archs, x, y):
    chex.assert_rank(archs, arch_rank + 1)

    def one(arch):
      logits, _ = apply_fn(params, batch_stats, arch, x, train=(bn == "batch"))
      return jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32)), jnp.mean(cross_entropy(logits, y))

    return lax.map(one, archs) if method == "map" else jax.vmap(one)(archs)

  return parallel.data_parallel_jit(eval_archs, batch_argnums=(3, 4), mesh=mesh)


def config_from_fields(config_class: type, fields: dict[str, Any]) -> Any:
  """``config_class(**fields)``, with unknown fields rejected in one line.

  Example:
    >>> from nas_jax.networks import nasnet
    >>> config_from_fields(nasnet.SupernetConfig, {"init_channels": 8})
    SupernetConfig(num_classes=10, init_channels=8, layers=8, num_nodes=5, stem_multiplier=3)
    >>> config_from_fields(nasnet.SupernetConfig, {"channels": 8})
    Traceback (most recent call last):
    ...
    ValueError: unknown nas_jax.networks.nasnet.common.SupernetConfig field(s) ['channels']; known: [...]
  """
  known = [f.name for f in dataclasses.fields(config_class)]
  unknown = sorted(set(fields) - set(known))
  if unknown:
    raise ValueError(f"unknown {config_class.__module__}.{config_class.__name__} field(s) {unknown}; "
                     f"known: {known}")
  return config_class(**fields)


class WeightSharingBase:
  """What every family's weight-sharing supernet object shares (``networks.base.WeightSharing``).

  A subclass sets ``config_class`` (its frozen config dataclass) and defines
  ``init``, ``apply``, ``make_train_step``, ``make_eval_archs`` and
  ``child_variables``; the optimizer and the train state are the ones above.
  """

  config_class: type

  def config(self, **fields: Any) -> Any:
    """The network config from keyword fields (unknown ones raise ``ValueError``)."""
    return config_from_fields(self.config_class, fields)

  def space_fields(self, space: Any) -> dict[str, Any]:
    """Config fields that the space fixes (the size its architectures have); none by default.

    An evaluator passes them to ``config`` beside its own settings, so the
    supernet follows a space built with other ``space_options``.
    """
    del space
    return {}

  def default_optimizer(self, learning_rate: float | optax.Schedule = 0.05, momentum: float = 0.9,
                        weight_decay: float = 3e-4, clip_norm: float = 5.0) -> optax.GradientTransformation:
    """See the module function ``default_optimizer``."""
    return default_optimizer(learning_rate, momentum, weight_decay, clip_norm)

  def init_train_state(self, params: Params, batch_stats: Params,
                       tx: optax.GradientTransformation) -> dict[str, Any]:
    """See the module function ``init_train_state``."""
    return init_train_state(params, batch_stats, tx)
