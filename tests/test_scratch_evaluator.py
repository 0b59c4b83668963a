"""Tests of the train-from-scratch evaluator (learning curves as info)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import data, networks, registry
from nas_jax.evaluators.scratch import ScratchEvaluator


class ArchTiny(nn.Module):
  """A tiny child whose width depends on the architecture."""
  num_classes: int
  width: int

  @nn.compact
  def __call__(self, x, *, train: bool, drop_prob=0.0):
    del drop_prob
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(
        nn.Conv(self.width, (3, 3))(x)))
    return nn.Dense(self.num_classes)(jnp.mean(x, (1, 2))), None


@pytest.fixture
def fake_children(monkeypatch):
  """Stands in for the space's child network (tested in test_train.py)."""
  built = []

  def build_child(space, arch, *, num_classes, init_channels, layers,
                  auxiliary):
    del space, init_channels, layers, auxiliary
    built.append(np.asarray(arch).tolist())
    return ArchTiny(num_classes=num_classes, width=2 + int(np.asarray(arch)[0]))

  monkeypatch.setattr(networks, "build_child", build_child)
  return built


@pytest.fixture(scope="module")
def ds():
  return data.load_dataset("digits", train_size=256, valid_size=64,
                           test_size=64)


def _space():
  return registry.get_space("nb201")


def _archs():
  return np.asarray([[3, 1, 2, 0, 4, 3], [1, 1, 1, 1, 1, 1]], np.int32)


def test_scores_are_last_valid_accuracy(ds, fake_children):
  ev = registry.get_evaluator("scratch")(
      _space(), {"dataset": ds, "epochs": 2, "batch_size": 32})
  assert isinstance(ev, ScratchEvaluator)
  state = ev.init(jax.random.key(0))
  result, state2 = ev.evaluate(state, _archs(), jax.random.key(1))
  assert state2 == state
  assert fake_children == _archs().tolist()
  assert result.scores.shape == (2,) and result.costs.shape == (2,)
  assert np.all(result.costs > 0)
  for score, info, arch in zip(result.scores, result.info, _archs()):
    assert len(info["curve"]) == 2
    assert score == info["curve"][-1]["valid_acc"]
    assert {"epoch", "train_loss", "train_acc", "valid_loss", "valid_acc",
            "seconds"} <= set(info["curve"][0])
    assert info["arch_id"] == _space().arch_id(arch)
    assert info["params"] > 0
    assert "short_run_test_acc" not in info  # the test split stays untouched
  again, _ = ev.evaluate(state, _archs(), jax.random.key(1))
  np.testing.assert_array_equal(again.scores, result.scores)


def test_workdir_resumes_per_architecture(ds, fake_children, tmp_path):
  cfg = {"dataset": ds, "epochs": 2, "batch_size": 32, "workdir": str(tmp_path)}
  first, _ = ScratchEvaluator(_space(), cfg).evaluate({}, _archs()[:1],
                                                      jax.random.key(2))
  assert len(list(tmp_path.iterdir())) == 1
  second, _ = ScratchEvaluator(_space(), cfg).evaluate({}, _archs()[:1],
                                                       jax.random.key(2))
  assert second.scores[0] == first.scores[0]
  assert second.info[0]["step_s"] is None  # finished run restored, not retrained
  strip = lambda c: [{k: v for k, v in e.items() if k != "seconds"} for e in c]
  assert strip(second.info[0]["curve"]) == strip(first.info[0]["curve"])


def test_divergence_scores_zero(ds, fake_children):
  ev = ScratchEvaluator(_space(), {"dataset": ds, "epochs": 1, "batch_size": 32,
                                   "lr": 1e30, "max_nonfinite": 0})
  result, _ = ev.evaluate({}, _archs()[:1], jax.random.key(0))
  assert result.scores[0] == 0.0
  assert "non-finite" in result.info[0]["error"]


def test_bad_config_and_input(ds):
  with pytest.raises(ValueError, match="unknown scratch evaluator config keys"):
    ScratchEvaluator(_space(), {"epoch": 3})
  with pytest.raises(ValueError, match="epochs=0"):
    ScratchEvaluator(_space(), {"epochs": 0})
  with pytest.raises(ValueError, match="valid_split"):
    ScratchEvaluator(_space(), {"valid_split": None})
  ev = ScratchEvaluator(_space(), {"dataset": ds})
  with pytest.raises(ValueError, match="archs must have shape"):
    ev.evaluate({}, np.zeros((2, 5), np.int32), jax.random.key(0))
  with pytest.raises(ValueError):
    ev.evaluate({}, np.full((1, 6), 9, np.int32), jax.random.key(0))
  no_valid = data.load_dataset("digits", valid_fraction=0.0)
  with pytest.raises(ValueError, match="empty 'valid' split"):
    ScratchEvaluator(_space(), {"dataset": no_valid}).dataset


@pytest.mark.slow  # compiles a nasnet child: minutes on 2 busy CPU cores
def test_real_nasnet_children(ds):
  space = registry.get_space("nasnet")
  archs = np.stack([space.sample(jax.random.key(i)) for i in range(1)])
  ev = ScratchEvaluator(space, {"dataset": ds, "epochs": 1, "batch_size": 32,
                                "init_channels": 4, "layers": 3})
  result, _ = ev.evaluate({}, archs, jax.random.key(0))
  assert 0 <= result.scores[0] <= 100
  assert result.scores[0] == result.info[0]["curve"][-1]["valid_acc"]


def test_a_callback_stops_runs_and_the_history_line_says_why(fake_children, ds):
  """Early stopping through the evaluator: the run stops at epoch 2, its history line carries
  the two-epoch curve and the reason, and the score is the last epoch's."""
  from nas_jax.runner import search  # pylint: disable=import-outside-toplevel
  space = registry.get_space("nb201")
  reasons = []

  def make_callbacks(arch_id):
    def stop(epoch, entry):
      if epoch == 2:
        reasons.append(arch_id)
        return f"stopped {arch_id} after 2 epochs"
      return None
    return [stop]

  evaluator = ScratchEvaluator(space, {"dataset": ds, "epochs": 5, "batch_size": 32},
                               make_callbacks=make_callbacks)
  strategy = registry.get_strategy("random")(space, {"batch_size": 2})
  rnd = search.search_round(strategy, evaluator, space, strategy.init(jax.random.key(0)),
                            evaluator.init(jax.random.key(1)), jax.random.key(2), 0, remaining=2)
  lines = search.history_lines(space, rnd, 0, 0, 0.0)
  assert len(reasons) == 2
  for line in lines:
    assert len(line["curve"]) == 2
    assert line["stopped"] == {"epoch": 2, "reason": f"stopped {line['arch_id']} after 2 epochs"}
    assert line["search_score"] == line["curve"][-1]["valid_acc"] == line["metrics"]["valid_acc"]
