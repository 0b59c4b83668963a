"""ENAS proper as a one-shot method (nas_jax/oneshot/enas.py) on a tiny nb201 supernet."""
from __future__ import annotations

import jax
import numpy as np
import pytest

import nas_jax.data
from nas_jax import registry
from nas_jax.checkpoint import SearchCheckpointer
from nas_jax.oneshot.base import OneShotMethod
from nas_jax.oneshot.enas import ENASOneShot

TINY = {"child_steps": 2, "controller_steps": 2, "derive_samples": 4, "epochs": 2,
        "controller": {"hidden_size": 8, "batch_size": 4},
        "supernet": {"init_channels": 4, "layers": 1, "batch_size": 32, "eval_batch_size": 32}}


@pytest.fixture(scope="module")
def data():
  return nas_jax.data.load_dataset("digits", train_size=128, valid_fraction=0.25)


@pytest.mark.slow  # heavy compile; CI runs the fast tier (python -m pytest -m slow runs it)
def test_alternation_derive_score_and_bit_identical_resume(data, tmp_path):
  space = registry.get_space("nb201")
  method = registry.get_strategy("enas_oneshot")(space, TINY, data=data)
  assert isinstance(method, OneShotMethod) and method.kind == "oneshot"
  state = method.init(jax.random.key(0))
  state, metrics = method.step(state, jax.random.key(1))
  # two controller steps of 4 samples each, rewards = validation-batch accuracies (%)
  assert int(state["controller"]["step"]) == 2 and int(state["controller"]["num_told"]) == 8
  assert 0.0 <= metrics["controller_valid_acc"] <= 100.0 and np.isfinite(metrics["train_loss"])
  assert int(state["supernet"]["net"]["step"]) == 2  # child_steps shared-weight steps
  arch = method.derive(state)
  space.validate(arch)
  np.testing.assert_array_equal(method.derive(state), arch)  # a function of the state
  scored = method.score(state, arch, jax.random.key(2))
  assert 0.0 <= scored["search_score"] <= 100.0 and np.isfinite(scored["valid_loss"])
  # the runner's orbax checkpoint round trip, then the same step from both: bit for bit
  ckpt = SearchCheckpointer(tmp_path / "ckpt", fingerprint="enas")
  ckpt.save(1, {"method": state}, {"epoch": 1})
  trees, _ = ckpt.restore({"method": method.init(jax.random.key(9))})
  restored = trees["method"]
  a, _ = method.step(state, jax.random.key(3))
  b, _ = method.step(restored, jax.random.key(3))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  changed = [not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a["controller"]["params"]),
                             jax.tree.leaves(state["controller"]["params"]))]
  assert any(changed)  # the controller learned in the second step


@pytest.mark.parametrize("change, match", [
    ({"child_steps": 0}, "child_steps"),
    ({"supernet": {"steps_per_round": 5}}, "steps_per_round"),
    ({"supernet": {"lr_restart_rounds": 5}}, "lr_restart_rounds"),
    ({"restart_epochs": 0}, "restart_epochs"),
    ({"controller": {"learning_rate": -1.0}}, "learning_rate"),
    ({"controller": 3}, "controller"),
    ({"child_step": 3}, "unknown"),
])
def test_bad_settings_are_refused(data, change, match):
  with pytest.raises(ValueError, match=match):
    ENASOneShot(registry.get_space("nb201"), {**TINY, **change}, data=data)


def test_one_fresh_sample_per_minibatch(data):
  """Each shared-weight minibatch trains the next controller sample, in order (a stub step: no compile)."""
  method = ENASOneShot(registry.get_space("nb201"), {**TINY, "child_steps": 5}, data=data)
  seen = []

  def train_step(net, arch, batch, key):
    seen.append(np.asarray(arch))
    return net, {"loss": 1.0, "acc": 0.5}

  def eval_archs(params, stats, archs, x, y):
    return np.full(len(archs), 0.5), np.ones(len(archs))

  method.evaluator._compiled = (train_step, eval_archs)
  state = {"controller": method.strategy.init(jax.random.key(0)),
           "supernet": {"net": {"params": {}, "batch_stats": {}}, "data_epoch": np.int64(0),
                        "data_step": np.int64(0)},
           "derive_key": np.asarray(jax.random.key_data(jax.random.key(1)))}
  key = jax.random.key(2)
  new, metrics = method.step(state, key)
  expected = method._sample(state, jax.random.split(key, 4)[0], 5)
  np.testing.assert_array_equal(np.stack(seen), expected)
  assert len({a.tobytes() for a in seen}) > 1 and metrics["controller_valid_acc"] == 50.0


def test_cosine_restarts_schedule_values():
  from nas_jax.evaluators.supernet import DEFAULT_CONFIG, cosine_restarts_schedule
  f = cosine_restarts_schedule(0.05, 0.0005, period=10, mult=2, unit_steps=3)
  enas = lambda t, T: 0.0005 + 0.5 * (0.05 - 0.0005) * (1 + np.cos(np.pi * t / T))  # ENAS utils.py
  # periods of 10, 20, 40 rounds of 3 steps; the rate held within a round
  for step, (t, T) in {0: (0, 10), 2: (0, 10), 3: (1, 10), 29: (9, 10), 30: (0, 20), 59: (9, 20),
                       89: (19, 20), 90: (0, 40), 209: (39, 40), 210: (0, 80)}.items():
    assert float(f(step)) == pytest.approx(enas(t, T), rel=1e-5), step
  # enas_oneshot turns it on (T_0 in rounds = 10 epochs x steps_per_epoch); other users keep one cosine
  assert DEFAULT_CONFIG["lr_restart_rounds"] is None
  method = ENASOneShot(registry.get_space("nb201"), {**TINY, "steps_per_epoch": 2},
                       data=nas_jax.data.load_dataset("digits", train_size=128, valid_fraction=0.25))
  cfg = method.evaluator.config
  assert (cfg["lr_restart_rounds"], cfg["lr_restart_mult"], cfg["lr"], cfg["lr_min"]) == (20, 2, 0.05, 0.0005)
  off = ENASOneShot(registry.get_space("nb201"), {**TINY, "restart_epochs": None},
                    data=nas_jax.data.load_dataset("digits", train_size=128, valid_fraction=0.25))
  assert off.evaluator.config["lr_restart_rounds"] is None


@pytest.mark.parametrize("space_name, preset", [("macro", "cifar_macro"), ("nb201", "cifar_micro")])
def test_controller_preset_follows_the_space(data, space_name, preset):
  # macro gets ENAS's macro search settings (with the skip-density penalty); an explicit preset wins
  method = ENASOneShot(registry.get_space(space_name), {**TINY, "controller": {}}, data=data)
  assert method.config["controller"]["preset"] == preset
  assert method.strategy.config["preset"] == preset
  if space_name == "macro":
    assert method.strategy.config["skip_weight"] == 0.8 and method.strategy.config["skip_target"] == 0.4
  chosen = ENASOneShot(registry.get_space(space_name), {**TINY, "controller": {"preset": "nb201"}}, data=data)
  assert chosen.strategy.config["preset"] == "nb201"
