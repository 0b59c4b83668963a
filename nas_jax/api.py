"""``nas_jax.search``: the ask/tell search as one function call, for use as a library.

``search(space, strategy, evaluator, budget=..., seed=...)`` runs the same
round as the command-line runner (``nas_jax.runner.search.search_round``:
ask, validate, evaluate, tell) until ``budget`` architectures are evaluated,
in memory: no workdir, no checkpoints, no final training. Each part may be
given by registry name, as a class or as a constructed object; the evaluator
may also be a plain Python function ``genotype -> score`` (higher is better),
which is the quickest way to search a space of your own
(``nas_jax.spaces.CategoricalSpace``). Keys are those of
``runner.run_experiment`` (``split(key(seed), 4)``), so with the same names,
settings and seed the library and the command line evaluate the same
architectures in the same order.

Example:
    >>> from nas_jax.spaces import CategoricalSpace
    >>> space = CategoricalSpace({"depth": [1, 2, 3, 4], "width": [8, 16, 32]}, name="toy")
    >>> score = lambda g: g["depth"] * 10 - abs(g["width"] - 16)  # best: depth 4, width 16
    >>> result = search(space, "evolution", evaluator=score, budget=40, seed=0,
    ...                 strategy_config={"population_size": 8, "sample_size": 3})
    >>> result.best_genotype, result.best_score
    ({'depth': 4, 'width': 16}, 40.0)
    >>> len(result.history), sorted(result.history[0])
    (40, ['arch_id', 'cost_s', 'genotype', 'index', 'round', 'search_score', 'wall_time_s'])
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np

from nas_jax import registry
from nas_jax.evaluators.base import Evaluation, Evaluator
from nas_jax.spaces.base import SearchSpace
from nas_jax.strategies.base import Strategy


@dataclasses.dataclass
class SearchResult:
  """What ``search`` returns.

  Attributes:
    best_arch: int32 array of the best architecture (highest search score;
      the first of ties).
    best_genotype: its readable form (``space.to_genotype``).
    best_score: its search score.
    history: one dict per evaluated architecture, in order (the fields of the
      runner's ``history.jsonl``: index, round, arch_id, genotype,
      search_score, cost_s, wall_time_s, and metrics / curve where the
      evaluator gives them).
    space, strategy, evaluator: the constructed parts.
    strategy_state, evaluator_state: the states after the last round (a
      supernet evaluator's state holds the trained shared weights).
  """
  best_arch: np.ndarray
  best_genotype: dict[str, Any]
  best_score: float
  history: list[dict[str, Any]]
  space: SearchSpace
  strategy: Strategy
  evaluator: Evaluator
  strategy_state: Any = None
  evaluator_state: Any = None

  @property
  def scores(self) -> np.ndarray:
    """float64[N] search score of each evaluation, in order (NaN where it failed)."""
    return np.array([np.nan if r["search_score"] is None else r["search_score"] for r in self.history])

  def best_so_far(self) -> np.ndarray:
    """float64[N]: the best search score after each evaluation (the search trajectory)."""
    s = np.where(np.isnan(self.scores), -np.inf, self.scores)
    return np.maximum.accumulate(s) if len(s) else s


class FunctionEvaluator(Evaluator):
  """An evaluator from a Python function ``genotype -> score`` (or ``arch -> score``).

  Args:
    space: the search space.
    fn: the score function; higher is better. An exception or a non-finite
      value marks that architecture failed (told as -inf).
    on: "genotype" (``fn`` gets ``space.to_genotype(arch)``, default) or
      "arch" (the int32 array).

  Example:
    >>> from nas_jax.spaces import get_space
    >>> ev = FunctionEvaluator(get_space("nb201"), lambda arch: float(arch.sum()), on="arch")
    >>> result, _ = ev.evaluate({}, np.array([[0, 1, 2, 3, 4, 0]], np.int32), jax.random.key(0))
    >>> result.scores
    array([10.])
  """

  name = "function"
  replayable = True

  def __init__(self, space: SearchSpace, fn: Callable[[Any], float], on: str = "genotype"):
    if not callable(fn):
      raise ValueError(f"FunctionEvaluator needs a callable genotype -> score, got {fn!r}")
    if on not in ("genotype", "arch"):
      raise ValueError(f"FunctionEvaluator on={on!r}; use 'genotype' or 'arch'")
    super().__init__(space, {})
    self.fn, self.on = fn, on
    self.name = getattr(fn, "__name__", "function")

  def evaluate(self, state: Any, archs: np.ndarray, key: jax.Array) -> tuple[Evaluation, Any]:
    del key
    scores, costs, info = [], [], []
    for arch in np.asarray(archs):
      t = time.perf_counter()
      try:
        value = float(self.fn(self.space.to_genotype(arch) if self.on == "genotype" else arch))
        info.append({})
      except Exception as e:  # pylint: disable=broad-except
        value = float("nan")
        info.append({"error": f"{type(e).__name__}: {e}"})
      scores.append(value)
      costs.append(time.perf_counter() - t)
    return Evaluation(np.asarray(scores, np.float64), np.asarray(costs), info), state


def _space(space, options: dict[str, Any] | None = None) -> SearchSpace:
  if isinstance(space, str):
    return registry.get_space(space, **(options or {}))
  if options:
    raise ValueError("space_options are for a space given by name; this one is constructed "
                     f"({space!r}): pass them to its constructor")
  if isinstance(space, type) and issubclass(space, SearchSpace):
    return space()
  if isinstance(space, SearchSpace):
    return space
  raise ValueError(f"space must be a registry name, a SearchSpace or its class, got {space!r}")


def _provided(data, workdir) -> dict[str, Callable[[], Any]]:
  out = {}
  if data is not None:
    out["data"] = lambda: data
  if workdir is not None:
    out["workdir"] = lambda: str(workdir)
  return out


def _construct(cls, space, config, provided, what):
  needs = tuple(getattr(cls, "needs", ()))
  missing = [n for n in needs if n not in provided]
  if missing:
    raise ValueError(f"{what} {getattr(cls, 'name', cls.__name__)!r} needs {missing}; pass "
                     + " and ".join(f"{n}=..." for n in missing) + " to nas_jax.search")
  return cls(space, dict(config or {}), **{n: provided[n]() for n in needs})


def search(space: str | SearchSpace | type, strategy: str | Strategy | type,
           evaluator: str | Evaluator | type | Callable[[Any], float] | None = None, *,
           budget: int, seed: int = 0, strategy_config: dict[str, Any] | None = None,
           evaluator_config: dict[str, Any] | None = None, data: Any = None, workdir: Any = None,
           callback: Callable[[list[dict[str, Any]]], None] | None = None,
           space_options: dict[str, Any] | None = None) -> SearchResult:
  """Searches ``space`` with ``strategy`` until ``budget`` architectures are evaluated.

  Args:
    space: a registry name ("nb201", "nasnet", ...), a ``SearchSpace`` or its class.
    strategy: an ask/tell strategy: registry name ("random", "evolution",
      "reinforce", "nao", "enas"), class or constructed object.
    evaluator: registry name ("tabular", "supernet", "scratch"), class,
      constructed object, or a function ``genotype -> score`` (higher is
      better; see ``FunctionEvaluator``). None: the space's
      ``default_evaluator``.
    budget: architectures to evaluate (a last batch is cut to fit).
    seed: the search's seed (same seed, same search; on CPU bit for bit).
    strategy_config, evaluator_config: settings for a strategy / evaluator
      given by name or class (unknown keys raise ``ValueError``).
    data: the task's data for evaluators that need it (``supernet``,
      ``scratch``): e.g. ``nas_jax.data.load_dataset("digits")``.
    workdir: a directory for evaluators that keep per-evaluation
      checkpoints (``scratch``).
    callback: called after each round with that round's history records
      (progress bars, live plots).
    space_options: the constructor arguments of a space given by name, e.g.
      ``{"num_layers": 6}`` for "macro", ``{"num_nodes": 9}`` for "rnn"
      (``registry.space_options(name)`` lists them).

  Returns:
    A ``SearchResult``.

  Raises:
    ValueError: unknown names, bad settings, a one-shot method (run those with
      ``nas_jax.runner.run_experiment``), a part that needs ``data`` or
      ``workdir`` without it, or no architecture with a finite score.
  """
  from nas_jax.runner import search as search_lib  # pylint: disable=import-outside-toplevel
  from nas_jax.runner import report  # pylint: disable=import-outside-toplevel

  if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
    raise ValueError(f"budget={budget!r} must be a positive number of architectures")
  space = _space(space, space_options)
  provided = _provided(data, workdir)
  if isinstance(strategy, str):
    strategy = registry.get_strategy(strategy)
  if isinstance(strategy, type):
    if getattr(strategy, "kind", "ask_tell") != "ask_tell":
      raise ValueError(f"strategy {getattr(strategy, 'name', strategy.__name__)!r} is a one-shot method; "
                       "run it with nas_jax.runner.run_experiment (config strategy.name)")
    strategy = _construct(strategy, space, strategy_config, provided, "strategy")
  elif strategy_config:
    raise ValueError("strategy_config is for a strategy given by name or class; this one is constructed")
  if evaluator is None:
    evaluator = space.default_evaluator
  if isinstance(evaluator, str):
    evaluator = registry.get_evaluator(evaluator)
  if isinstance(evaluator, type):
    evaluator = _construct(evaluator, space, evaluator_config, provided, "evaluator")
    evaluator.prepare()
  elif not isinstance(evaluator, Evaluator) and callable(evaluator):
    evaluator = FunctionEvaluator(space, evaluator, **(evaluator_config or {}))
  elif evaluator_config:
    raise ValueError("evaluator_config is for an evaluator given by name, class or function")
  if not isinstance(evaluator, Evaluator):
    raise ValueError(f"evaluator must be a registry name, an Evaluator, its class or a function "
                     f"genotype -> score, got {evaluator!r}")

  k_strategy, k_evaluator, k_search, _ = jax.random.split(jax.random.key(int(seed)), 4)
  s_state, e_state = strategy.init(k_strategy), evaluator.init(k_evaluator)
  history: list[dict[str, Any]] = []
  t0 = time.perf_counter()
  r = 0
  while len(history) < budget:
    rnd = search_lib.search_round(strategy, evaluator, space, s_state, e_state, k_search, r,
                                  remaining=budget - len(history))
    s_state, e_state = rnd.strategy_state, rnd.evaluator_state
    new = search_lib.history_lines(space, rnd, len(history), r, time.perf_counter() - t0)
    history += new
    if callback is not None:
      callback(new)
    r += 1
  best = report.best(history)
  if best is None:
    raise ValueError(f"no architecture got a finite search score in {budget} evaluations; "
                     "see the 'error' field of the history records")
  return SearchResult(best_arch=space.from_genotype(best["genotype"]), best_genotype=best["genotype"],
                      best_score=best["search_score"], history=history, space=space, strategy=strategy,
                      evaluator=evaluator, strategy_state=s_state, evaluator_state=e_state)
