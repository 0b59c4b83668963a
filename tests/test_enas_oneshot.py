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
    ({"controller": {"learning_rate": -1.0}}, "learning_rate"),
    ({"controller": 3}, "controller"),
    ({"child_step": 3}, "unknown"),
])
def test_bad_settings_are_refused(data, change, match):
  with pytest.raises(ValueError, match=match):
    ENASOneShot(registry.get_space("nb201"), {**TINY, **change}, data=data)
