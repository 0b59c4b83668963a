"""Neural Architecture Optimization (Luo et al., NeurIPS 2018) as an ask/tell strategy.

The loop: a random seed pool is evaluated; the encoder-predictor-decoder
(``nas_jax.predictors.nao``) is trained on every evaluated architecture
(scores normalised to [0, 1]: min-max as in the authors' code, or by rank,
the default, see ``normalise_scores``); the ``top_k`` best become seeds; gradient ascent
in the embedding space with a growing step size ``eta`` decodes new
architectures; those are evaluated; repeat.

Choosing the new architectures (``selection``):

* ``"first"`` (the authors' code): raise ``eta`` through the sweep and, at each
  step size, take every seed's decoded architecture that is new (neither
  evaluated nor generated before in this round), until ``new_per_round`` are
  found.
* ``"predicted"``: decode every seed at every step size, add the one-edit
  neighbours (``space.mutate``) of the best architectures when
  ``neighbours`` > 0, and take the ``new_per_round`` new ones with the highest
  predicted score. This uses the same model and ascent; it only spends the
  query budget where the predictor is most confident, which matters with a
  budget of 100 queries.

If fewer new architectures are found than asked for, the rest are mutations of
the best evaluated ones, then random samples (never repeats while the space
allows).

NAO-WS (``reevaluate_pool=True``): every ask returns the whole current pool
followed by the new architectures, because a one-shot evaluator retrains the
supernet on the asked architectures and re-scores all of them each round; the
pool then keeps its ``init_pool`` best (the authors replace the pool's worst
by the new ones, so the pool keeps its size). This is only a choice of what to ask.

State: a dict of arrays (fixed-capacity archive of evaluated architectures
and their latest scores, counters, the pool, the NAO parameters and Adam
state), so the experiment loop checkpoints it with orbax and resumes exactly.

Example:
    >>> from nas_jax.spaces import get_space
    >>> strategy = NAO(get_space("nb201"), {"init_pool": 20, "new_per_round": 10})
    >>> strategy.config["top_k"], strategy.config["targets"]
    (10, 'rank')

  The loop (not run here: compiling the model's init, training and ascent
  takes about 20 s of CPU)::

    state = strategy.init(jax.random.key(0))
    archs, state = strategy.ask(state, jax.random.key(1))   # 20 random
    state = strategy.tell(state, archs, scores)
    archs, state = strategy.ask(state, jax.random.key(2))   # 10 from the ascent
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.predictors.nao import NAOModel, NAOSettings
from nas_jax.spaces.base import SearchSpace
from nas_jax.strategies.base import State, Strategy
from nas_jax.strategies.random_search import check_float, check_int, check_tell, sample_archs

_MODEL_KEYS = tuple(f for f in NAOSettings.__dataclass_fields__)


@jax.jit
def _split(key: jax.Array) -> jax.Array:
  return jax.random.split(key, 5)


def normalise_scores(scores: np.ndarray, how: str = "minmax") -> np.ndarray:
  """Search scores -> NAO training targets in [0, 1] (-inf = failed -> 0).

  Args:
    scores: float[N] search scores; non-finite entries are failed evaluations.
    how: ``"minmax"`` (the authors' code: ``(s - min) / (max - min)``) or
      ``"rank"`` (``rank / (n - 1)`` among the finite scores, ties averaged):
      evenly spread targets, so that the small differences between the best
      architectures are not squashed by a few very bad ones.

  Returns:
    float32[N] targets.

  Example:
    >>> normalise_scores(np.array([10., 90., 91.]), "rank")
    array([0. , 0.5, 1. ], dtype=float32)
  """
  scores = np.asarray(scores, np.float64)
  finite = np.isfinite(scores)
  out = np.zeros(scores.shape, np.float64)
  if not finite.any():
    return out.astype(np.float32)
  s = scores[finite]
  if how == "minmax":
    out[finite] = (s - s.min()) / max(s.max() - s.min(), 1e-12)
  elif how == "rank":
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), np.float64)
    ranks[order] = np.arange(len(s), dtype=np.float64)
    _, tie = np.unique(s, return_inverse=True)  # ties share their mean rank
    ranks = (np.bincount(tie, weights=ranks) / np.bincount(tie))[tie]
    out[finite] = ranks / max(len(s) - 1, 1)
  else:
    raise ValueError(f"unknown score normalisation {how!r}; use 'minmax' or 'rank'")
  return out.astype(np.float32)


class NAO(Strategy):
  """NAO (registry name ``nao``); works on any space with a token view.

  Args:
    space: a search space (``nb201``, ``nasnet``, ...).
    config: settings, see ``default_config`` (each with its source).

  Example:
    >>> from nas_jax.spaces import get_space
    >>> strategy = NAO(get_space("nasnet"), {"reevaluate_pool": True})  # NAO-WS
    >>> strategy.config["init_pool"], strategy.config["reevaluate_pool"]
    (10, True)
  """

  name = "nao"

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    # Paper = Luo et al. 2018; code = NAO_pytorch NAO_V1/train_search.py (and
    # the model defaults in nas_jax.predictors.nao.NAOSettings). "tuned here" =
    # tuned on nb201 CIFAR-10 validation accuracy (benchmarks/nb201.py, 100
    # queries, 50 runs on seeds 1000-1049, not the reported seeds 0-49; the
    # strategy sees validation scores only) and used unchanged on every
    # dataset. Figures (mean test acc over seeds 1000-1049): the previous
    # defaults (init_pool 20, new_per_round 10, targets "minmax") 94.10;
    # init_pool 10 + new_per_round 5: 94.22; targets "rank": 94.20; both: 94.26
    # (adopted); both + neighbour_parents 3, neighbours 32: 94.23 (not adopted).
    # Adopted settings on the reported seeds 0-49: 94.26 +/- 0.18.
    s = NAOSettings()
    return {
        "init_pool": 10,          # code: controller_seed_arch 600 (1000 in NAO-WS); tuned here
        "new_per_round": 5,       # code: controller_new_arch 300; tuned here
        "top_k": 10,              # code: the top 100 archs seed the ascent; tuned here
        "train_steps": 100,       # Adam steps per round (warm start); code: 1000 epochs; tuned here
        "warm_start": True,       # code keeps one NAO model across rounds
        "eta_step": 1.0,          # code: step size 1, 2, 3, ...
        "num_etas": 50,           # code: max_step_size 50
        "selection": "predicted",  # "first" = code; "predicted" tuned here (see module doc)
        "neighbours": 24,         # mutations per parent as candidates; tuned here
        "neighbour_parents": 0,   # parents of the neighbours (0: top_k // 4); tuned here
        "targets": "rank",        # "minmax" = code; "rank" (see normalise_scores) tuned here
        "reevaluate_pool": False,  # True for NAO-WS (pool re-scored every round)
        "capacity": 2048,         # archive rows (evaluated archs remembered)
        # model (nas_jax.predictors.nao.NAOSettings has the code's values)
        "emb_size": 16,           # code 32; smaller for speed (about 4x cheaper per step with hidden 32)
        "hidden_size": 32,        # code 64; tuned
        "mlp_layers": s.mlp_layers, "mlp_hidden_size": s.mlp_hidden_size,
        "mlp_dropout": s.mlp_dropout, "trade_off": s.trade_off, "lr": s.lr,
        "grad_bound": s.grad_bound, "l2_reg": s.l2_reg,
        "batch_size": 32,         # code 100; tuned (at most ~100 archs are evaluated)
    }

  def __init__(self, space: SearchSpace, config: dict[str, Any] | None = None):
    super().__init__(space, config)
    c = self.config
    self.init_pool = check_int(c, "init_pool", self.name, 2)
    self.new_per_round = check_int(c, "new_per_round", self.name, 1)
    self.top_k = check_int(c, "top_k", self.name, 1)
    self.train_steps = check_int(c, "train_steps", self.name, 0)
    self.num_etas = check_int(c, "num_etas", self.name, 1)
    self.eta_step = check_float(c, "eta_step", self.name, 0.0, 1e6, low_open=True)
    self.neighbours = check_int(c, "neighbours", self.name, 0)
    self.neighbour_parents = check_int(c, "neighbour_parents", self.name, 0)
    if c["targets"] not in ("minmax", "rank"):
      raise ValueError(f"nao setting targets={c['targets']!r} must be 'minmax' or 'rank'")
    self.capacity = check_int(c, "capacity", self.name, 2)
    for flag in ("warm_start", "reevaluate_pool"):
      if not isinstance(c[flag], (bool, np.bool_)):
        raise ValueError(f"nao setting {flag}={c[flag]!r} must be true or false")
    if c["selection"] not in ("first", "predicted"):
      raise ValueError(f"nao setting selection={c['selection']!r} must be 'first' or 'predicted'")
    self.model = NAOModel(space, **{k: c[k] for k in _MODEL_KEYS})
    self.etas = self.model.etas(self.num_etas, self.eta_step)
    self._shape = tuple(space.arch_shape)
    self._tokens = jax.jit(jax.vmap(space.to_tokens))
    self._from_tokens = jax.jit(jax.vmap(space.from_tokens))
    self._mutate = jax.jit(jax.vmap(space.mutate))

  # --- helpers ----------------------------------------------------------------
  def _id(self, arch: np.ndarray) -> bytes:
    return np.asarray(self.space.canonical(arch), np.int32).tobytes()

  def _known_ids(self, state: State) -> set[bytes]:
    n = int(state["count"])
    return {self._id(a) for a in np.asarray(state["archs"])[:n]}

  def _fill(self, key: jax.Array, chosen: list[np.ndarray], seen: set[bytes],
            parents: np.ndarray, n: int) -> None:
    """Appends mutations of ``parents`` (then random archs) until ``n`` chosen."""
    k_mut, k_rand = jax.random.split(key)
    for attempt in range(50):
      if len(chosen) >= n:
        return
      if len(parents) and attempt < 25:
        keys = jax.random.split(jax.random.fold_in(k_mut, attempt), len(parents))
        block = np.asarray(self._mutate(keys, jnp.asarray(parents)))
      else:
        block = np.asarray(sample_archs(self.space, jax.random.fold_in(k_rand, attempt),
                                        max(n, 16)))
      for arch in block:
        i = self._id(arch)
        if i not in seen:
          seen.add(i)
          chosen.append(arch)
          if len(chosen) >= n:
            return
    # the space is (nearly) exhausted: accept repeats rather than fail
    while len(chosen) < n:
      chosen.append(np.asarray(sample_archs(self.space, jax.random.fold_in(k_rand, 99 + len(chosen)), 1))[0])

  # --- protocol ---------------------------------------------------------------
  def init(self, key: jax.Array) -> State:
    """Fresh state: empty archive, untrained NAO parameters."""
    params, opt_state = self.model.init(key)
    C = self.capacity
    return {
        "archs": np.zeros((C, *self._shape), np.int32),
        "scores": np.zeros((C,), np.float32),
        "count": np.asarray(0, np.int32),
        "pool": np.zeros((self.init_pool, *self._shape), np.int32),
        "pool_count": np.asarray(0, np.int32),
        "round": np.asarray(0, np.int32),
        "params": params,
        "opt_state": opt_state,
    }

  def ask(self, state: State, key: jax.Array) -> tuple[np.ndarray, State]:
    """The next architectures: int32[K, *arch_shape].

    Round 0 (nothing evaluated): ``init_pool`` distinct random archs. Later:
    train NAO on the archive, ascend from the ``top_k`` best, return
    ``new_per_round`` new archs (preceded by the pool when
    ``reevaluate_pool``).
    """
    k_pool, k_init, k_fit, k_fill, k_neigh = _split(key)
    count = int(state["count"])
    new_state = dict(state)
    new_state["round"] = np.asarray(int(state["round"]) + 1, np.int32)
    if count == 0:
      chosen: list[np.ndarray] = []
      self._fill(k_pool, chosen, set(), np.zeros((0, *self._shape), np.int32), self.init_pool)
      return np.stack(chosen).astype(np.int32), new_state

    archs = np.asarray(state["archs"])
    scores = np.asarray(state["scores"], np.float64)[:count]
    finite = np.isfinite(scores)
    targets = np.zeros(self.capacity, np.float32)
    targets[:count] = normalise_scores(scores, self.config["targets"])
    tokens = np.asarray(self._tokens(jnp.asarray(archs)))

    params, opt_state = state["params"], state["opt_state"]
    if not self.config["warm_start"]:
      params, opt_state = self.model.init(k_init)
    if self.train_steps:
      params, opt_state, _ = self.model.fit(params, opt_state, k_fit, tokens, targets, count,
                                            self.train_steps)
    new_state["params"], new_state["opt_state"] = params, opt_state

    if self.config["reevaluate_pool"] and int(state["pool_count"]) > 0:
      pool = np.asarray(state["pool"])[:int(state["pool_count"])]
    else:
      pool = np.zeros((0, *self._shape), np.int32)
    order = np.argsort(-np.where(finite, scores, -np.inf), kind="stable")
    seeds = archs[order[:self.top_k]]
    seen = self._known_ids(state)
    new = self._generate(k_neigh, params, seeds, seen)
    self._fill(k_fill, new, seen, seeds, self.new_per_round)
    out = np.concatenate([pool, np.stack(new).astype(np.int32)]) if len(pool) else np.stack(new)
    return out.astype(np.int32), new_state

  def _generate(self, key: jax.Array, params, seeds: np.ndarray,
                seen: set[bytes]) -> list[np.ndarray]:
    """New archs from the ascent (``seen`` is updated in place).

    Args:
      key: PRNG key of the neighbour mutations (``selection="predicted"``).
      params: the trained NAO parameters.
      seeds: int32[K, *arch_shape], the seeds of the ascent, best first.
      seen: canonical ids of the evaluated archs.

    Returns:
      Up to ``new_per_round`` new archs.
    """
    seed_tokens = self._tokens(jnp.asarray(seeds))
    decoded, preds = self.model.ascend(params, seed_tokens, self.etas)
    K, S, L = decoded.shape
    dec_archs = np.asarray(self._from_tokens(decoded.reshape(K * S, L))).reshape(
        (K, S) + self._shape)
    dec_tokens = np.asarray(decoded)
    preds = np.asarray(preds)
    chosen: list[np.ndarray] = []
    if self.config["selection"] == "first":
      for s in range(S):
        for k in range(K):
          i = self._id(dec_archs[k, s])
          if i not in seen:
            seen.add(i)
            chosen.append(dec_archs[k, s])
            if len(chosen) >= self.new_per_round:
              return chosen
      return chosen
    # "predicted": every distinct new candidate, best predicted first
    cand: dict[bytes, tuple[float, np.ndarray]] = {}
    by_tokens: dict[bytes, bytes] = {}
    for k in range(K):
      for s in range(S):
        tb = dec_tokens[k, s].tobytes()
        if tb in by_tokens:
          continue
        i = self._id(dec_archs[k, s])
        by_tokens[tb] = i
        if i in seen:
          continue
        p = float(preds[k, s])
        if i not in cand or p > cand[i][0]:
          cand[i] = (p, dec_archs[k, s])
    if self.neighbours:
      n_par = self.neighbour_parents or max(1, self.top_k // 4)
      parents = np.repeat(seeds[:n_par], self.neighbours, axis=0)
      keys = jax.random.split(key, len(parents))
      neigh = np.asarray(self._mutate(keys, jnp.asarray(parents)))
      npred = np.asarray(self.model.predict(params, self._tokens(jnp.asarray(neigh))))
      for arch, p in zip(neigh, npred):
        i = self._id(arch)
        if i not in seen and (i not in cand or p > cand[i][0]):
          cand[i] = (float(p), arch)
    ranked = sorted(cand.items(), key=lambda kv: -kv[1][0])
    for i, (_, arch) in ranked[:self.new_per_round]:
      seen.add(i)
      chosen.append(arch)
    return chosen

  def tell(self, state: State, archs: np.ndarray, scores: np.ndarray,
           costs: dict[str, np.ndarray] | None = None) -> State:
    """Records scores (the latest score of an arch replaces an older one)."""
    archs, scores = check_tell(self.space, self.name, archs, scores)
    stored = np.array(state["archs"], copy=True)
    stored_scores = np.array(state["scores"], copy=True)
    count = int(state["count"])
    index = {self._id(a): j for j, a in enumerate(stored[:count])}
    for arch, score in zip(archs, scores):
      i = self._id(arch)
      if i in index:
        stored_scores[index[i]] = score
        continue
      if count < self.capacity:
        j = count
        count += 1
      else:  # full: replace the worst entry if the new one is better
        j = int(np.argmin(stored_scores))
        if score <= stored_scores[j]:
          continue
        del index[self._id(stored[j])]
      stored[j], stored_scores[j] = arch, score
      index[i] = j
    new_state = {**state, "archs": stored, "scores": stored_scores,
                 "count": np.asarray(count, np.int32)}
    if self.config["reevaluate_pool"]:
      order = np.argsort(-scores, kind="stable")[:self.init_pool]
      pool = np.zeros_like(np.asarray(state["pool"]))
      pool[:len(order)] = archs[order]
      new_state["pool"] = pool
      new_state["pool_count"] = np.asarray(len(order), np.int32)
    return new_state
