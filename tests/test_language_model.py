"""The language-model task (``nas_jax.tasks.language_model``) and the ``rnn``
child network (``nas_jax.networks.rnn``) on a tiny synthetic corpus, plus the
real Penn Treebank where it is present."""
from __future__ import annotations

import functools
import math
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.data import ptb as ptb_lib
from nas_jax.networks import base as net_base
from nas_jax.networks import rnn as net
from nas_jax.spaces.rnn import RNNSpace, published
from nas_jax.tasks import language_model as lm

TASK = lm.LanguageModel()
SPACE = RNNSpace(num_nodes=4)
ARCH = np.array([[0, 0], [0, 1], [1, 0], [0, 3]], np.int32)  # tanh; relu<-0; tanh<-1; sigmoid<-0
# One training config for every training test: the steps compile once (memoised).
CFG = {"epochs": 3, "batch_size": 4, "eval_batch_size": 3, "bptt": 8, "emb_size": 16, "hidden_size": 16,
       "lr": 20.0, "dropout_e": 0.0, "dropout_i": 0.1, "dropout_x": 0.1, "dropout_h": 0.1, "dropout_o": 0.1}
REAL_PTB = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


def _text(rng, n):
  """A noisy cycle over 24 words: predictable, so a small model learns it in a few epochs."""
  out, w = [], 0
  for _ in range(n):
    w = (w + 1) % 24 if rng.random() < 0.9 else int(rng.integers(24))
    out.append(f"w{w}")
  return "\n".join(" ".join(out[i:i + 12]) for i in range(0, n, 12)) + "\n"


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("ptb")
  rng = np.random.default_rng(0)
  for split, n in (("train", 800), ("valid", 200), ("test", 200)):
    (root / f"ptb.{split}.txt").write_text(_text(rng, n))
  return root


@pytest.fixture(scope="module")
def data(corpus_dir):
  return TASK.load("ptb", data_dir=str(corpus_dir))


def _setup(data, **overrides):
  cfg = TASK.resolve_train_config(dict(CFG, **overrides))
  model = net.build_child(SPACE, ARCH, **TASK.network_kwargs(data), **TASK.network_config(cfg))
  state = TASK.init_state(model, TASK.init_variables(model, jax.random.key(1), data), cfg)
  return cfg, model, state


def _params(model, seed=0, scale=0.3):
  """Random parameters of ``model`` without compiling its init (shapes by ``eval_shape``)."""
  shapes = jax.eval_shape(functools.partial(model.init, train=False), {"params": jax.random.key(0)},
                          jnp.zeros((1, 2), jnp.int32), model.initial_hidden(1))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.uniform(-scale, scale, s.shape), jnp.float32), shapes)


def _apply(model):
  """``model.apply`` jitted (one compile per shape and mode; eager scans recompile every call)."""
  return jax.jit(model.apply, static_argnames="train")


def _copy(tree):
  """A host copy (train_step donates its state), as a checkpoint would hold it."""
  return jax.tree.map(np.array, tree)


def _run(model, state, data, cfg, epochs, key=jax.random.key(2)):
  curve = []
  for epoch in epochs:
    state, m = TASK.train_epoch(model, state, data, cfg, epoch, key, 0)
    m.pop("step_times")
    curve.append(dict(m, valid=TASK.evaluate(model, state, data, "valid", cfg)))
  return state, curve


# --- task basics --------------------------------------------------------------
def test_task_attributes_and_data(data):
  assert (TASK.name, TASK.metric, TASK.higher_is_better) == ("language_model", "valid_ppl", False)
  assert TASK.score(80.0) == 1.0 and TASK.score(40.0) == 2.0  # ENAS: 80 / ppl
  assert TASK.accepts(data) and not TASK.accepts(object())
  d = TASK.describe(data)
  assert d["vocab_size"] == 25 and d["sizes"] == {"train": 867, "valid": 217, "test": 217}
  assert len(d["ids"]) == 12
  assert TASK.network_kwargs(data) == {"vocab_size": 25}
  s = TASK.dummy_input(data)
  assert s.shape == (1, lm.DUMMY_LENGTH) and s.dtype == jnp.int32
  assert TASK.has_split(data, "valid") and not TASK.has_split(data, None)
  with pytest.raises(ValueError, match="unknown split 'dev'"):
    TASK.has_split(data, "dev")
  cfg = TASK.resolve_train_config(CFG)
  assert TASK.num_train_steps(data, cfg) == (867 // 4 - 1) // 8  # last shorter window dropped
  assert TASK.num_train_steps(data, dict(cfg, batch_size=500)) == 0


def test_load_errors_name_the_fix(tmp_path, monkeypatch, corpus_dir):
  monkeypatch.delenv("NAS_JAX_PTB_DIR", raising=False)
  with pytest.raises(ValueError) as e:
    TASK.load("ptb")
  msg = str(e.value)
  assert "\n" not in msg and "--data-dir" in msg and "NAS_JAX_PTB_DIR" in msg and "ptb.train.txt" in msg
  with pytest.raises(ValueError, match=r"does not exist.*--data-dir.*NAS_JAX_PTB_DIR"):
    TASK.load("ptb", data_dir=str(tmp_path / "nowhere"))
  (tmp_path / "ptb.train.txt").write_text("a b\n")
  (tmp_path / "ptb.test.txt").write_text("a b\n")
  with pytest.raises(ValueError) as e:
    TASK.load("ptb", data_dir=str(tmp_path))
  msg = str(e.value)
  assert "\n" not in msg and "lacks ptb.valid.txt:" in msg and "--data-dir" in msg
  with pytest.raises(ValueError, match="knows 'ptb'"):
    TASK.load("wikitext2", data_dir=str(corpus_dir))
  with pytest.raises(ValueError, match="unknown options"):
    TASK.load("ptb", data_dir=str(corpus_dir), lowercase=True)
  monkeypatch.setenv("NAS_JAX_PTB_DIR", str(corpus_dir))  # the fallback
  assert TASK.load("ptb").vocab_size == 25


@pytest.mark.parametrize("config, match", [
    ({"epoch": 3}, r"unknown training config keys \['epoch'\]"),
    ({"lr": 0}, "lr=0: must be > 0"),
    ({"bptt": 0}, "bptt=0"),
    ({"dropout_h": 1.0}, r"dropout_h=1.0: must be a probability in \[0, 1\)"),
    ({"hidden_size": 32}, "equal to emb_size=64"),
    ({"valid_split": "dev"}, "valid_split='dev'"),
    ({"grad_clip": -1}, "grad_clip"),
])
def test_config_errors(config, match):
  with pytest.raises(ValueError, match=match):
    TASK.resolve_train_config(config)


def test_defaults_cite_papers():
  cfg = TASK.default_train_config()
  assert (cfg["lr"], cfg["grad_clip"], cfg["bptt"], cfg["batch_size"]) == (20.0, 0.25, 35, 64)
  assert lm.PAPER_CONFIG["hidden_size"] == 850 and lm.PAPER_CONFIG["dropout_x"] == 0.75
  assert TASK.network_config(cfg) == {k: cfg[k] for k in lm._NETWORK_KEYS}  # pylint: disable=protected-access


def test_eval_windows_predict_every_token_once():
  ids = np.arange(1, 31)
  for b, t in ((1, 7), (4, 5), (7, 3), (40, 4)):
    windows = ptb_lib.eval_windows(ids, b, t)
    assert all(x.shape == (b, t) for w in windows for x in w)
    pairs = sorted((int(x), int(y)) for xs, ys, ms in windows
                   for x, y, m in zip(xs.ravel(), ys.ravel(), ms.ravel()) if m)
    assert pairs == [(i, i + 1) for i in range(1, 30)]
  with pytest.raises(ValueError, match="at least 2 tokens"):
    ptb_lib.eval_windows(np.arange(1), 2, 3)


# --- network ------------------------------------------------------------------
def test_family_protocol_and_build_errors():
  assert isinstance(net.FAMILY, net_base.NetworkFamily)
  assert (net.FAMILY.name, net.FAMILY.tasks, net.FAMILY.supernet, net.FAMILY.continuous) == (
      "rnn", ("language_model",), None, None)
  model = net.FAMILY.build_child(SPACE, ARCH, vocab_size=10, emb_size=8, hidden_size=8)
  assert model.arch == ((0, 0), (0, 1), (1, 0), (0, 3)) and model.out_nodes == (2, 3)
  assert hash(model) == hash(net.build_child(SPACE, ARCH.tolist(), vocab_size=10, emb_size=8, hidden_size=8))
  with pytest.raises(ValueError, match="emb_size=8 != hidden_size=4"):
    net.build_child(SPACE, ARCH, vocab_size=10, emb_size=8, hidden_size=4)
  with pytest.raises(ValueError, match="dropout_o=1.0"):
    net.build_child(SPACE, ARCH, vocab_size=10, emb_size=8, hidden_size=8, dropout_o=1.0)
  with pytest.raises(ValueError, match=r"arch\[2, 0\]"):
    net.build_child(SPACE, [[0, 0], [0, 0], [2, 0], [0, 0]], vocab_size=10, emb_size=8, hidden_size=8)


def test_shapes_and_hidden_state_carries():
  model = net.build_child(SPACE, ARCH, vocab_size=20, emb_size=8, hidden_size=8)
  apply = _apply(model)
  tokens = jax.random.randint(jax.random.key(0), (3, 12), 0, 20)
  h0 = model.initial_hidden(3)
  assert h0.shape == (3, 8) and not h0.any()
  variables = {"params": _params(model)}
  logits, h = apply(variables, tokens, h0, train=False)
  assert logits.shape == (3, 12, 20) and logits.dtype == jnp.float32 and h.shape == (3, 8)
  # two windows one after the other == their concatenation (dropout off)
  l1, h1 = apply(variables, tokens[:, :6], h0, train=False)
  l2, h2 = apply(variables, tokens[:, 6:], h1, train=False)
  np.testing.assert_allclose(np.concatenate([l1, l2], 1), logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(h2, h, rtol=1e-5, atol=1e-6)
  # the state matters: the second window from zeros differs
  l2_cold, _ = apply(variables, tokens[:, 6:], h0, train=False)
  assert np.abs(np.asarray(l2_cold) - np.asarray(l2)).max() > 1e-3
  # train=True: dropout from the "dropout" stream, deterministic per key
  a, _ = apply(variables, tokens, h0, train=True, rngs={"dropout": jax.random.key(5)})
  b, _ = apply(variables, tokens, h0, train=True, rngs={"dropout": jax.random.key(5)})
  c, _ = apply(variables, tokens, h0, train=True, rngs={"dropout": jax.random.key(6)})
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
  assert np.abs(np.asarray(a) - np.asarray(logits)).max() > 1e-3


def test_cell_matches_the_written_equations():
  """The child equals a direct numpy transcription of the ENAS/DARTS cell."""
  model = net.build_child(SPACE, ARCH, vocab_size=11, emb_size=6, hidden_size=6)
  tokens = jax.random.randint(jax.random.key(0), (2, 4), 0, 11)
  h0 = jax.random.normal(jax.random.key(3), (2, 6))
  variables = {"params": _params(model)}
  logits, h_last = _apply(model)(variables, tokens, h0, train=False)
  p = jax.tree.map(lambda v: np.asarray(v, np.float64), variables["params"])
  acts = [np.tanh, lambda v: np.maximum(v, 0), lambda v: v, lambda v: 1 / (1 + np.exp(-v))]
  sig = acts[3]
  h = np.asarray(h0, np.float64)
  for t in range(4):
    x = p["embedding"][np.asarray(tokens[:, t])]
    c, g = np.split(np.concatenate([x, h], 1) @ p["w0"], 2, axis=1)
    states = [h + sig(c) * (acts[ARCH[0, 1]](g) - h)]
    for i in range(1, 4):
      s = states[ARCH[i, 0]]
      c, g = np.split(s @ p["w"][i - 1], 2, axis=1)
      states.append(s + sig(c) * (acts[ARCH[i, 1]](g) - s))
    h = (states[2] + states[3]) / 2  # loose ends of ARCH
    np.testing.assert_allclose(logits[:, t], h @ p["embedding"].T + p["decoder_bias"], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(h_last, h, rtol=1e-4, atol=1e-5)


def test_relabelled_cell_is_the_same_function():
  """Why ``canonical`` may relabel nodes: permuting the node weights along with
  the labels gives the same network (DARTS's mean rule here)."""
  space, arch = published("darts_v2")
  order = [0, 1, 2, 3, 4, 7, 5, 8, 6]  # a topological order: 5 before 6 and 8, 3 before 7
  new = {old: k for k, old in enumerate(order)}
  relabelled = np.array([[new[int(arch[o, 0])] if o else 0, arch[o, 1]] for o in order], np.int32)
  assert space.arch_id(relabelled) == space.arch_id(arch) and not (relabelled == arch).all()
  m1 = net.build_child(space, arch, vocab_size=13, emb_size=5, hidden_size=5)
  m2 = net.build_child(space, relabelled, vocab_size=13, emb_size=5, hidden_size=5)
  tokens = jax.random.randint(jax.random.key(0), (2, 4), 0, 13)
  h0 = m1.initial_hidden(2)
  variables = {"params": _params(m1)}
  p2 = dict(variables["params"], w=variables["params"]["w"][np.array(order[1:]) - 1])
  out1 = _apply(m1)(variables, tokens, h0, train=False)
  out2 = _apply(m2)({"params": p2}, tokens, h0, train=False)
  for a, b in zip(out1, out2):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_count_cost_matches_parameters():
  space, arch = published("darts_v2")
  cost = net.count_cost(space, arch, vocab_size=50, emb_size=7, hidden_size=7)
  model = net.build_child(space, arch, vocab_size=50, emb_size=7, hidden_size=7)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), {"params": jax.random.key(0)},
                          jnp.zeros((1, 3), jnp.int32), model.initial_hidden(1))
  assert list(shapes) == ["params"]
  assert cost["params"] == sum(math.prod(v.shape) for v in jax.tree.leaves(shapes))
  assert cost["cell_macs"] == 14 * 14 + 8 * 7 * 14 and cost["macs"] == cost["cell_macs"] + 7 * 50
  # the runner's form (runner.costs.CostModel): flops = multiply-adds per token
  runner = net.FAMILY.cost(arch, vocab_size=50, emb_size=7, hidden_size=7, input_shape=(35,), dropout_o=0.5)
  assert runner["flops"] == cost["macs"] and runner["params"] == cost["params"]


# --- training -----------------------------------------------------------------
def test_training_lowers_perplexity_and_is_deterministic(data):
  cfg, model, state0 = _setup(data)
  before = TASK.evaluate(model, state0, data, "valid", cfg)
  assert abs(before["ppl"] - 25) < 2 and math.isclose(before["ppl"], math.exp(before["loss"]))
  s = _copy(state0)
  state, curve = _run(model, state0, data, cfg, range(3))
  after = curve[-1]["valid"]["ppl"]
  assert after < 0.5 * before["ppl"], [c["valid"] for c in curve]
  assert curve[-1]["train_ppl"] < curve[0]["train_ppl"]
  assert {"lr", "train_loss", "train_ppl", "nonfinite"} == set(curve[0]) - {"valid"}
  assert curve[0]["lr"] == 20.0 and curve[0]["nonfinite"] == 0
  # the same key and data seed: bit for bit
  state2, curve2 = _run(model, jax.tree.map(jnp.asarray, s), data, cfg, range(3))
  assert curve2 == curve
  jax.tree.map(np.testing.assert_array_equal, _copy(state2), _copy(state))
  # another key: other dropout masks
  _, curve3 = _run(model, jax.tree.map(jnp.asarray, s), data, cfg, range(1), key=jax.random.key(9))
  assert curve3[0]["train_loss"] != curve[0]["train_loss"]
  # one compiled train step served every epoch and run (every test here trains at one shape)
  _, train_step, _ = lm.get_steps(model, cfg)
  assert train_step._cache_size() == 1
  test = TASK.evaluate(model, state, data, "test", cfg)
  assert math.isfinite(test["ppl"]) and test["ppl"] < before["ppl"]


def test_resumed_run_repeats_the_uninterrupted_one(data):
  cfg, model, state0 = _setup(data)
  start = _copy(state0)
  full, curve = _run(model, state0, data, cfg, range(3))
  first, c1 = _run(model, jax.tree.map(jnp.asarray, start), data, cfg, range(1))
  checkpoint = _copy(first)  # what orbax would hold after epoch 1
  resumed, c2 = _run(model, jax.tree.map(jnp.asarray, checkpoint), data, cfg, range(1, 3))
  assert c1 + c2 == curve
  jax.tree.map(np.testing.assert_array_equal, _copy(resumed), _copy(full))


def test_nonfinite_steps_are_skipped_then_raise(data):
  cfg, model, state = _setup(data)
  bad = _copy(state)
  bad["params"]["w0"][0, 0] = np.nan
  bad_state = jax.tree.map(jnp.asarray, bad)
  steps = TASK.num_train_steps(data, cfg)
  tolerant = dict(cfg, max_nonfinite=100)
  out, m = TASK.train_epoch(model, bad_state, data, tolerant, 0, jax.random.key(0), 0)
  assert m["nonfinite"] == steps and math.isnan(m["train_loss"])
  jax.tree.map(np.testing.assert_array_equal, _copy(out), bad)  # nothing was applied
  with pytest.raises(RuntimeError, match=r"training diverged: 3 steps .*max_nonfinite=2"):
    TASK.train_epoch(model, jax.tree.map(jnp.asarray, bad), data, dict(cfg, max_nonfinite=2), 0,
                     jax.random.key(0), 0)
  with pytest.raises(RuntimeError, match="training diverged: 6 steps"):  # counted across epochs
    TASK.train_epoch(model, jax.tree.map(jnp.asarray, bad), data, dict(cfg, max_nonfinite=5), 1,
                     jax.random.key(0), 0, nonfinite_before=5)


def test_evaluate_matches_one_long_sequence(data):
  """Batch 1: the whole split as one row from a zero state, computed directly."""
  cfg, model, state = _setup(data)
  ids = data.corpus.valid
  got = TASK.evaluate(model, state, data, "valid", dict(cfg, eval_batch_size=1, bptt=len(ids)))
  logits, _ = _apply(model)({"params": state["params"]}, jnp.asarray(ids[None, :-1]), model.initial_hidden(1),
                            train=False)
  logp = jax.nn.log_softmax(logits[0], -1)
  nll = -float(jnp.mean(logp[jnp.arange(len(ids) - 1), ids[1:]]))
  assert got["loss"] == pytest.approx(nll, rel=1e-5)
  # and the batched layout scores the same tokens (a slightly different context per row)
  batched = TASK.evaluate(model, state, data, "valid", cfg)
  assert batched["loss"] == pytest.approx(nll, rel=0.05)


# --- the real Penn Treebank -----------------------------------------------------
@pytest.mark.skipif(not (REAL_PTB / "ptb.train.txt").is_file(),
                    reason=f"the real Penn Treebank is not at {REAL_PTB} (ptb.{{train,valid,test}}.txt; "
                           "shared/data/ptb beside the repository)")
def test_real_ptb():
  data = TASK.load("ptb", data_dir=str(REAL_PTB))
  d = TASK.describe(data)
  assert d["vocab_size"] == 10000
  # Mikolov's PTB: words + one <eos> per line
  assert d["sizes"] == {"train": 929589, "valid": 73760, "test": 82430}
  cfg = TASK.resolve_train_config(None)
  assert TASK.num_train_steps(data, cfg) == (929589 // 64 - 1) // 35
  assert sum(int(m.sum()) for _, _, m in ptb_lib.eval_windows(data.corpus.valid, 64, 35)) == 73759
