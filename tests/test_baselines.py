"""Tests of the baseline strategies: random search, regularized evolution, REINFORCE, ENAS."""
from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from nas_jax import registry
from nas_jax.strategies.evolution import RegularizedEvolution
from nas_jax.strategies.random_search import RandomSearch
from nas_jax.strategies.reinforce import Reinforce

NAMES = ("random", "evolution", "reinforce", "enas")


@pytest.fixture(scope="module")
def space():
  return registry.get_space("nb201")


def toy_score(archs: np.ndarray) -> np.ndarray:
  """A deterministic search score: op 3 (nor_conv_3x3) is best on every edge."""
  archs = np.asarray(archs)
  return 80.0 + 2.0 * (archs == 3).sum(axis=1) + 0.5 * (archs == 2).sum(axis=1)


def drive(strategy, steps: int, seed: int = 0):
  """ask/tell ``steps`` times with keys from ``seed``; returns (all archs, state)."""
  state = strategy.init(jax.random.key(seed))
  asked = []
  for t in range(steps):
    archs, state = strategy.ask(state, jax.random.fold_in(jax.random.key(seed + 1), t))
    asked.append(np.asarray(archs))
    state = strategy.tell(state, archs, toy_score(archs))
  return np.concatenate(asked), state


@pytest.mark.parametrize("name", NAMES)
def test_registry_names_and_protocol(space, name):
  cls = registry.get_strategy(name)
  assert cls.name == name
  strategy = cls(space)
  archs, state = drive(strategy, 15)
  assert archs.shape == (15, 6) and archs.dtype == np.int32
  for arch in archs:
    space.validate(arch)
  # state: a pytree of arrays only, so orbax can checkpoint it
  for leaf in jax.tree.leaves(state):
    assert isinstance(leaf, (np.ndarray, jax.Array)), type(leaf)


@pytest.mark.parametrize("name", NAMES)
def test_same_keys_same_archs(space, name):
  cls = registry.get_strategy(name)
  first, _ = drive(cls(space), 25, seed=3)
  again, _ = drive(cls(space), 25, seed=3)
  other, _ = drive(cls(space), 25, seed=4)
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


@pytest.mark.parametrize("name", NAMES)
def test_orbax_checkpoint_resumes_bit_for_bit(space, name, tmp_path):
  strategy = registry.get_strategy(name)(space)
  _, state = drive(strategy, 14)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(tmp_path, "state"), state)
  checkpointer.wait_until_finished()
  restored = checkpointer.restore(os.path.join(tmp_path, "state"), state)
  key = jax.random.key(99)
  a, state_a = strategy.ask(state, key)
  b, state_b = strategy.ask(restored, key)
  np.testing.assert_array_equal(a, b)
  after_a = strategy.tell(state_a, a, toy_score(a))
  after_b = strategy.tell(state_b, b, toy_score(b))
  for x, y in zip(jax.tree.leaves(after_a), jax.tree.leaves(after_b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name, config, match", [
    ("random", {"batch_size": 0}, "batch_size"),
    ("random", {"dedupe": "yes"}, "dedupe"),
    ("random", {"max_retries": -1}, "max_retries"),
    ("random", {"steps": 3}, "unknown"),
    ("evolution", {"sample_size": 11}, "sample_size"),
    ("evolution", {"population_size": 0}, "population_size"),
    ("evolution", {"population_size": 2.5}, "integer"),
    ("reinforce", {"learning_rate": 0.0}, "learning_rate"),
    ("reinforce", {"ema_momentum": 1.0}, "ema_momentum"),
    ("reinforce", {"lr": 0.1}, "unknown"),
])
def test_config_is_validated(space, name, config, match):
  with pytest.raises(ValueError, match=match):
    registry.get_strategy(name)(space, config)


@pytest.mark.parametrize("name", NAMES)
def test_tell_rejects_mismatched_scores(space, name):
  strategy = registry.get_strategy(name)(space)
  state = strategy.init(jax.random.key(0))
  archs, state = strategy.ask(state, jax.random.key(1))
  with pytest.raises(ValueError, match="scores"):
    strategy.tell(state, archs, np.zeros(len(archs) + 1))
  with pytest.raises(ValueError, match="NaN"):
    strategy.tell(state, archs, np.full(len(archs), np.nan))


# --- random search -------------------------------------------------------------
def test_evolution_batches_across_the_random_phase(space):
  strategy = RegularizedEvolution(space, {"population_size": 5, "batch_size": 3})
  archs, state = drive(strategy, 4)
  assert archs.shape == (12, 6) and int(state["num_told"]) == 12
  assert sorted(map(tuple, state["pop_archs"].tolist())) == sorted(map(tuple, archs[-5:].tolist()))


def test_random_search_does_not_repeat(space):
  archs, _ = drive(RandomSearch(space, {"batch_size": 100}), 15)
  ids = [space.arch_id(a) for a in archs]
  assert len(set(ids)) == len(ids) == 1500
  # without de-duplication the same draws do repeat (so the check above can fail)
  plain, _ = drive(RandomSearch(space, {"batch_size": 100, "dedupe": False}), 15)
  assert len({space.arch_id(a) for a in plain}) < 1500


def test_random_search_accepts_duplicates_when_exhausted(space):
  # nb201 has 5,260 classes: asking 6,000 must still answer (after retries)
  strategy = RandomSearch(space, {"batch_size": 100, "max_retries": 3,
                                  "history_capacity": 8192})
  archs, state = drive(strategy, 60)
  assert archs.shape == (6000, 6)
  assert int(state["count"]) == 6000
  assert len({space.arch_id(a) for a in archs}) <= 5260


# --- regularized evolution ------------------------------------------------------------
def test_evolution_random_start_then_one_edge_children(space):
  p = 5
  strategy = RegularizedEvolution(space, {"population_size": p, "sample_size": 2})
  archs, state = drive(strategy, 40)
  for t in range(p, 40):
    # every child is one mutation away from a member of the population it came from
    window = archs[max(0, t - p):t]
    assert ((window != archs[t]).sum(axis=1) == 1).any(), t
  # ageing: the population is exactly the last p told archs
  assert sorted(map(tuple, state["pop_archs"].tolist())) == sorted(map(tuple, archs[-p:].tolist()))
  assert int(state["num_told"]) == 40


def test_evolution_tournament_prefers_the_best(space):
  # four far-apart members (distance 6): a child's parent is the member at distance 1
  members = np.repeat(np.arange(4, dtype=np.int32)[:, None], 6, axis=1)

  def parent_is_best_rate(sample_size: int) -> float:
    strategy = RegularizedEvolution(space, {"population_size": 4, "sample_size": sample_size})
    state = {**strategy.init(jax.random.key(0)), "pop_archs": members,
             "pop_scores": np.array([1.0, 2.0, 3.0, 4.0]), "num_asked": np.asarray(4),
             "num_told": np.asarray(4)}
    children = np.concatenate([strategy.ask(state, jax.random.key(t))[0] for t in range(60)])
    distance = (children[:, None, :] != members[None]).sum(axis=2)
    assert (distance.min(axis=1) == 1).all()  # one mutation of a member
    return float((distance.argmin(axis=1) == 3).mean())

  # with replacement, P(best in the sample) = 1 - (3/4)**3 = 0.58 for 3 draws, 0.25 for 1
  assert parent_is_best_rate(3) > 0.45
  assert parent_is_best_rate(1) < 0.4


def test_evolution_improves_the_toy_score(space):
  archs, _ = drive(RegularizedEvolution(space), 150)
  assert toy_score(archs[-30:]).mean() > toy_score(archs[:10]).mean() + 2.0


# --- REINFORCE ------------------------------------------------------------------------
def test_reinforce_defaults_follow_the_reference():
  assert Reinforce.default_config() == {"learning_rate": 0.01, "ema_momentum": 0.9,
                                        "batch_size": 1}


def test_reinforce_learns_the_best_op(space):
  strategy = Reinforce(space, {"learning_rate": 0.1})
  _, state = drive(strategy, 120)
  probs = strategy.probs(state)
  assert probs.shape == (6, 6)
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
  assert probs[:, 0].max() < 1e-6  # token 0 (start/end) is masked out
  assert probs[:, 4].mean() > 0.5  # token 4 = op 3, the best op, from 0.2 at the start


def test_reinforce_ema_baseline_is_bias_corrected(space):
  strategy = Reinforce(space)
  state = strategy.init(jax.random.key(0))
  archs, state = strategy.ask(state, jax.random.key(1))
  state = strategy.tell(state, archs, np.array([90.0]))
  # after one reward the corrected EMA equals it: zero advantage, no update
  assert float(state["ema_num"]) / float(state["ema_den"]) == pytest.approx(90.0)
  np.testing.assert_allclose(np.asarray(state["logits"]),
                             np.asarray(strategy.init(jax.random.key(0))["logits"]))
