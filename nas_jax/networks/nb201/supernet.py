"""The ``nb201`` weight-sharing supernet: initialisation, training and batched evaluation.

One ReLU-conv-BN 1x1 and 3x3 per (cell, edge); the architecture is a traced
``int32[6]`` argument and every edge is a ``lax.switch`` over the 5 ops (each
branch rematerialised, which keeps the compiled program small), so one compiled
train step serves all 15,625 cells. The supernet computes every edge, the child
only the useful ones (``common.useful_edges``); a child whose variables come
from the supernet (``child.child_variables_from_supernet``) computes exactly
the supernet's function for its architecture.

Example:
    >>> cfg = SupernetConfig(num_classes=10, init_channels=4, layers=1)
    >>> params, stats = init_supernet(jax.random.key(0), cfg, (8, 8, 1))
    >>> archs = jnp.array([[3, 1, 2, 0, 4, 3], [0, 0, 0, 0, 0, 0]])
    >>> x, y = jnp.ones((4, 8, 8, 1)), jnp.array([0, 1, 2, 3])
    >>> acc, loss = make_eval_archs(cfg)(params, stats, archs, x, y)  # both archs, one call
    >>> acc.shape, bool(jnp.isfinite(loss).all())
    ((2,), True)

  Training (not run here: compiling the train step takes about 20 s)::

    tx = default_optimizer()
    state = init_train_state(params, stats, tx)
    state, metrics = make_train_step(cfg, tx)(state, archs[0], (x, y), jax.random.key(1))
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import optax
from jax import lax

from nas_jax import ops
from nas_jax.networks import supernet as supernet_lib
from nas_jax.spaces.nb201 import NUM_EDGES, NUM_OPS

from .common import (AVG, CONV1, CONV3, Params, SupernetConfig, apply_cell, apply_head, apply_op, apply_res,
                     apply_stem, as_config, init_edge, init_head, init_res, init_stem)


def init_supernet(key: jax.Array, config: SupernetConfig | dict[str, Any],
                  input_shape: tuple[int, ...]) -> tuple[Params, Params]:
  """Parameters and batch statistics of the weight-sharing supernet.

  Args:
    key: PRNG key.
    config: ``SupernetConfig`` (or a dict of its fields).
    input_shape: ``(H, W, C_in)`` (or ``(N, H, W, C_in)``).

  Returns:
    ``(params, batch_stats)`` with keys ``stem``, ``block_<i>`` and ``head``.

  Example:
    >>> params, stats = init_supernet(jax.random.key(0), SupernetConfig(init_channels=4, layers=1),
    ...                               (8, 8, 3))
    >>> sorted(params["block_0"])
    ['e0', 'e1', 'e2', 'e3', 'e4', 'e5']
  """
  cfg = as_config(config)
  plan = cfg.plan()
  keys = jax.random.split(key, len(plan) + 2)
  params, stats = {}, {}
  params["stem"], stats["stem"] = init_stem(keys[0], int(input_shape[-1]), cfg.init_channels)
  for i, block in enumerate(plan):
    if block["kind"] == "res":
      p, s = init_res(keys[i + 1], block["c_in"], block["c_out"])
    else:
      p, s = {}, {}
      for e, k in enumerate(jax.random.split(keys[i + 1], NUM_EDGES)):
        p[f"e{e}"], s[f"e{e}"] = init_edge(k, block["c_in"])
    params[f"block_{i}"], stats[f"block_{i}"] = p, s
  params["head"], stats["head"] = init_head(keys[-1], plan[-1]["c_out"], cfg.num_classes)
  return params, stats


def _branch(op, train, forward_only, p, s, h):
  # Inside lax.switch, XLA:CPU's convolution backward is 6-24x slower than outside
  # (ops.branch_conv_impl); its forward alone is not, and beats the taps.
  return apply_op(op, p, s, h, train, "lax" if forward_only else ops.branch_conv_impl())


@functools.lru_cache(maxsize=None)
def _branches(train: bool, forward_only: bool, implementation: ops.Implementation) -> list[Callable]:
  """The 5 op branches of an edge's switch, one list per setting.

  Rematerialised switch branches keep the conditional's residuals to the
  branch input; without it every branch emits zero-filled residuals of all the
  others. The same function objects serve every edge of every trace with these
  settings (JAX caches their traces by object); ``implementation`` (the ops'
  ``current_implementation()``) is part of the key because those caches do not
  see it.
  """
  del implementation  # a cache key only: the branches read it when traced
  return [jax.checkpoint(functools.partial(_branch, op, train, forward_only)) for op in range(NUM_OPS)]


def supernet_apply(params: Params, batch_stats: Params, arch: jax.Array, x: jax.Array, *,
                   config: SupernetConfig | dict[str, Any], train: bool, rng: jax.Array | None = None,
                   drop_prob: float | jax.Array = 0.0, forward_only: bool = False) -> tuple[jax.Array, Params]:
  """Logits of the supernet for one (traced) architecture.

  Args:
    params, batch_stats: from ``init_supernet``.
    arch: int32[6] (may be traced).
    x: float32[N, H, W, C_in].
    config: the ``SupernetConfig``.
    train: batch statistics (True) or running statistics (False) in BN.
    rng: PRNG key for drop-path; None (the default) disables it.
    drop_prob: drop-path probability in [0, 1) of every conv and pool edge
      (as the child network applies it), used when ``rng`` is given; may be
      traced.
    forward_only: the caller will not differentiate the result (evaluation):
      convolutions then run as XLA convolutions, whose forward pass is fast
      inside the op switch on CPU (see ``ops.branch_conv_impl``).

  Returns:
    ``(logits [N, num_classes], new_batch_stats)``; in train mode the running
    statistics of the convs that ran are updated.
  """
  cfg = as_config(config)
  chex.assert_rank(x, 4)
  chex.assert_shape(arch, (NUM_EDGES,))
  arch = jnp.asarray(arch, jnp.int32)
  new = {}
  h, new["stem"] = apply_stem(params["stem"], batch_stats["stem"], x, train)

  def edge(e, p, s, h_in, scale=None):
    y, s = lax.switch(arch[e], _branches(train, forward_only, ops.current_implementation()), p, s, h_in)
    if scale is not None:
      y = y * ops.per_sample(scale[e], y)
    return y, s

  droppable = (arch == CONV1) | (arch == CONV3) | (arch == AVG)
  for i, block in enumerate(cfg.plan()):
    p, s = params[f"block_{i}"], batch_stats[f"block_{i}"]
    if block["kind"] == "res":
      h, new[f"block_{i}"] = apply_res(p, s, h, train)
    else:
      scale = None
      if rng is not None:
        factors = ops.drop_path_factors(jax.random.fold_in(rng, i), drop_prob, (NUM_EDGES, x.shape[0]))
        scale = jnp.where(droppable[:, None], factors, 1.0)
      h, new[f"block_{i}"] = apply_cell(p, s, h, functools.partial(edge, scale=scale))
  logits, new["head"] = apply_head(params["head"], batch_stats["head"], h, train)
  return logits, new


default_optimizer = supernet_lib.default_optimizer
init_train_state = supernet_lib.init_train_state


def make_train_step(config: SupernetConfig | dict[str, Any], tx: optax.GradientTransformation,
                    *, donate: bool = True, drop_path: float | Callable = 0.0) -> Callable:
  """One jitted supernet training step that serves every architecture.

  ``train_step(state, arch int32[6], (x, y), key) -> (state, {"loss", "acc"})``;
  ``drop_path`` and the rest as in ``nas_jax.networks.supernet.make_train_step``.
  """
  cfg = as_config(config)
  return supernet_lib.make_train_step(functools.partial(supernet_apply, config=cfg), tx, donate=donate,
                                      drop_path=drop_path)


def make_eval_archs(config: SupernetConfig | dict[str, Any], *, method: str = "map",
                    bn: str = "batch") -> Callable:
  """One jitted call that scores K architectures on one batch.

  ``eval_archs(params, batch_stats, archs int32[K, 6], x, y) -> (acc [K], loss [K])``;
  ``method`` and ``bn`` as in ``nas_jax.networks.supernet.make_eval_archs``.
  """
  cfg = as_config(config)
  return supernet_lib.make_eval_archs(functools.partial(supernet_apply, config=cfg, forward_only=True),
                                      arch_rank=1, method=method, bn=bn)
