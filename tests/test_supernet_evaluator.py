"""Tests of the one-shot supernet evaluator on a tiny digits supernet.

The evaluator is family-agnostic (it only calls the family's init / train-step
/ eval builders), so its logic is tested on the nb201 family, which compiles in
seconds; the nasnet builders it would call are tested in test_networks_nasnet.
"""
import jax
import numpy as np
import pytest

from nas_jax.evaluators.supernet import SupernetEvaluator
from nas_jax.spaces import get_space

TINY = {"dataset": "digits", "init_channels": 4, "layers": 1, "batch_size": 32,
        "eval_batch_size": 64, "steps_per_round": 3, "total_rounds": 4}


@pytest.fixture(scope="module")
def setup():
  """One evaluator for the module: its train step and eval compile once."""
  space = get_space("nb201")
  archs = np.stack([np.asarray(space.sample(k)) for k in jax.random.split(jax.random.key(0), 4)])
  return space, archs, SupernetEvaluator(space, TINY)


def _copy(tree):
  """A deep copy as device arrays (the train step donates its input state)."""
  return jax.tree.map(lambda a: jax.numpy.array(a, copy=True) if isinstance(a, jax.Array) else a, tree)


def test_scores_shape_range_and_data_position(setup):
  space, archs, ev = setup
  state = ev.init(jax.random.key(1))
  result, state = ev.evaluate(state, archs, jax.random.key(2))
  assert result.scores.shape == (4,) and result.costs.shape == (4,)
  assert np.all((result.scores >= 0) & (result.scores <= 100))
  assert np.all(result.costs > 0)
  assert int(state["data_step"]) == 3 and int(state["net"]["step"]) == 3
  assert all("supernet_valid_loss" in i for i in result.info)


def test_same_state_and_key_give_same_result(setup):
  """A resumed evaluator (restored state, same key) continues bit for bit."""
  space, archs, ev = setup
  state = ev.init(jax.random.key(1))
  saved = _copy(state)
  r1, s1 = ev.evaluate(state, archs, jax.random.key(5))
  r2, s2 = ev.evaluate(saved, archs, jax.random.key(5))
  np.testing.assert_array_equal(r1.scores, r2.scores)
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_training_changes_scores_and_compiles_once(setup):
  space, archs, ev = setup
  state = ev.init(jax.random.key(1))
  before, _ = ev.score(state, archs, jax.random.key(9))
  for r in range(2):
    _, state = ev.evaluate(state, archs, jax.random.key(10 + r))
  after, _ = ev.score(state, archs, jax.random.key(9))
  assert not np.array_equal(before, after)
  train_step, eval_archs = ev._steps()
  assert train_step._cache_size() == 1 and eval_archs._cache_size() == 1


@pytest.mark.parametrize("bad, message", [
    ({"steps_per_round": 0}, "steps_per_round must be a positive integer"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"eval_bn": "mean"}, "eval_bn must be"),
    ({"drop_path_prob": 1.0}, "drop_path_prob must be in"),
    ({"epochs": 3}, "unknown supernet evaluator setting"),
])
def test_bad_config_is_rejected(setup, bad, message):
  with pytest.raises(ValueError, match=message):
    SupernetEvaluator(setup[0], {**TINY, **bad})


def test_space_without_supernet_is_rejected(setup, monkeypatch):
  from nas_jax import networks  # pylint: disable=import-outside-toplevel

  class NoSupernet:
    name, tasks, supernet, continuous = "nb201", ("images",), None, None

    def build_child(self, space, arch, **config):
      raise NotImplementedError

  monkeypatch.setattr(networks, "family", lambda name: NoSupernet())
  with pytest.raises(ValueError, match="has no weight-sharing supernet"):
    SupernetEvaluator(setup[0], TINY)
