"""The one-shot loop: epochs of a method that trains architecture parameters with the weights.

Runs a ``nas_jax.oneshot.base.OneShotMethod`` (DARTS, BayesNAS) for
``budget`` epochs::

    for epoch e:   k_steps, k_score = split(fold_in(search_key, e))
      for step s:  state, metrics = method.step(state, fold_in(k_steps, s))
      arch   = method.derive(state)
      record = method.score(state, arch, k_score)
      -> history line e: epoch, arch id, genotype, search score, raw metrics,
         mean training metrics, a summary of the architecture parameters,
         FLOPs and parameters of the derived network
    method.plot(records, workdir)   # if the method has one: its own figure

The method state and the loop position (epoch, step, the running sums of the
epoch's training metrics) are checkpointed every ``checkpoint.interval_s``
seconds, also in the middle of an epoch, and at the end of every epoch; keys
are functions of (epoch, step), so a run killed at any point and resumed
writes the same history as an uninterrupted one.

``run_oneshot(ctx, method, k_strategy, k_search)`` is called by
``run_experiment`` when the strategy is a one-shot method (not run here:
compiling a relaxed supernet takes tens of seconds)::

    config = runner.merge(runner.default_config(), {
        "space": "nb201", "strategy": {"name": "darts"}, "budget": 1})  # budget in epochs
    result = runner.run_experiment(config, "runs/darts", quiet=True)
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

import jax
import numpy as np

from nas_jax.runner import config as config_lib
from nas_jax.runner import resume as resume_lib

log = logging.getLogger("nas_jax.experiment")


def _finite(x: Any) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None


def run_oneshot(ctx, method, k_strategy, k_search) -> list[dict[str, Any]]:
  """The checkpointed one-shot loop; returns one history record per epoch."""
  cfg, space = ctx.cfg, ctx.space
  template = {"method": method.init(k_strategy), "key": jax.random.key(cfg["seed"])}
  fresh = {"epoch": 0, "step": 0, "saves": 0, "history_len": 0, "search_seconds": 0.0,
           "sessions": 0, "sums": {}, "nonfinite_scores": 0, "search_nonfinite_steps": 0}
  state, meta, records, pending = resume_lib.restore(ctx, template, fresh)
  if meta["saves"] == 0:
    log.info("starting one-shot %s on %s/%s, %d epochs, seed %d in %s", cfg["strategy"]["name"],
             config_lib.space_label(cfg), cfg["dataset"], cfg["budget"], cfg["seed"], ctx.workdir)
  else:
    log.info("resuming from checkpoint %d: epoch %d, step %d", meta["saves"], meta["epoch"],
             meta["step"])
  resume_lib.drop_pending(ctx, records, pending, "a one-shot method's weights and architecture "
                          "parameters after them are not in the checkpoint")
  meta["sessions"] += 1
  ctx.meta = meta
  budget, steps = cfg["budget"], int(method.steps_per_epoch())
  if steps < 1:
    raise ValueError(f"strategy {cfg['strategy']['name']!r} has {steps} steps per epoch; "
                     "give it more data or a smaller batch_size")
  seconds0 = meta["search_seconds"]
  t0 = time.perf_counter()
  ctx.mark_setup_done(t0)
  last_save = t0

  def save():
    nonlocal last_save
    meta["search_seconds"] = round(seconds0 + time.perf_counter() - t0, 3)
    meta["saves"] += 1
    ctx.ckpt.save(meta["saves"], state, meta)
    last_save = time.perf_counter()

  bar = ctx.progress(budget * steps, meta["epoch"] * steps + meta["step"], "search", "step")
  committing = False
  try:
    while meta["epoch"] < budget:
      e = meta["epoch"]
      k_steps, k_score = jax.random.split(jax.random.fold_in(k_search, e))
      while meta["step"] < steps:
        s = meta["step"]
        st, metrics = method.step(state["method"], jax.random.fold_in(k_steps, s))
        sums, bad = dict(meta["sums"]), 0
        for k, v in jax.device_get(metrics).items():
          v = float(v)
          if math.isfinite(v):
            sums[k] = sums.get(k, 0.0) + v
            sums[f"{k}#n"] = sums.get(f"{k}#n", 0) + 1
          else:
            bad += int(k == "train_loss")
        committing = True  # state and meta change together (see the interrupt handler)
        state = {"method": st, "key": state["key"]}
        meta["sums"] = sums
        meta["search_nonfinite_steps"] += bad
        meta["step"] = s + 1
        committing = False
        bar.update(1)
        if time.perf_counter() - last_save >= cfg["checkpoint"]["interval_s"] and meta["step"] < steps:
          save()
      arch = space.validate(method.derive(state["method"]))
      scored = dict(method.score(state["method"], arch, k_score))
      score = scored.pop("search_score")
      if score is None or not math.isfinite(float(score)):
        meta["nonfinite_scores"] += 1
        score = None
      sums = meta["sums"]
      train = {k: sums[k] / sums[f"{k}#n"] for k in sums if not k.endswith("#n")}
      line = {"index": e, "epoch": e + 1, "arch_id": space.arch_id(arch),
              "genotype": space.to_genotype(arch),
              "search_score": None if score is None else float(score),
              "metrics": {k: _finite(v) if isinstance(v, (int, float, np.number)) else v
                          for k, v in scored.items()},
              "train": {k: _finite(v) for k, v in train.items()},
              "arch_params": method.summary(state["method"])}
      if ctx.cost_model is not None:
        c = ctx.cost_model(arch[None])
        line["flops"], line["params"] = int(c["flops"][0]), int(c["params"][0])
      line["wall_time_s"] = round(seconds0 + time.perf_counter() - t0, 3)
      ctx.history.append([line])
      records.append(line)
      log.info("epoch %d: %s search_score %s, train %s", e + 1, line["arch_id"], line["search_score"],
               {k: round(v, 4) for k, v in train.items()})
      bar.set_postfix(epoch=e + 1, search_score="-" if score is None else f"{score:.2f}")
      meta.update(epoch=e + 1, step=0, sums={}, history_len=len(records))
      save()
  except KeyboardInterrupt:
    if committing:
      raise
    save()
    ctx.notice(f"interrupted: checkpoint saved at epoch {meta['epoch'] + 1}, step {meta['step']}")
    raise
  finally:
    bar.close()
  ctx.search_seconds = round(seconds0 + time.perf_counter() - t0, 3)
  plot = getattr(method, "plot", None)  # a method's own figure (BayesNAS: switches.png), from the history
  if callable(plot) and records:
    plot(records, ctx.workdir)
  return records
