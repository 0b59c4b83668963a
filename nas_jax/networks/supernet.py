"""Training and batched evaluation of weight-sharing supernets, for any space.

A space's network module (``nas_jax.networks.<space>``) supplies
``supernet_apply(params, batch_stats, arch, x, *, config, train) ->
(logits, new_batch_stats)`` with the architecture as a traced int array; the
functions here turn it into one jitted train step and one jitted call that
scores K architectures, so every space shares the same training code.

Example:
    >>> apply = functools.partial(nasnet.supernet_apply, config=cfg)
    >>> tx = default_optimizer(0.05)
    >>> state = init_train_state(params, stats, tx)
    >>> state, metrics = make_train_step(apply, tx)(state, arch, (x, y), key)
    >>> acc, loss = make_eval_archs(apply, arch_rank=3)(state["params"], state["batch_stats"], archs, x, y)
"""
from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

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


def make_train_step(apply_fn: Callable, tx: optax.GradientTransformation, *, donate: bool = True) -> Callable:
  """One jitted supernet training step that serves every architecture.

  Args:
    apply_fn: ``apply_fn(params, batch_stats, arch, x, train=True) -> (logits, new_stats)``.
    tx: the optax optimizer the state was built with.
    donate: donate the state buffers (the input state must not be reused).

  Returns:
    ``train_step(state, arch, (x, y), key) -> (state, {"loss", "acc"})``; ``arch``
    is traced (no recompilation across architectures), ``key`` is reserved for
    stochastic regularisation, ``acc`` is in [0, 1].
  """

  def train_step(state, arch, batch, key):
    del key
    x, y = batch

    def loss_fn(params):
      logits, new_stats = apply_fn(params, state["batch_stats"], arch, x, train=True)
      return jnp.mean(cross_entropy(logits, y)), (logits, new_stats)

    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    acc = jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))
    return ({"params": optax.apply_updates(state["params"], updates), "batch_stats": new_stats,
             "opt_state": opt_state, "step": state["step"] + 1}, {"loss": loss, "acc": acc})

  return jax.jit(train_step, donate_argnums=(0,) if donate else ())


def make_eval_archs(apply_fn: Callable, *, arch_rank: int, method: str = "map", bn: str = "batch") -> Callable:
  """One jitted call that scores K architectures on one batch.

  Args:
    apply_fn: as for ``make_train_step``.
    arch_rank: rank of one architecture array (the batch adds one).
    method: "map" (``lax.map``: one architecture after the other, each running
      only its chosen ops; fastest on CPU) or "vmap" (all K at once; under vmap
      ``lax.switch`` runs every branch, so it only pays off on accelerators).
    bn: "batch" (batch statistics of the evaluation batch, ENAS/NAO-WS) or
      "running" (the supernet's running statistics).

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

  return jax.jit(eval_archs)
