"""The ask/tell search: one round, and the checkpointed loop over rounds.

``search_round`` is the one place where a strategy asks, an evaluator
scores and the strategy is told (with the costs when known); the runner's loop
below, the NAS-Bench-201 harness (``nas_jax.benchmarks_nb201``) and the NAO-WS
Kendall benchmark all call it, so they run the same search::

    k_ask, k_eval = split(fold_in(search_key, round))
    archs  = strategy.ask(state, k_ask)[:remaining]     # validated by the space
    result = evaluator.evaluate(ev_state, archs, k_eval)
    state  = strategy.tell(state, archs, scores, costs={"flops", "params"})

``run_search`` repeats rounds until ``budget`` architectures are evaluated,
appending one history line per architecture (index, round, arch id,
genotype, search score, the raw metric, FLOPs and parameters, the learning
curve when the evaluation trained one, why a run was stopped, cost and wall
time) and checkpointing the whole search state every ``interval_s`` seconds
and after the last round. Round keys are ``fold_in(search_key, round)``, so a
run killed at any point (SIGKILL included) and resumed writes the same history
as an uninterrupted one.

Example:
    >>> from nas_jax.registry import get_evaluator, get_space, get_strategy
    >>> space = get_space("nb201")
    >>> strategy = get_strategy("random")(space, {"batch_size": 4})
    >>> evaluator = get_evaluator("tabular")(space, {"noisy": False})
    >>> s_state, e_state = strategy.init(jax.random.key(0)), evaluator.init(jax.random.key(1))
    >>> rnd = search_round(strategy, evaluator, space, s_state, e_state, jax.random.key(2), 0,
    ...                    remaining=3)  # asks 4, evaluates and tells the first 3
    >>> rnd.archs
    array([[4, 2, 0, 0, 3, 0],
           [3, 4, 0, 2, 4, 0],
           [1, 2, 2, 1, 4, 0]], dtype=int32)
    >>> rnd.scores
    array([79.924, 88.368, 78.886])
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

import jax
import numpy as np

from nas_jax.evaluators.base import Evaluation
from nas_jax.runner import config as config_lib
from nas_jax.runner import report
from nas_jax.runner import resume as resume_lib

log = logging.getLogger("nas_jax.experiment")


@jax.jit
def round_keys(key: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(ask key, evaluate key) of round ``r``: ``split(fold_in(key, r))``, one jitted call."""
  return tuple(jax.random.split(jax.random.fold_in(key, r)))


@dataclasses.dataclass
class Round:
  """What one ask/evaluate/tell round produced.

  Attributes:
    archs: int32[K, ...] the evaluated architectures (validated).
    evaluation: the evaluator's ``Evaluation``.
    scores: float64[K] search scores (NaN where the evaluation failed).
    told: float64[K] the scores the strategy was told (-inf for failures).
    costs: ``{"flops", "params"}`` float64[K] arrays, or None.
    strategy_state, evaluator_state: the states after the round.
  """
  archs: np.ndarray
  evaluation: Evaluation
  scores: np.ndarray
  told: np.ndarray
  costs: dict[str, np.ndarray] | None
  strategy_state: Any
  evaluator_state: Any


def ask_round(strategy, space, strategy_state: Any, search_key: jax.Array, round_index: int, *,
              remaining: int) -> tuple[np.ndarray, Any, jax.Array]:
  """The ask half of a round: ``(archs, strategy_state, evaluate key)``.

  Raises:
    ValueError: the strategy asked for no or malformed architectures.
  """
  k_ask, k_eval = round_keys(search_key, np.int32(round_index))
  archs, strategy_state = strategy.ask(strategy_state, k_ask)
  archs = np.asarray(archs)
  shape = tuple(space.arch_shape)
  if archs.ndim != 1 + len(shape) or archs.shape[1:] != shape or len(archs) == 0:
    raise ValueError(f"strategy {getattr(strategy, 'name', strategy)!r} asked for archs of shape "
                     f"{archs.shape}; expected [K>0, {', '.join(map(str, shape))}]")
  return np.stack([space.validate(a) for a in archs[:remaining]]), strategy_state, k_eval


def tell_round(strategy, strategy_state: Any, archs: np.ndarray, scores: np.ndarray,
               cost_model=None) -> tuple[Any, np.ndarray, dict[str, np.ndarray] | None]:
  """The tell half: ``(strategy_state, told scores, costs)``; failures are told as -inf."""
  told = np.where(np.isfinite(scores), scores, -np.inf)
  costs = None if cost_model is None else cost_model(archs)
  if costs is None:
    strategy_state = strategy.tell(strategy_state, archs, told)
  else:
    strategy_state = strategy.tell(strategy_state, archs, told, costs=costs)
  return strategy_state, told, costs


def search_round(strategy, evaluator, space, strategy_state: Any, evaluator_state: Any,
                 search_key: jax.Array, round_index: int, *, remaining: int,
                 cost_model: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None) -> Round:
  """One round: ask, evaluate at most ``remaining`` architectures, tell.

  Args:
    strategy: an ask/tell strategy.
    evaluator: an evaluator.
    space: the search space (validates the asked architectures).
    strategy_state, evaluator_state: the states before the round.
    search_key: the search's key; the round's keys are
      ``split(fold_in(search_key, round_index))``.
    round_index: the round number.
    remaining: the budget left (a larger batch is cut, and only the evaluated
      part is told).
    cost_model: ``archs -> {"flops", "params"}`` (``runner.costs.CostModel``),
      or None (the strategy is told no costs).

  Returns:
    A ``Round``.

  Raises:
    ValueError: the strategy asked for no or malformed architectures, or the
      evaluator returned scores of the wrong shape.
  """
  archs, strategy_state, k_eval = ask_round(strategy, space, strategy_state, search_key, round_index,
                                            remaining=remaining)
  evaluation, evaluator_state = evaluator.evaluate(evaluator_state, archs, k_eval)
  scores = np.asarray(evaluation.scores, dtype=np.float64).reshape(-1)
  seconds = np.asarray(evaluation.costs, dtype=np.float64).reshape(-1)
  if scores.shape != (len(archs),) or seconds.shape != (len(archs),):
    raise ValueError(f"evaluator {getattr(evaluator, 'name', evaluator)!r} returned {scores.shape} "
                     f"scores and {seconds.shape} costs for {len(archs)} architectures")
  strategy_state, told, costs = tell_round(strategy, strategy_state, archs, scores, cost_model)
  return Round(archs, evaluation, scores, told, costs, strategy_state, evaluator_state)


def history_lines(space, rnd: Round, first_index: int, round_index: int,
                  wall_time_s: float) -> list[dict[str, Any]]:
  """The history lines of a round (``wall_time_s`` always last)."""
  out = []
  infos = rnd.evaluation.info or [{}] * len(rnd.archs)
  for i, arch in enumerate(rnd.archs):
    info = infos[i] or {}
    line: dict[str, Any] = {
        "index": first_index + i, "round": round_index, "arch_id": space.arch_id(arch),
        "genotype": space.to_genotype(arch),
        "search_score": float(rnd.scores[i]) if np.isfinite(rnd.scores[i]) else None}
    if info.get("metrics"):
      line["metrics"] = info["metrics"]
    if rnd.costs is not None:
      line["flops"] = int(rnd.costs["flops"][i])
      line["params"] = int(rnd.costs["params"][i])
    if info.get("curve"):
      line["curve"] = report.clean_curve(info["curve"])
    if info.get("stopped"):
      line["stopped"] = info["stopped"]
    if info.get("error"):
      line["error"] = str(info["error"])
    if info.get("nonfinite_steps"):
      line["nonfinite_steps"] = int(info["nonfinite_steps"])
    line["cost_s"] = round(float(rnd.evaluation.costs[i]), 6)
    line["wall_time_s"] = round(wall_time_s, 3)
    out.append(line)
  return out


def run_search(ctx, strategy, evaluator, k_strategy, k_evaluator, k_search) -> list[dict[str, Any]]:
  """The checkpointed ask/tell loop; returns every history record.

  Resume (``runner.resume``): the newest checkpoint that fits the intact
  history is restored, and the history lines written after it are replayed
  (asked again, told their recorded scores, not evaluated) when the evaluator
  is ``replayable``, else recomputed. Ctrl-C (``KeyboardInterrupt``; the CLI
  turns SIGTERM into one) saves a checkpoint of the last complete round
  before it propagates.

  Args:
    ctx: the run's ``runner.experiment.RunContext`` (config, workdir,
      checkpointer, history, progress bar settings, cost model, meta).
    strategy, evaluator: the constructed components.
    k_strategy, k_evaluator, k_search: the experiment's keys.
  """
  cfg, space = ctx.cfg, ctx.space
  template = {"strategy": strategy.init(k_strategy), "evaluator": evaluator.init(k_evaluator),
              "key": jax.random.key(cfg["seed"])}
  fresh = {"round": 0, "history_len": 0, "search_seconds": 0.0, "sessions": 0,
           "nonfinite_scores": 0, "search_nonfinite_steps": 0}
  state, meta, records, pending = resume_lib.restore(ctx, template, fresh)
  if meta["history_len"] == 0 and not records:
    log.info("starting %s on %s/%s with evaluator %s, budget %d, seed %d in %s",
             cfg["strategy"]["name"], config_lib.space_label(cfg), cfg["dataset"], cfg["evaluator"]["name"],
             cfg["budget"], cfg["seed"], ctx.workdir)
  else:
    log.info("resuming from round %d: %d evaluation(s) checkpointed, %d more on disk",
             meta["round"], meta["history_len"], len(pending))
  if pending and not getattr(evaluator, "replayable", False):
    resume_lib.drop_pending(ctx, records, pending,
                            f"the {getattr(evaluator, 'name', 'evaluator')} evaluator's state (e.g. a "
                            "supernet's shared weights) cannot be rebuilt from the history")
  observe = getattr(evaluator, "observe_history", None)
  if observe is not None and (records or pending):  # e.g. an early stopper re-learns
    observe(records + pending)  # pending lines are the ones that will be replayed
  meta["sessions"] += 1
  ctx.meta = meta
  budget = cfg["budget"]
  seconds0 = meta["search_seconds"]
  t0 = time.perf_counter()
  ctx.mark_setup_done(t0)
  last_save, saved_len = t0, meta["history_len"]
  best = report.best(records)
  bar = ctx.progress(budget, len(records), "search", "arch")
  replayed = 0
  committing = False

  def save():
    nonlocal last_save, saved_len
    meta["search_seconds"] = round(seconds0 + time.perf_counter() - t0, 3)
    ctx.ckpt.save(meta["round"], state, meta)
    last_save, saved_len = time.perf_counter(), meta["history_len"]

  try:
    if best is not None:
      bar.set_postfix(best_search_score=f"{best['search_score']:.2f}")
    while len(records) < budget:
      r = meta["round"]
      remaining = budget - len(records)
      if pending:
        archs, s_state, _ = ask_round(strategy, space, state["strategy"], k_search, r,
                                      remaining=remaining)
        if resume_lib.replayable_round(space, archs, pending):
          new = pending[:len(archs)]
          del pending[:len(archs)]
          scores = resume_lib.recorded_scores(new)
          s_state, _, _ = tell_round(strategy, s_state, archs, scores, ctx.cost_model)
          new_state = {"strategy": s_state, "evaluator": state["evaluator"], "key": state["key"]}
          bad = int((~np.isfinite(scores)).sum())
          steps_bad = sum(int(l.get("nonfinite_steps", 0)) for l in new)
          replayed += len(new)
        else:
          resume_lib.drop_pending(ctx, records, pending,
                                  f"round {r} asks for other architectures than the history holds")
          continue
      else:
        rnd = search_round(strategy, evaluator, space, state["strategy"], state["evaluator"],
                           k_search, r, remaining=remaining, cost_model=ctx.cost_model)
        bad = int((~np.isfinite(rnd.scores)).sum())
        if bad:
          log.warning("round %d: %d non-finite search score(s), told as -inf (failed)", r, bad)
        steps_bad = sum(int((info or {}).get("nonfinite_steps", 0))
                        for info in rnd.evaluation.info or [])
        new = history_lines(space, rnd, len(records), r, seconds0 + time.perf_counter() - t0)
        ctx.history.append(new)
        new_state = {"strategy": rnd.strategy_state, "evaluator": rnd.evaluator_state,
                     "key": state["key"]}
      # Commit the round: state and meta change together (an interrupt in between would
      # save a state ahead of its meta; ``committing`` tells the handler not to save then).
      committing = True
      state = new_state
      records += new
      meta["nonfinite_scores"] += bad
      meta["search_nonfinite_steps"] += steps_bad
      meta["round"] = r + 1
      meta["history_len"] = len(records)
      committing = False
      b = report.best(new)
      if b is not None and (best is None or b["search_score"] > best["search_score"]):
        best = b
      log.info("round %d: %d evaluated, best search_score in round %s, overall %s", r,
               len(records), None if b is None else round(b["search_score"], 4),
               None if best is None else round(best["search_score"], 4))
      bar.update(len(new))
      if best is not None:
        bar.set_postfix(best_search_score=f"{best['search_score']:.2f}")
      if (time.perf_counter() - last_save >= cfg["checkpoint"]["interval_s"]
          or len(records) >= budget):
        save()
  except KeyboardInterrupt:
    if not committing and meta["history_len"] > saved_len:
      save()
      ctx.notice(f"interrupted: checkpoint saved after {meta['history_len']} evaluation(s)")
    raise
  finally:
    bar.close()
  if replayed:
    ctx.notice(f"{replayed} evaluation(s) written after the last checkpoint were replayed from "
               "the history, not recomputed")
  ctx.search_seconds = round(seconds0 + time.perf_counter() - t0, 3)
  return records
