"""Successive halving and Hyperband schedules ranked by predicted final values.

Hyperband (Li, Jamieson, DeSalvo, Rostamizadeh, Talwalkar, JMLR 2017) runs
successive halving (SHA; Jamieson & Talwalkar 2016) in several *brackets*:
bracket ``s`` starts its runs with ``R * eta^-s`` epochs and at each *rung*
keeps the best ``1 / eta`` of them for ``eta`` times more epochs, up to ``R``.
Baker et al. (2018, Sec. 5) rank the runs at a rung by their *predicted final*
value (their sequential regression models) instead of their value so far,
which keeps slow starters that end well.

Here the schedule is a ``train_child`` stopping rule, so it runs with any
strategy that trains candidates one after the other (random search, evolution,
...) on the one search loop: the asynchronous form of successive halving
(ASHA, Li et al., MLSys 2020): when a run reaches a rung of its bracket it is
*promoted* (trains on) if its value is among the best ``max(1, floor(n /
eta))`` of the ``n`` runs that have reached that rung so far (itself
included), else stopped there. Promotion is continuing the same training
run, so no run is ever paused and resumed. Differences from Li et al.: rungs
are pooled over brackets (every run that reached epoch ``r`` competes at
``r``), which matters for searches of tens of runs where per-bracket rungs
would be nearly empty; runs are dealt to brackets in the proportions of
synchronous Hyperband's bracket sizes ``n_s = ceil((s_max + 1) / (s + 1) *
eta^s)`` by a deterministic interleave (``brackets="hyperband"``), or all to
the most aggressive bracket (``brackets="sha"``).

Ranking (``predict=True``): by the predicted final value of each competitor's
curve up to the rung (``SequentialRegressor``; learnt online from completed
runs as in ``EarlyStopper``, or given), re-predicted with the current model
whenever a run reaches the rung; before a model exists, and with
``predict=False`` (plain ASHA), by the value at the rung.

Defaults: ``eta = 3`` (Li et al. 2017 and 2020); ``R`` = the runs' epochs;
the smallest rung 1 epoch.

Measured (``benchmarks/lce.py``: random searches over 142 held-out NAS-Bench-NLP
curves of 50 epochs, the predictor fitted on 100 others, 5 splits x 10 orders):
Hyperband 3.35x fewer epochs with predicted ranking (regret 0.04 % of the best
final validation loss) and 3.36x with the values at the rungs (regret 0);
successive halving 7.65x (0.55 %) and 7.53x (0). On those curves the value at
a rung already ranks well and the predictor adds nothing. On digits (20 runs
of 10 epochs, ``experiments/configs/lce_digits.py``; issue 21's target: 2x
fewer epochs, best within 0.5 points) successive halving with eta 2 ranked by
the epoch's training accuracy at the rungs (``rank_by="train"``) met it on 19
of 22 seeds (live runs, 2.11-5.56x); ranked by the validation accuracy 11 of
22; on seeds 0-13 by predicted final values 7 of 14, Hyperband eta 3 by predictions 7 (replays,
``benchmarks/early_stop_replay.py``): after one epoch of 16 steps the
validation accuracy ranks no better than chance there (Spearman 0.07 with the
final value, the training accuracy 0.38), and the online predictor has only
the 3-10 runs completed so far. With ``predict=False`` a stopped run's ``Decision`` still
carries the predicted final value once a model exists (for the history line).

Example:
    Loss curves whose level shows from the first epoch; the 2nd and 3rd runs are
    worse than the 1st at epoch 1 (the lowest rung) and stop there:

    >>> sha = SuccessiveHalving(higher_is_better=False, epochs=9, brackets="sha", predict=False)
    >>> sha.rungs_of(2), sha.s_max  # bracket 2: rungs at 9 / 9 and 9 / 3 epochs
    ((1, 3), 2)
    >>> def train(level):  # what train_child does with a callback: stop at its first reason
    ...   cb = sha.callback()
    ...   for e in range(1, 10):
    ...     if cb(e, {"valid_loss": level + 1.0 / e}):
    ...       return e
    >>> [train(level) for level in (1.0, 2.0, 3.0, 0.5)]  # the epoch each run stopped at
    [None, 1, 1, None]
    >>> sha.best
    0.6111111111111112
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nas_jax.predictors import learning_curves as lc

# Li et al. (2017), Sec. 3 and 5: eta = 3 ("a value of 3 or 4 works well in practice"); ASHA keeps it.
DEFAULT_ETA = 3
BRACKETS = ("hyperband", "sha")
RANK_BY = ("valid", "train")  # what the rungs rank by without predictions (SuccessiveHalving)


def bracket_sizes(s_max: int, eta: int) -> dict[int, int]:
  """Synchronous Hyperband's number of runs per bracket (Li et al. 2017, Alg. 1).

  Example:
    >>> bracket_sizes(3, 3)  # R = 27 or 50 epochs, eta = 3
    {3: 27, 2: 12, 1: 6, 0: 4}
  """
  return {s: int(math.ceil((s_max + 1) / (s + 1) * eta ** s)) for s in range(s_max, -1, -1)}


class SuccessiveHalving(lc.EarlyStopper):
  """Successive halving / Hyperband rungs as a ``train_child`` stopping rule.

  Inherits ``EarlyStopper``'s online regressor (``observe``: completed runs
  train it and set ``best``), ``make_callbacks``, ``for_task`` and
  ``records`` (``arch_id -> Decision``; ``prob`` is None: no probability).

  Args:
    higher_is_better, epochs, metric: as ``EarlyStopper``.
    eta: the halving rate (keep the best ``1 / eta`` at a rung).
    brackets: ``"hyperband"`` (all brackets, dealt in Hyperband's
      proportions) or ``"sha"`` (the most aggressive bracket only).
    min_epoch: the smallest rung, in epochs.
    predict: rank by predicted final values (Baker et al.) or, when False,
      by the values at the rung (plain ASHA).
    rank_by: with ``predict=False``, which curve the rungs rank by:
      ``"valid"`` (``metric``, the default) or ``"train"`` (its training
      counterpart: ``metric`` with ``valid_`` replaced by ``train_``, e.g.
      ``train_acc``; same direction). After a few hundred steps the
      validation value is the better judge; after one short epoch it can be
      noise (batch-norm running statistics still near their initial values,
      a small validation set), where the epoch's training value averages
      every training batch (``experiments/configs/lce_digits.py``).
    regressor, model, n_search, cv, seed, min_curves, refit_every: the
      predictor, as ``EarlyStopper``.

  Raises:
    ValueError: ``eta < 2``, unknown ``brackets``, ``min_epoch`` outside
      ``1..epochs - 1``, ``rank_by`` not ``"valid"`` / ``"train"`` or
      ``"train"`` with ``predict=True``.
  """

  def __init__(self, *, higher_is_better: bool, epochs: int, metric: str = "valid_loss",
               eta: int = DEFAULT_ETA, brackets: str = "hyperband", min_epoch: int = 1,
               predict: bool = True, regressor: lc.SequentialRegressor | None = None,
               model: str = "nusvr_rbf", n_search: int = lc.DEFAULT_SEARCH, cv: int = lc.DEFAULT_CV,
               seed: int = 0, min_curves: int = 10, refit_every: int = 5, rank_by: str = "valid"):
    super().__init__(higher_is_better=higher_is_better, epochs=epochs, metric=metric,
                     regressor=regressor, model=model, n_search=n_search, cv=cv, seed=seed,
                     min_curves=min_curves, refit_every=refit_every, min_epoch=min_epoch)
    if isinstance(eta, bool) or int(eta) != eta or eta < 2:
      raise ValueError(f"eta must be an integer >= 2 (Hyperband's default is 3), got {eta!r}")
    if brackets not in BRACKETS:
      raise ValueError(f"unknown brackets {brackets!r}; use one of {BRACKETS}")
    if not 1 <= int(min_epoch) < self.epochs:
      raise ValueError(f"min_epoch must lie in 1..{self.epochs - 1}, got {min_epoch!r}")
    if rank_by not in RANK_BY:
      raise ValueError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}")
    if rank_by == "train" and predict:
      raise ValueError("rank_by='train' ranks by the training values at the rungs; set predict=False "
                       "(a predicted ranking predicts the final validation value)")
    self.eta, self.brackets, self.predict_final = int(eta), brackets, bool(predict)
    self.rank_by = rank_by
    # The curve the rungs rank by: the metric itself, or its training counterpart (same direction).
    self.rank_metric = metric if rank_by == "valid" else "train_" + metric.removeprefix("valid_")
    ratio = self.epochs / int(min_epoch)
    self.s_max = int(math.floor(math.log(ratio) / math.log(self.eta) + 1e-9))
    # Rung k of the deepest bracket: R * eta^-k epochs (rounded, at least min_epoch, below R).
    self._rungs = {}
    for s in range(self.s_max + 1):
      rungs = {max(int(min_epoch), int(round(self.epochs * self.eta ** -k))) for k in range(1, s + 1)}
      self._rungs[s] = tuple(sorted(r for r in rungs if r < self.epochs))
    sizes = bracket_sizes(self.s_max, self.eta) if brackets == "hyperband" else {self.s_max: 1}
    self._weights = sizes
    self._dealt = {s: 0 for s in sizes}
    self._runs = 0
    # Per rung epoch, each run that reached it: (its metric curve, features, its rank_metric value there).
    self._at_rung: dict[int, list[tuple[np.ndarray, Mapping[str, float] | None, float]]] = {}

  def rungs_of(self, bracket: int) -> tuple[int, ...]:
    """The rung epochs of a bracket (empty for bracket 0: full training)."""
    return self._rungs[bracket]

  def _next_bracket(self) -> int:
    """Deals the next run to the bracket furthest below its share (deterministic)."""
    total = sum(self._weights.values())
    n = self._runs + 1
    s = max(self._weights, key=lambda b: (n * self._weights[b] / total - self._dealt[b], b))
    self._dealt[s] += 1
    self._runs += 1
    return s

  def _predicted(self, prefixes: np.ndarray, features: Sequence[Mapping[str, float] | None],
                 tau: int) -> np.ndarray | None:
    """Predicted final values of curves cut at ``tau`` (None before a model for ``tau`` exists)."""
    reg = self.regressor
    if reg is None or tau not in reg.models_:
      return None
    static = None if not reg.static_keys_ else [f or {} for f in features]
    mean, _ = reg.predict(prefixes, static=static, tau=tau)
    return mean

  def _values(self, prefixes: np.ndarray, features: Sequence[Mapping[str, float] | None],
              tau: int) -> tuple[np.ndarray, bool]:
    """Ranking values of curves cut at ``tau``: predicted finals when possible."""
    mean = self._predicted(prefixes, features, tau) if self.predict_final else None
    return (prefixes[:, -1], False) if mean is None else (mean, True)

  def rung_decision(self, partial, features: Mapping[str, float] | None = None,
                    rank_value: float | None = None) -> lc.Decision:
    """Records a curve at a rung and decides: promote (``stop=False``) or stop.

    Args:
      partial: the run's ``metric`` curve so far.
      features: its architecture numbers (the predictor's), or None.
      rank_value: the run's ``rank_metric`` value at the rung, which the rung
        ranks by when ``rank_by="train"``; None: the last value of ``partial``.
    """
    partial = np.asarray(partial, np.float64).reshape(-1)
    tau = len(partial)
    entries = self._at_rung.setdefault(tau, [])
    entries.append((partial.copy(), features, float(partial[-1] if rank_value is None else rank_value)))
    if self.rank_by == "valid":
      values, predicted = self._values(np.stack([e[0] for e in entries]), [e[1] for e in entries],
                                       tau)
    else:
      values, predicted = np.array([e[2] for e in entries], np.float64), False
    values = np.where(np.isfinite(values), values, -np.inf if self.higher_is_better else np.inf)
    order = np.argsort(-values if self.higher_is_better else values, kind="stable")
    keep = max(1, len(entries) // self.eta)
    stop = bool(len(entries) - 1 not in order[:keep])
    if predicted:
      final = float(values[-1])
    else:  # ranked by the values at the rung: the prediction (once a model exists) is for the record
      mean = self._predicted(partial[None], [features], tau) if stop else None
      final = None if mean is None else float(mean[0])
    return lc.Decision(stop=stop, tau=tau, predicted=final, std=None, prob=None, best=self.best)

  def callback(self, features: Mapping[str, float] | None = None, arch_id: str | None = None
               ) -> Callable[[int, dict[str, Any]], str | None]:
    """A ``train_child`` callback for one run (dealt to the next bracket).

    Returns:
      ``callback(epoch, entry) -> reason | None``: at a rung of the run's
      bracket, the reason when the run is not among the best ``1 / eta``
      there; at epoch ``epochs`` the run is recorded (``observe``). A
      callback that missed epochs (a resumed run) never stops its run.
    """
    bracket = self._next_bracket()
    rungs = set(self._rungs[bracket])
    values: list[float] = []
    key = arch_id if arch_id is not None else f"run{self._runs}"

    def callback(epoch: int, entry: dict[str, Any]) -> str | None:
      value = entry.get(self.metric)
      values.append(float("nan") if value is None else float(value))
      if self.rank_metric != self.metric and self.rank_metric not in entry:
        raise ValueError(f"rank_by={self.rank_by!r} ranks by {self.rank_metric!r}, which the epoch's "
                         f"entry lacks (it has {sorted(entry)}); use rank_by='valid'")
      if len(values) != epoch:
        return None
      if epoch == self.epochs:
        self.observe(values, features)
        return None
      if epoch not in rungs:
        return None
      rank_value = values[-1] if self.rank_metric == self.metric else entry[self.rank_metric]
      rank_value = float("nan") if rank_value is None else float(rank_value)
      d = self.rung_decision(values, features, rank_value)
      if not d.stop:
        return None
      self.records[key] = d
      n = len(self._at_rung[epoch])
      ranked_by_prediction = self.predict_final and d.predicted is not None
      what = (f"predicted final {self.metric} {d.predicted:.4g}" if ranked_by_prediction
              else f"{self.rank_metric} {rank_value:.4g}")
      note = ("" if ranked_by_prediction or d.predicted is None
              else f" (predicted final {d.predicted:.4g})")
      return (f"early stop at epoch {epoch} (successive halving, bracket {bracket}, eta "
              f"{self.eta}): {what} not in the best {max(1, n // self.eta)} of {n} at this rung{note}")

    return callback

  def replay(self, records: Sequence[dict[str, Any]]) -> None:
    """Rebuilds the rungs and the predictor from a resumed search's history lines, in order.

    Every line's curve is fed to a fresh callback (its answers ignored), so
    bracket dealing, rungs and ``best`` are those of the uninterrupted search.
    """
    for r in records:
      cb = self.callback(arch_id=r.get("arch_id") or (r.get("info") or {}).get("arch_id"))
      for i, entry in enumerate(r.get("curve") or []):
        cb(i + 1, dict(entry))
      self.records.pop(r.get("arch_id"), None)


def make_stopper(task, epochs: int, settings: Mapping[str, Any]) -> lc.EarlyStopper:
  """The stopper of a set of ``early_stop`` settings, on a task's validation metric.

  Args:
    task: a ``nas_jax.tasks`` task (its ``metric`` and ``higher_is_better``).
    epochs: length of a complete run.
    settings: ``rule`` (``"baker"``, the default: ``EarlyStopper``, Baker et
      al.'s probability rule; ``"hyperband"`` / ``"sha"``: ``SuccessiveHalving``
      with those brackets) and the chosen stopper's settings.

  Raises:
    ValueError: an unknown rule or setting (one line naming the allowed ones).

  Example:
    >>> from nas_jax.tasks import get_task
    >>> s = make_stopper(get_task("images"), 10, {"rule": "sha", "eta": 2, "predict": False})
    >>> type(s).__name__, s.metric, s.rungs_of(s.s_max)
    ('SuccessiveHalving', 'valid_acc', (1, 2, 5))
  """
  settings = dict(settings)
  rule = settings.pop("rule", "baker")
  allowed = {"delta", "min_curves", "refit_every", "min_epoch", "model", "n_search", "cv"}
  if rule in BRACKETS:
    allowed = allowed - {"delta"} | {"eta", "predict", "rank_by"}
  elif rule != "baker":
    raise ValueError(f"unknown early_stop rule {rule!r}; use 'baker', 'hyperband' or 'sha'")
  unknown = sorted(set(settings) - allowed)
  if unknown:
    raise ValueError(f"unknown early_stop setting(s) {unknown} for rule {rule!r}; "
                     f"allowed: {sorted(allowed)}")
  if rule == "baker":
    return lc.EarlyStopper.for_task(task, epochs=epochs, **settings)
  return SuccessiveHalving.for_task(task, epochs=epochs, brackets=rule, **settings)


def simulate_search(stopper: lc.EarlyStopper, curves, *, static=None, seed: int = 0,
                    order: Sequence[int] | None = None,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Random search over recorded curves with a stopper's callbacks (the curves act as the evaluator).

  Works for any ``EarlyStopper`` (Baker's rule) or ``SuccessiveHalving``: runs
  are visited in a random order (``seed``), or in ``order`` when given (e.g.
  a recorded search's own order), and fed epoch by epoch to a fresh callback
  until it returns a reason.

  Args:
    stopper: a fresh stopper (its ``metric`` names the values of ``curves``).
    curves: ``[n, epochs]`` values of ``stopper.metric``.
    static: per-curve architecture numbers for the predictor, or None.
    seed: the random order's seed (without ``order``).
    order: the order of the runs, or None.
    extra: other per-epoch series by name (each ``[n, epochs]``, e.g.
      ``{"train_acc": ...}`` for ``rank_by="train"``), added to each epoch's
      entry.

  Returns:
    dict with ``epochs``, ``full_epochs``, ``speedup``, ``stopped``,
    ``best_found``, ``best_true``, ``regret`` (fraction of the best final
    value's magnitude), ``stop_epochs``, as ``simulate_early_stopping``.

  Example:
    >>> t = np.arange(1, 10.0)
    >>> curves = np.stack([a + 1.0 / t for a in np.linspace(1, 3, 12)])
    >>> out = simulate_search(SuccessiveHalving(higher_is_better=False, epochs=9, predict=False), curves)
    >>> out["regret"], out["speedup"] > 1.5
    (0.0, True)
  """
  curves = np.asarray(curves, np.float64)
  n, epochs = curves.shape
  if stopper.epochs != epochs:
    raise ValueError(f"the stopper expects {stopper.epochs}-epoch curves, got {epochs}")
  extra = {k: np.asarray(v, np.float64) for k, v in (extra or {}).items()}
  for k, v in extra.items():
    if v.shape != curves.shape:
      raise ValueError(f"extra series {k!r} has shape {v.shape}, the curves {curves.shape}")
  stop_epochs = []
  for i in np.random.default_rng(seed).permutation(n) if order is None else order:
    cb = stopper.callback(None if static is None else static[i])
    stop_at = epochs
    for e in range(1, epochs + 1):
      entry = {k: float(v[i, e - 1]) for k, v in extra.items()}
      entry[stopper.metric] = float(curves[i, e - 1])
      if cb(e, entry) is not None:
        stop_at = e
        break
    stop_epochs.append(stop_at)
  finals = curves[:, -1]
  hib = stopper.higher_is_better
  best_true = float(finals.max() if hib else finals.min())
  best = stopper.best
  gap = (best_true - best) if hib else (best - best_true)
  total = int(np.sum(stop_epochs))
  return {"epochs": total, "full_epochs": n * epochs, "speedup": n * epochs / total,
          "stopped": int(sum(s < epochs for s in stop_epochs)), "best_found": best,
          "best_true": best_true, "regret": float(gap / abs(best_true)) if best_true else float(gap),
          "stop_epochs": stop_epochs}
