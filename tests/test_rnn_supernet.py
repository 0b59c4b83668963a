"""ENAS's weight-sharing recurrent supernet (``nas_jax.networks.rnn_supernet``) on
tiny shapes: one compilation for every cell, the supernet computes the child's
function with the mapped variables, training lowers the loss, the hidden state
carries across windows."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_jax.networks import rnn_supernet as sn
from nas_jax.spaces.rnn import RNNSpace

V, H, B, T, N = 30, 8, 3, 6, 5
SPACE = RNNSpace(num_nodes=N)
# Dropout is configured (train steps use it) and off at train=False (the comparisons).
CFG = sn.config(vocab_size=V, emb_size=H, hidden_size=H, num_nodes=N, dropout_x=0.1, dropout_h=0.1,
                dropout_o=0.2)


def _archs(space, n, seed=0):
  return np.array(jax.vmap(space.sample)(jax.random.split(jax.random.key(seed), n)))


def _tokens(seed, shape=(B, T)):
  return jax.random.randint(jax.random.key(seed), shape, 0, V)


@pytest.fixture(scope="module")
def params():
  # Larger than the initial range: the cells' functions differ more.
  return jax.tree.map(lambda p: 5 * p, sn.init(jax.random.key(0), CFG))


@pytest.fixture(scope="module")
def apply():
  return jax.jit(functools.partial(sn.apply, config=CFG, train=False))


@pytest.fixture(scope="module")
def evaluate():
  return sn.make_eval_archs(CFG)


def test_config_errors():
  with pytest.raises(ValueError, match="unknown rnn supernet field"):
    sn.config(vocab_size=10, hidden=3)
  with pytest.raises(ValueError, match="sharing"):
    sn.config(vocab_size=10, sharing="edge")
  with pytest.raises(ValueError, match="tied"):
    sn.config(vocab_size=10, emb_size=8, hidden_size=16)
  with pytest.raises(ValueError, match="dropout_h"):
    sn.config(vocab_size=10, dropout_h=1.0)
  with pytest.raises(ValueError, match="eval method"):
    sn.make_eval_archs(CFG, method="loop")
  with pytest.raises(ValueError, match="key="):
    sn.apply(sn.init(jax.random.key(0), CFG), _archs(SPACE, 1)[0], _tokens(0), sn.initial_hidden(B, H),
             config=CFG, train=True)


@pytest.mark.parametrize("sharing", sn.SHARING)
def test_matrix_indices_one_block_per_choice(sharing):
  """Every matrix serves exactly the (node, input[, activation]) choices its scheme groups."""
  cfg = sn.config(vocab_size=V, emb_size=H, hidden_size=H, num_nodes=N, sharing=sharing)
  m0, m = sn.num_matrices(cfg)
  choices = [(i, j, a) for i in range(1, N) for j in range(i) for a in range(4)]
  archs = np.zeros((len(choices), N, 2), np.int32)
  for k, (i, j, a) in enumerate(choices):
    archs[k, i] = (j, a)
  index = jax.vmap(lambda arch: sn.matrix_indices(arch, cfg))
  i0s, idx = (np.asarray(v) for v in index(jnp.asarray(archs)))
  seen: dict[int, set] = {}
  for k, (i, j, a) in enumerate(choices):
    group = {"node_input_activation": (i, j, a), "node_input": (i, j), "node": (i,)}[sharing]
    seen.setdefault(int(idx[k, i - 1]), set()).add(group)
  assert sorted(seen) == list(range(m))
  assert all(len(groups) == 1 for groups in seen.values())
  node0 = np.zeros((4, N, 2), np.int32)
  node0[:, 0, 1] = np.arange(4)
  i0 = set(np.asarray(index(jnp.asarray(node0))[0]).tolist())
  assert i0 == (set(range(4)) if sharing == "node_input_activation" else {0}) and m0 == len(i0)


@pytest.mark.parametrize("sharing,output,impl", [("node_input_activation", "loose_ends", "masked"),
                                                 ("node_input", "mean", "masked"),
                                                 ("node", "loose_ends", "switch")])
def test_supernet_equals_child(sharing, output, impl):
  space = RNNSpace(num_nodes=N, output=output)
  cfg = dataclasses.replace(CFG, output=output, sharing=sharing, activation_impl=impl)
  params = jax.tree.map(lambda p: 5 * p, sn.init(jax.random.key(1), cfg))
  x, h0 = _tokens(1), jax.random.normal(jax.random.key(2), (B, H))
  apply = jax.jit(lambda p, a, x, h: sn.apply(p, a, x, h, config=cfg)[:2])
  archs = _archs(space, 2, seed=3)
  archs[1, 2:, 0] = np.arange(1, N - 1)  # a chain: one loose end, every node on the path
  outs = []
  for arch in archs:
    logits, hidden = apply(params, arch, x, h0)
    child = sn.build_child(space, arch, cfg)
    c_logits, c_hidden = child.apply(sn.child_variables(arch, params, cfg), x, h0, train=False)
    np.testing.assert_allclose(logits, c_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hidden, c_hidden, rtol=1e-5, atol=1e-5)
    outs.append(np.asarray(logits))
  assert np.abs(outs[0] - outs[1]).max() > 1e-3  # different cells: the comparison can fail
  assert apply._cache_size() == 1


def test_child_variables_are_the_arch_blocks(params):
  arch = np.array([[0, 2], [0, 1], [1, 3], [0, 0], [2, 2]], np.int32)
  v = sn.child_variables(arch, params, CFG)["params"]
  np.testing.assert_array_equal(v["w0"], params["w0"][2])
  # node 4 reads node 2 with identity: block 4 * (4*3/2 + 2) + 2 = 34
  np.testing.assert_array_equal(v["w"][3], params["w"][34])
  np.testing.assert_array_equal(v["w"][1], params["w"][4 * 1 + 4 * 1 + 3])  # node 2 <- 1, sigmoid
  with pytest.raises(ValueError, match="shape"):
    sn.child_variables(arch[:4], params, CFG)
  with pytest.raises(ValueError, match="does not match"):
    sn.build_child(RNNSpace(num_nodes=N, output="mean"), arch, CFG)


def test_training_one_compilation_lowers_the_loss(params, evaluate):
  """Truncated BPTT on a cyclic stream, a new random cell every step: one
  compilation; the step's loss and hidden state are the model's; the loss falls."""
  tx = optax.clip_by_global_norm(0.25)
  step = sn.make_train_step(CFG, tx, slowness_reg=1e-3)
  # One step at lr 0: loss and new hidden state are apply's with the same dropout key.
  x, y, h0 = _tokens(8), _tokens(9), jax.random.normal(jax.random.key(10), (B, H))
  arch = _archs(SPACE, 1, seed=13)[0]
  state = sn.init_train_state(jax.tree.map(jnp.copy, params), tx)
  state, hidden, m = step(state, arch, x, y, jnp.copy(h0), jax.random.key(0), 0.0)
  logits, expected, _ = sn.apply(params, arch, x, h0, config=CFG, key=jax.random.key(0), train=True)
  np.testing.assert_allclose(hidden, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m["loss"], optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
                             rtol=1e-5)
  assert bool(m["finite"])

  state = sn.init_train_state(sn.init(jax.random.key(0), CFG), tx)
  rows = (np.arange(B * (12 * T + 1), dtype=np.int32) % 7).reshape(B, -1)  # 7 words in a cycle
  archs = _archs(SPACE, 4, seed=21)
  before, _ = evaluate(state["params"], archs, rows[:, :T], rows[:, 1:T + 1], sn.initial_hidden(B, H))
  losses = []
  for s in range(24):
    w = s % 12
    if w == 0:
      hidden = sn.initial_hidden(B, H)
    state, hidden, m = step(state, _archs(SPACE, 1, seed=100 + s)[0], rows[:, w * T:(w + 1) * T],
                            rows[:, w * T + 1:(w + 1) * T + 1], hidden, jax.random.key(s), 1.0)
    losses.append(float(m["loss"]))
    if s == 0:
      cache_size = step._cache_size()
  after, _ = evaluate(state["params"], archs, rows[:, :T], rows[:, 1:T + 1], sn.initial_hidden(B, H))
  assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.5, losses
  assert np.all(np.asarray(after) < np.asarray(before) - 0.5), (before, after)
  # 23 new cells after the first step, not one new compilation.
  assert step._cache_size() == cache_size and evaluate._cache_size() == 1
  assert int(state["step"]) == 24


def test_hidden_state_carries(params, apply, evaluate):
  """Two windows with the carried state = their concatenation in one window (dropout off)."""
  archs = _archs(SPACE, 3, seed=11)
  arch = archs[0]
  x, y = _tokens(5, (B, 2 * T)), _tokens(7, (B, 2 * T))
  h0 = jax.random.normal(jax.random.key(6), (B, H))
  logits, h_end, _ = apply(params, arch, x, h0)
  l1, h1, _ = apply(params, arch, x[:, :T], h0)
  l2, h2, _ = apply(params, arch, x[:, T:], h1)
  np.testing.assert_allclose(jnp.concatenate([l1, l2], axis=1), logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(h2, h_end, rtol=1e-5, atol=1e-5)
  l2_fresh, _, _ = apply(params, arch, x[:, T:], jnp.zeros_like(h0))
  assert np.abs(l2_fresh - l2).max() > 1e-3  # the carried state matters: the test can fail
  # eval_archs: per-arch losses are apply's, and windows chain through the returned states.
  loss_a, h_a = evaluate(params, archs, x[:, :T], y[:, :T], h0)
  loss_b, h_b = evaluate(params, archs, x[:, T:], y[:, T:], h_a)
  np.testing.assert_allclose(loss_a[0], optax.softmax_cross_entropy_with_integer_labels(
      l1, y[:, :T]).mean(), rtol=1e-5)
  np.testing.assert_allclose(loss_b[0], optax.softmax_cross_entropy_with_integer_labels(
      l2, y[:, T:]).mean(), rtol=1e-5)
  np.testing.assert_allclose(h_b[0], h_end, rtol=1e-5, atol=1e-5)
  assert np.ptp(np.asarray(loss_a)) > 1e-4
  # "vmap" gives the same values as "map".
  by_vmap, h_vmap = sn.make_eval_archs(CFG, method="vmap")(params, archs, x[:, T:], y[:, T:], h_a)
  np.testing.assert_allclose(by_vmap, loss_b, rtol=1e-5)
  np.testing.assert_allclose(h_vmap, h_b, rtol=1e-5, atol=1e-6)
