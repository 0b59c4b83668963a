"""Tests of ENAS's controller (predictors/controller.py) and its strategy (strategies/enas.py):
sampling follows the scored distribution, the REINFORCE gradient against finite
differences, one compilation for every sampled architecture, valid samples on every
space, learning on a toy reward."""
from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import registry
from nas_jax.predictors import controller as ctl
from nas_jax.strategies import enas

SPACES = ("nasnet", "darts", "rnn", "nb201")
H = 8  # controller width in these tests


@pytest.fixture(scope="module")
def spaces():
  return {name: registry.get_space(name) for name in SPACES}


def test_sampling_follows_the_scored_distribution(spaces):
  # A peaked controller (parameters scaled up) on nb201: the empirical frequency of
  # the most frequent sequences matches exp(sequence_log_prob) within 4 binomial std.
  c = ctl.Controller.for_space(spaces["nb201"], hidden_size=H)
  params = jax.tree.map(lambda x: 25.0 * x, ctl.init_params(c, jax.random.key(3)))
  n = 4000
  tokens, log_prob, entropy = ctl.sample(c, params, jax.random.key(4), n)
  scored_lp, scored_ent = ctl.sequence_log_prob(c, params, tokens)
  np.testing.assert_allclose(scored_lp, log_prob, atol=1e-4)
  np.testing.assert_allclose(scored_ent, entropy, atol=1e-4)
  rows = [tuple(t) for t in np.asarray(tokens).tolist()]
  top = collections.Counter(rows).most_common(3)
  assert top[0][1] > 200, top  # peaked enough for the check to mean something
  for seq, count in top:
    p = float(np.exp(np.float64(scored_lp[rows.index(seq)])))
    std = np.sqrt(n * p * (1 - p))
    assert abs(count - n * p) < 4 * std + 1, (seq, count, n * p)


def test_reinforce_gradient_matches_finite_differences(spaces):
  # nasnet: pointer attention (inputs) and op decisions; float64 for a tight check
  name = "nasnet"
  with jax.enable_x64(True):
    c = ctl.Controller.for_space(spaces[name], hidden_size=6, tanh_constant=1.1,
                                 op_tanh_reduce=2.5, temperature=2.0)
    params = jax.tree.map(lambda x: x.astype(jnp.float64) * 5.0,
                          ctl.init_params(c, jax.random.key(0)))
    space = spaces[name]
    draw = jax.jit(lambda k: jax.vmap(lambda a: space.to_tokens(space.sample(a)))(
        jax.random.split(k, 4)))
    tokens = draw(jax.random.key(1)).astype(jnp.int32)
    weight = jnp.asarray([1.0, 1.0, 1.0, 0.0])  # the last one is padding

    # one compiled program for the loss and its gradient (the FD steps use the loss)
    value_and_grad = jax.jit(jax.value_and_grad(
        lambda p, adv: enas.reinforce_loss(c, p, tokens, adv, weight)))

    def loss(p, adv):
      return value_and_grad(p, adv)[0]

    advantage = jnp.asarray([0.7, -0.3, 0.1, -0.5])
    grads = value_and_grad(params, advantage)[1]
    # the loss is -mean(advantage * log p) over the counted samples; padding is ignored
    log_prob = ctl.sequence_log_prob(c, params, tokens)[0]
    np.testing.assert_allclose(loss(params, advantage), -jnp.mean(advantage[:3] * log_prob[:3]),
                               rtol=1e-12)
    assert float(loss(params, advantage.at[3].set(9.0))) == float(loss(params, advantage))
    leaves, tree = jax.tree.flatten(params)
    eps = 1e-6
    for seed in range(3):
      keys = jax.random.split(jax.random.key(10 + seed), len(leaves))
      direction = jax.tree.unflatten(
          tree, [jax.random.normal(k, x.shape, jnp.float64) for k, x in zip(keys, leaves)])
      plus = jax.tree.map(lambda p, d: p + eps * d, params, direction)
      minus = jax.tree.map(lambda p, d: p - eps * d, params, direction)
      numeric = (loss(plus, advantage) - loss(minus, advantage)) / (2 * eps)
      analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads),
                                                     jax.tree.leaves(direction)))
      assert abs(float(analytic)) > 1e-4
      np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)


def test_no_recompilation_across_sampled_architectures(spaces):
  strategy = enas.ENAS(spaces["nasnet"], {"hidden_size": H, "batch_size": 3})
  state = strategy.init(jax.random.key(0))
  traces = collections.Counter()
  original = ctl.unroll

  def counting_unroll(*args, **kwargs):
    traces["unroll"] += 1
    return original(*args, **kwargs)

  ask_before, update_before = enas._ask._cache_size(), enas._update._cache_size()
  seen = set()
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(ctl, "unroll", counting_unroll)
    for t in range(4):
      archs, state = strategy.ask(state, jax.random.key(t))
      seen.update(strategy.space.arch_id(a) for a in archs)
      scores = np.array([90.0, 80.0, -np.inf])  # a failed evaluation too
      state = strategy.tell(state, archs, scores)
      state = strategy.tell(state, archs[:2], scores[:2])  # a short batch (padded)
      if t == 0:
        first = dict(traces)
  assert len(seen) == 12  # different architectures went through the same programs
  assert first and dict(traces) == first, (traces, first)
  assert enas._ask._cache_size() - ask_before <= 1
  assert enas._update._cache_size() - update_before <= 1
  assert int(state["step"]) == 8 and int(state["num_told"]) == 20


@pytest.mark.parametrize("name", SPACES)
def test_every_sample_is_valid_and_scored_as_sampled(spaces, name):
  space = spaces[name]
  c = enas.ENAS(space, {"hidden_size": H}).controller  # the strategy's controller
  params = ctl.init_params(c, jax.random.key(0))
  tokens, log_prob, entropy = ctl.sample(c, params, jax.random.key(1), 100)
  archs = np.asarray(jax.vmap(space.from_tokens)(tokens))
  assert archs.shape == (100, *space.arch_shape)
  for arch in archs:
    space.validate(arch)
  np.testing.assert_array_equal(np.asarray(jax.vmap(space.to_tokens)(archs)), tokens)
  assert len({space.arch_id(a) for a in archs}) > 50
  if name in ("darts", "rnn"):
    return  # the scoring program is checked on nasnet (pointers) and nb201 (ops only)
  scored_lp, scored_ent = ctl.sequence_log_prob(c, params, tokens)
  np.testing.assert_allclose(scored_lp, log_prob, atol=1e-4)
  np.testing.assert_allclose(scored_ent, entropy, atol=1e-4)
  # another allowed token at one decision changes the score (the check can fail)
  mask = np.asarray(space.token_mask(), bool)
  t = int(np.flatnonzero(mask.sum(1) > 1)[-1])
  other = np.asarray(tokens).copy()
  other[0, t] = [v for v in np.flatnonzero(mask[t]) if v != other[0, t]][0]
  changed = float(ctl.sequence_log_prob(c, params, jnp.asarray(other))[0][0])
  assert abs(changed - float(log_prob[0])) > 1e-4


# nb201's preset: ENAS's PTB logit shaping (tanh constant 2.5 on every decision; the
# CIFAR micro shaping caps an op's probability at 0.375 per nb201 edge).
PEAKED = {"hidden_size": H, "batch_size": 4}


def test_enas_learns_the_best_op_on_a_toy_reward(spaces):
  strategy = enas.ENAS(spaces["nb201"], PEAKED)
  state = strategy.init(jax.random.key(0))
  best = np.full((1, 6), 3, np.int32)  # nor_conv_3x3 on every edge
  before = float(strategy.log_prob(state, best)[0])
  for t in range(30):
    archs, state = strategy.ask(state, jax.random.key(100 + t))
    state = strategy.tell(state, archs, 80.0 + 2.0 * (archs == 3).sum(axis=1))
  after = float(strategy.log_prob(state, best)[0])
  assert after > before + 4.0, (before, after)
  assert int(state["step"]) == 30 and int(state["num_told"]) == 120


def test_baseline_is_the_bias_corrected_moving_average(spaces):
  space = spaces["nb201"]
  config = {**PEAKED, "entropy_weight": 0.0, "reward_scale": 0.01}
  archs = np.asarray(jax.vmap(space.sample)(jax.random.split(jax.random.key(0), 4)))
  scores = np.array([90.0, 70.0, -np.inf, 80.0])
  d = 0.99  # ENAS bl_dec; rewards are scores / 100, the failed one skipped
  num = ((1 - d) * d * d * 0.9 + (1 - d) * d * 0.7 + (1 - d) * 0.8)
  den = (1 - d) * d * d + (1 - d) * d + (1 - d)
  strategy = enas.ENAS(space, config)
  state = strategy.tell(strategy.init(jax.random.key(0)), archs, scores)
  np.testing.assert_allclose(float(state["baseline_num"] / state["baseline_den"]), num / den,
                             rtol=1e-5)
  plain = enas.ENAS(space, {**config, "baseline_bias_correction": False})  # ENAS: from 0
  state = plain.tell(plain.init(jax.random.key(0)), archs, scores)
  np.testing.assert_allclose(float(state["baseline_num"]), num, rtol=1e-5)
  assert float(state["baseline_den"]) == 0.0


@pytest.mark.parametrize("config, match", [
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"baseline_decay": 1.0}, "baseline_decay"),
    ({"tanh_constant": -1.0}, "tanh_constant"),
    ({"baseline_bias_correction": 1}, "baseline_bias_correction"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"lstm_size": 64}, "unknown"),
])
def test_config_is_validated(spaces, config, match):
  with pytest.raises(ValueError, match=match):
    enas.ENAS(spaces["nb201"], config)


def test_defaults_follow_the_authors_cifar_micro_search():
  cfg = enas.ENAS.default_config()
  assert (cfg["learning_rate"], cfg["baseline_decay"], cfg["entropy_weight"]) == (0.0035, 0.99, 1e-4)
  assert (cfg["tanh_constant"], cfg["op_tanh_reduce"], cfg["temperature"]) == (1.10, 2.5, None)
  assert (cfg["hidden_size"], cfg["batch_size"], cfg["adam_eps"]) == (64, 10, 1e-3)


def test_presets_follow_the_authors_scripts_per_space(spaces):
  rnn = enas.ENAS(spaces["rnn"]).config  # scripts/ptb_search.sh
  assert rnn["preset"] == "ptb"
  assert (rnn["learning_rate"], rnn["tanh_constant"], rnn["temperature"]) == (0.001, 2.5, 5.0)
  assert (rnn["entropy_weight"], rnn["hidden_size"], rnn["reward_scale"]) == (1e-3, 100, 1.0)
  assert enas.ENAS(spaces["nasnet"]).config == {**enas.ENAS.default_config(),
                                                "preset": "cifar_micro"}
  nb201 = enas.ENAS(spaces["nb201"], {"learning_rate": 0.02}).config  # explicit > preset
  assert (nb201["preset"], nb201["learning_rate"], nb201["batch_size"]) == ("nb201", 0.02, 1)
  micro = enas.ENAS(spaces["nb201"], {"preset": "cifar_micro"}).config
  assert (micro["learning_rate"], micro["op_tanh_reduce"]) == (0.0035, 2.5)
  with pytest.raises(ValueError, match="preset"):
    enas.ENAS(spaces["nb201"], {"preset": "cifar"})
