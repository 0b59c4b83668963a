"""ENAS proper on the recurrent-cell space (oneshot/enas.py + evaluators/lm_supernet.py), tiny shapes."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from experiment_doubles import load_cli
from nas_jax.checkpoint import SearchCheckpointer
from nas_jax.evaluators.lm_supernet import LMSupernetEvaluator
from nas_jax.oneshot.enas import ENASOneShot
from nas_jax.spaces.rnn import RNNSpace
from nas_jax.tasks.language_model import LanguageModel

SPACE = RNNSpace(num_nodes=4)  # ENAS: 12; 4 keeps the compiles short
TINY = {"child_steps": 3, "controller_steps": 2, "derive_samples": 3, "epochs": 2,
        "controller": {"hidden_size": 8, "batch_size": 3},
        "supernet": {"batch_size": 4, "bptt": 5, "emb_size": 8, "hidden_size": 8, "eval_batch_size": 4}}


def _text(rng, n):
  words, out, w = 16, [], 0
  for _ in range(n):
    w = (w + 1) % words if rng.random() < 0.9 else int(rng.integers(words))
    out.append(f"w{w}")
  return "\n".join(" ".join(out[i:i + 10]) for i in range(0, n, 10)) + "\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("ptb")
  rng = np.random.default_rng(0)
  for split, n in (("train", 400), ("valid", 200), ("test", 100)):
    (root / f"ptb.{split}.txt").write_text(_text(rng, n))
  return LanguageModel().load("ptb", data_dir=str(root))


@pytest.fixture(scope="module")
def method(data):
  return ENASOneShot(SPACE, TINY, data=data)


def _record_archs(method):
  """Wraps the evaluator's jitted train step so that each call's architecture is recorded."""
  train_step, eval_archs, split_step = method.evaluator._steps()
  seen = []

  def recording(net, arch, *args):
    seen.append(np.asarray(arch))
    return train_step(net, arch, *args)

  method.evaluator._compiled = (recording, eval_archs, split_step)
  return seen, lambda: setattr(method.evaluator, "_compiled", (train_step, eval_archs, split_step))


def test_language_model_shared_weights_and_ptb_preset(method):
  assert isinstance(method.evaluator, LMSupernetEvaluator) and method.language_model
  assert method.config["controller"]["preset"] == "ptb"
  assert method.strategy.config["temperature"] == 5.0  # ENAS ptb_search.sh, from the preset
  assert method.evaluator.net_config.num_nodes == 4


@pytest.mark.slow  # ~35 s on a loaded 2-core CPU (4 compiles); python -m pytest -m slow runs it
def test_step_fresh_sample_per_window_derive_score_and_bit_identical_resume(method, tmp_path):
  state = method.init(jax.random.key(0))
  key = jax.random.key(1)
  seen, restore = _record_archs(method)
  try:
    state1, metrics = method.step(state, key)
  finally:
    restore()
  # one fresh controller sample per training window, in order
  expected = method._sample(state, jax.random.split(key, 4)[0], TINY["child_steps"])
  np.testing.assert_array_equal(np.stack(seen), expected)
  assert int(state1["supernet"]["net"]["step"]) == 3 and int(state1["supernet"]["data_step"]) == 3
  assert np.abs(np.asarray(state1["supernet"]["hidden"])).sum() > 0  # carried to the next window
  # two controller steps of 3 samples each, rewarded with 80 / window perplexity
  assert int(state1["controller"]["step"]) == 2 and int(state1["controller"]["num_told"]) == 6
  assert np.isfinite(metrics["train_loss"]) and metrics["controller_valid_ppl"] > 1.0
  np.testing.assert_allclose(metrics["controller_reward"], 80.0 / metrics["controller_valid_ppl"],
                             rtol=0.5)  # mean of 80/ppl vs 80/mean ppl: same scale
  arch = method.derive(state1)
  SPACE.validate(arch)
  np.testing.assert_array_equal(method.derive(state1), arch)  # a function of the state
  scored = method.score(state1, arch, jax.random.key(2))
  assert scored["valid_ppl"] > 1.0 and np.isfinite(scored["valid_loss"])
  assert scored["search_score"] == pytest.approx(80.0 / scored["valid_ppl"])
  # the runner's orbax round trip, then the same step from both: bit for bit
  ckpt = SearchCheckpointer(tmp_path / "ckpt", fingerprint="enas_ptb")
  ckpt.save(1, {"method": state1}, {"epoch": 1})
  restored = ckpt.restore({"method": method.init(jax.random.key(9))})[0]["method"]
  a, _ = method.step(state1, jax.random.key(3))
  b, _ = method.step(restored, jax.random.key(3))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert int(a["supernet"]["data_step"]) == 6


def test_hidden_state_resets_at_each_pass_over_the_data(method):
  ev = method.evaluator
  state = ev.init(jax.random.key(0))
  arch = SPACE.sample(jax.random.key(4))[None]
  per = ev.windows_per_epoch()
  end = dict(state, hidden=np.full_like(state["hidden"], 0.5), data_step=np.int64(per))
  fresh = dict(state, data_epoch=np.int64(1), data_step=np.int64(0))
  a, _ = ev.train(end, arch, jax.random.key(5), in_order=True)
  b, _ = ev.train(fresh, arch, jax.random.key(5), in_order=True)
  assert int(a["data_epoch"]) == 1 and int(a["data_step"]) == 1
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  with pytest.raises(ValueError, match="one architecture per step"):
    ev.train(state, arch, jax.random.key(5), steps=2, in_order=True)


@pytest.mark.parametrize("change, match", [
    ({"restart_epochs": 10}, "restart_epochs"),
    ({"supernet": {"steps_per_round": 5}}, "steps_per_round"),
    ({"supernet": {"hidden_sise": 5}}, "unknown lm supernet"),
    ({"supernet": {"bptt": 500}}, "too few"),
])
def test_bad_settings_are_refused(data, change, match):
  with pytest.raises(ValueError, match=match):
    ENASOneShot(SPACE, {**TINY, **change}, data=data)


def test_lm_supernet_is_a_registered_evaluator_and_the_summary_names_its_score():
  from nas_jax import registry  # pylint: disable=import-outside-toplevel
  assert registry.lookup("evaluator", "lm_supernet") is LMSupernetEvaluator
  meaning = load_cli("run")._score_meaning({"best_metrics": {"supernet_valid_ppl": 123.45}})
  assert meaning.startswith("80 / validation perplexity 123.5 of a validation window")


@pytest.mark.slow  # compiles the registered 12-node shared LM (about 30 s on a loaded 2-core CPU)
def test_enas_controller_with_the_shared_lm_through_run_py(data, tmp_path, capsys, monkeypatch):
  # `--strategy enas --space rnn --evaluator lm_supernet`: the controller as an ask/tell strategy
  # scored by ENAS's shared language model
  monkeypatch.setenv("NAS_JAX_COMPILE_CACHE", "")
  root = tmp_path / "ptb"
  root.mkdir()
  rng = np.random.default_rng(0)
  for split, n in (("train", 400), ("valid", 200), ("test", 100)):
    (root / f"ptb.{split}.txt").write_text(_text(rng, n))
  sets = [f"evaluator.lm_supernet.{k}={v}" for k, v in (("batch_size", 4), ("bptt", 5), ("emb_size", 8),
                                                         ("hidden_size", 8), ("steps_per_round", 3),
                                                         ("eval_batch_size", 4))]
  argv = ["--strategy", "enas", "--space", "rnn", "--dataset", "ptb", "--data-dir", str(root), "--evaluator",
          "lm_supernet", "--budget", "4", "--workdir", str(tmp_path / "w"), "--final-epochs", "0",
          "--set", "strategy.batch_size=2"]
  for item in sets:
    argv += ["--set", item]
  assert load_cli("run").main(argv) == 0
  out = capsys.readouterr().out
  assert "enas on rnn/ptb (evaluator lm_supernet" in out and "of a validation window" in out
  lines = [json.loads(l) for l in (tmp_path / "w" / "history.jsonl").read_text().splitlines()]
  assert len(lines) == 4
  for line in lines:  # the raw metric beside the score: 80 / ppl
    np.testing.assert_allclose(line["search_score"], 80.0 / line["metrics"]["supernet_valid_ppl"], rtol=1e-5)
