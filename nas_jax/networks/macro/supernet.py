"""The ``macro`` weight-sharing supernet: every layer holds all six branches.

The architecture is a traced ``int32[L + L(L-1)/2]`` argument: each layer is
a ``lax.switch`` over its six branches (each rematerialised, which keeps the
conditional's residuals to the branch input) and its skip connections are
added with their 0/1 bits as weights, so one compiled train step serves every
architecture (ENAS's search: ``tf.case`` over the branches, ``tf.cond`` per
skip, ``general_child.py`` ``_enas_layer``). Every factorized reduction runs
whatever the architecture; the child computes only those it reads
(``common.needed_reductions``), and ``child.child_variables_from_supernet``
gives a child that computes exactly the supernet's function.

Measured (2-core CPU shared with other jobs, load 12-20; 12 layers, C = 16,
batch 64 of 8x8 digits; cold XLA cache): the train step compiles in 51 s of
CPU (120-133 s wall) and then takes 0.33-0.53 s; scoring 12 architectures on
200 images takes 0.4 s after a 11-22 s compile. Alternatives measured in the
same run: XLA convolutions inside the switch (``ops.branch_conv_impl`` "lax")
44 s CPU to compile, 0.56-0.57 s per step; every branch computed and the
chosen one kept by a one-hot sum (no conditional) 61 s CPU, 0.33-0.46 s per
step, scoring 5x slower (2.0 s). The switch with the library's CPU tap
convolutions was kept.

Example:
    >>> cfg = MacroConfig(num_classes=10, init_channels=4, num_layers=3)
    >>> params, stats = init_supernet(jax.random.key(0), cfg, (8, 8, 1))
    >>> sorted(params), sorted(params["layer_1"])
    (['head', 'layer_0', 'layer_1', 'layer_2', 'pool_0', 'pool_1', 'stem'], ['b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'bn'])

  Scoring and training (not run here: compiling takes tens of seconds)::

    archs = jnp.array([[0, 4, 1, 3, 0, 1], [5, 5, 0, 5, 0, 0]])
    acc, loss = make_eval_archs(cfg)(params, stats, archs, x, y)  # both archs, one call
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
from nas_jax.spaces.macro import NUM_OPS, layout

from .common import (MacroConfig, Params, apply_branch, apply_head, apply_reduce, apply_stem, as_config,
                     init_branch, init_head, init_reduce, init_stem)


def init_supernet(key: jax.Array, config: MacroConfig | dict[str, Any],
                  input_shape: tuple[int, ...]) -> tuple[Params, Params]:
  """Parameters and batch statistics of the weight-sharing supernet.

  Args:
    key: PRNG key.
    config: ``MacroConfig`` (or a dict of its fields).
    input_shape: ``(H, W, C_in)`` (or ``(N, H, W, C_in)``).

  Returns:
    ``(params, batch_stats)``: ``stem``; ``layer_<i>`` with branches
    ``b0..b5`` (and ``bn``, the skip sum's batch norm, for ``i >= 1``);
    ``pool_<i>`` after each pool layer with one reduction ``n<k>`` per node
    so far; ``head`` (no statistics).
  """
  cfg = as_config(config)
  keys = iter(jax.random.split(key, 3 + cfg.num_layers * (NUM_OPS + 1)))
  params, stats = {}, {}
  c = cfg.init_channels
  params["stem"], stats["stem"] = init_stem(next(keys), int(input_shape[-1]), c)
  for i in range(cfg.num_layers):
    p, s = {}, {}
    for op in range(NUM_OPS):
      p[f"b{op}"], s[f"b{op}"] = init_branch(next(keys), op, c, c)
    if i > 0:
      p["bn"], s["bn"] = ops.init_bn(c)
    params[f"layer_{i}"], stats[f"layer_{i}"] = p, s
    if i in cfg.pool_layers:
      c_new = 2 * c if cfg.double_channels else c
      p, s = {}, {}
      for k, kk in enumerate(jax.random.split(next(keys), i + 2)):
        p[f"n{k}"], s[f"n{k}"] = init_reduce(kk, c, c_new)
      params[f"pool_{i}"], stats[f"pool_{i}"] = p, s
      c = c_new
  params["head"], _ = init_head(next(keys), c, cfg.num_classes)
  return params, stats


def _branch(op, train, conv_impl, p, s, h):
  y, new = apply_branch(op, p[f"b{op}"], s[f"b{op}"], h, train, conv_impl)
  return y, {**s, f"b{op}": new}


@functools.lru_cache(maxsize=None)
def _branches(train: bool, conv_impl: str, implementation: ops.Implementation) -> list[Callable]:
  """The 6 branches of a layer's switch, one list per setting (as ``nb201.supernet._branches``)."""
  del implementation  # a cache key only: the branches read it when traced
  return [jax.checkpoint(functools.partial(_branch, op, train, conv_impl)) for op in range(NUM_OPS)]


def supernet_apply(params: Params, batch_stats: Params, arch: jax.Array, x: jax.Array, *,
                   config: MacroConfig | dict[str, Any], train: bool, rng: jax.Array | None = None,
                   drop_prob: float | jax.Array = 0.0, forward_only: bool = False) -> tuple[jax.Array, Params]:
  """Logits of the supernet for one (traced) architecture.

  Args:
    params, batch_stats: from ``init_supernet``.
    arch: int32[L + L(L-1)/2] (may be traced).
    x: float32[N, H, W, C_in].
    config: the ``MacroConfig``.
    train: batch statistics (True) or running statistics (False) in BN.
    rng, drop_prob: accepted for the generic train step and unused (ENAS's
      macro network has no drop-path).
    forward_only: the caller will not differentiate (evaluation): the
      branches' convolutions then run as XLA convolutions (``ops.branch_conv_impl``).

  Returns:
    ``(logits [N, num_classes], new_batch_stats)``; in train mode only the
    chosen branch's statistics (and the skip BN's and reductions') change.
  """
  del rng, drop_prob
  cfg = as_config(config)
  chex.assert_rank(x, 4)
  cfg.check_arch(arch)
  arch = jnp.asarray(arch, jnp.int32)
  _, _, op_pos = layout(cfg.num_layers)
  conv_impl = "lax" if forward_only else ops.branch_conv_impl()
  branches = _branches(train, conv_impl, ops.current_implementation())
  new = {}
  h, new["stem"] = apply_stem(params["stem"], batch_stats["stem"], x, train)
  nodes = [h]
  for i in range(cfg.num_layers):
    name = f"layer_{i}"
    p, s = params[name], batch_stats[name]
    branch_p = {f"b{op}": p[f"b{op}"] for op in range(NUM_OPS)}
    branch_s = {f"b{op}": s[f"b{op}"] for op in range(NUM_OPS)}
    y, new[name] = lax.switch(arch[op_pos[i]], branches, branch_p, branch_s, nodes[-1])
    if i > 0:
      bits = arch[op_pos[i] + 1:op_pos[i] + 1 + i].astype(y.dtype)
      for j in range(i):
        y = y + bits[j] * nodes[j]
      y, new[name]["bn"] = ops.batch_norm(p["bn"], s["bn"], y, train=train)
    nodes.append(y)
    if i in cfg.pool_layers:
      name = f"pool_{i}"
      new[name] = {}
      reduced = []
      for k, node in enumerate(nodes):
        r, new[name][f"n{k}"] = apply_reduce(params[name][f"n{k}"], batch_stats[name][f"n{k}"], node, train)
        reduced.append(r)
      nodes = reduced
  return apply_head(params["head"], nodes[-1]), new


default_optimizer = supernet_lib.default_optimizer
init_train_state = supernet_lib.init_train_state


def make_train_step(config: MacroConfig | dict[str, Any], tx: optax.GradientTransformation,
                    *, donate: bool = True, drop_path: float | Callable = 0.0) -> Callable:
  """One jitted supernet training step that serves every architecture.

  ``train_step(state, arch, (x, y), key) -> (state, {"loss", "acc"})``; the
  rest as in ``nas_jax.networks.supernet.make_train_step`` (``drop_path`` has
  no effect: the macro network has none).
  """
  cfg = as_config(config)
  return supernet_lib.make_train_step(functools.partial(supernet_apply, config=cfg), tx, donate=donate,
                                      drop_path=drop_path)


def make_eval_archs(config: MacroConfig | dict[str, Any], *, method: str = "map",
                    bn: str = "batch") -> Callable:
  """One jitted call that scores K architectures on one batch.

  ``eval_archs(params, batch_stats, archs int32[K, len], x, y) -> (acc [K], loss [K])``;
  ``method`` and ``bn`` as in ``nas_jax.networks.supernet.make_eval_archs``.
  """
  cfg = as_config(config)
  return supernet_lib.make_eval_archs(functools.partial(supernet_apply, config=cfg, forward_only=True),
                                      arch_rank=1, method=method, bn=bn)
