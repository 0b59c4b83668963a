"""The ``macro`` space (ENAS's macro space), its token view and the controller's skip decisions."""
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import registry
from nas_jax.predictors import controller as ctl
from nas_jax.spaces.base import TokenKinds
from nas_jax.spaces.macro import OPS, MacroSpace, layers_of_length
from nas_jax.strategies import enas as enas_lib

SMALL = MacroSpace(4)  # 4 ops + 6 skip bits


def test_registry_and_default_size():
  space = registry.get_space("macro")
  assert space == MacroSpace(12) and space.arch_shape == (78,)  # ENAS --child_num_layers=12
  assert space.default_evaluator == "supernet"
  assert layers_of_length(78) == 12
  with pytest.raises(ValueError, match="not L"):
    layers_of_length(77)


def test_sample_mutate_tokens_round_trip():
  keys = jax.random.split(jax.random.key(0), 400)
  archs = np.asarray(jax.vmap(SMALL.sample)(keys))
  ops_, skips = archs[:, SMALL.op_positions], archs[:, SMALL.skip_sources >= 0]
  assert set(np.unique(ops_)) == set(range(len(OPS))) and set(np.unique(skips)) == {0, 1}
  assert 0.4 < skips.mean() < 0.6
  mutated = np.asarray(jax.vmap(SMALL.mutate)(keys, archs))
  np.testing.assert_array_equal((mutated != archs).sum(1), 1)
  for a in mutated[:50]:
    SMALL.validate(a)
  tokens = np.asarray(jax.vmap(SMALL.to_tokens)(archs))
  mask = SMALL.token_mask()
  assert mask[np.arange(SMALL.token_length), tokens].all() and not mask[:, 0].any()
  np.testing.assert_array_equal(np.asarray(jax.vmap(SMALL.from_tokens)(tokens)), archs)


def test_genotype_round_trip_and_errors():
  for a in np.asarray(jax.vmap(SMALL.sample)(jax.random.split(jax.random.key(1), 30))):
    g = json.loads(json.dumps(SMALL.to_genotype(a)))
    assert SMALL.from_genotype(g).tolist() == a.tolist()
    assert SMALL.from_genotype({"arc": g["arc"]}).tolist() == a.tolist()
  g = SMALL.to_genotype([0, 1, 1, 2, 0, 1, 3, 1, 0, 1])
  assert g["layers"][3] == {"op": "sep_conv_5x5", "skips": ["stem", "layer1"]}
  with pytest.raises(ValueError, match=r"arch\[3\] \(layer 2 op\) = 6 is out of range 0..5"):
    SMALL.validate([0, 1, 1, 6, 0, 1, 3, 1, 0, 1])
  with pytest.raises(ValueError, match="describe different"):
    SMALL.from_genotype({**g, "arc": "0 1 1 2 0 1 3 1 0 0"})
  with pytest.raises(ValueError, match="unknown"):
    SMALL.from_genotype({"layers": [{"op": "conv_7x7", "skips": []}] * 4})


def test_token_kinds_mark_skip_positions():
  kinds = MacroSpace(3).token_kinds()
  assert kinds.skip.tolist() == [-1, -1, 0, -1, 0, 1]
  c = ctl.Controller.for_space(MacroSpace(3), hidden_size=8)
  assert c.has_skips and not c.has_inputs
  # op step, then the anchor step that decides the node's skips (ENAS general_controller)
  assert [k for k, _, _ in c.schedule] == [ctl.OP, ctl.ANCHOR] * 3
  bad = TokenKinds(kinds.node, kinds.target, kinds.num_nodes, skip=np.array([-1, -1, 1, -1, 0, 1]))
  with pytest.raises(ValueError, match="skip position 2 .* earlier node"):
    ctl.check_token_kinds(bad, MacroSpace(3).token_mask(), "macro")


def test_controller_distribution_is_normalised_and_matches_samples():
  """Over every architecture of a 3-layer space the controller's probabilities sum to 1,
  and sampling agrees with scoring (log-probs of the drawn sequences)."""
  space = MacroSpace(3)
  c = ctl.Controller.for_space(space, hidden_size=8, tanh_constant=1.5)
  params = ctl.init_params(c, jax.random.key(0))
  bounds = [len(OPS) if s < 0 else 2 for s in space.skip_sources]
  every = np.array(list(itertools.product(*map(range, bounds))), np.int32)  # 1728 archs
  log_p, _ = ctl.sequence_log_prob(c, params, jax.vmap(space.to_tokens)(every))
  assert abs(float(jnp.exp(log_p).sum()) - 1.0) < 1e-4
  tokens, lp, _ = ctl.sample(c, params, jax.random.key(1), 64)
  index = np.ravel_multi_index((np.asarray(tokens) - 1).T, bounds)  # row of each sample in `every`
  np.testing.assert_allclose(lp, np.asarray(log_p)[index], atol=1e-5)


def test_skip_penalty_value():
  """Zero parameters give p(on) = 1/2 everywhere: the penalty is ENAS's per-layer KL sum, averaged."""
  c = ctl.Controller.for_space(SMALL, hidden_size=8, tanh_constant=1.5)
  params = jax.tree.map(jnp.zeros_like, ctl.init_params(c, jax.random.key(0)))
  kl = 0.5 * np.log(0.5 / 0.4) + 0.5 * np.log(0.5 / 0.6)
  tokens = jax.vmap(SMALL.to_tokens)(jnp.zeros((2,) + SMALL.arch_shape, jnp.int32))
  np.testing.assert_allclose(ctl.skip_penalty(c, params, tokens, 0.4), [(1 + 2 + 3) / 3 * kl] * 2, rtol=1e-5)


@pytest.mark.slow
def test_skip_penalty_pulls_the_skip_rate_to_the_target():
  """Gradient steps on the penalty alone move the sampled skip rate towards rho (ENAS's KL)."""
  c = ctl.Controller.for_space(SMALL, hidden_size=8, tanh_constant=1.5)
  params = ctl.init_params(c, jax.random.key(0))
  tokens, _, _ = ctl.sample(c, params, jax.random.key(1), 32)
  pen = ctl.skip_penalty(c, params, tokens, 0.1)
  assert pen.shape == (32,) and bool((pen > 0).all())
  grad_fn = jax.jit(jax.grad(lambda p, t: ctl.skip_penalty(c, p, t, 0.1).mean()))
  for i in range(60):
    tokens, _, _ = ctl.sample(c, params, jax.random.key(i), 32)
    params = jax.tree.map(lambda p, g: p - 0.5 * g, params, grad_fn(params, tokens))
  tokens = np.concatenate([ctl.sample(c, params, jax.random.key(100 + i), 32)[0] for i in range(10)])
  rate = float((tokens[:, SMALL.skip_sources >= 0] == 2).mean())
  assert rate < 0.25, rate  # from about 0.5


def test_enas_strategy_macro_preset_and_penalty_in_the_loss():
  strategy = enas_lib.ENAS(SMALL, {"hidden_size": 8, "batch_size": 4})
  assert strategy.config["preset"] == "cifar_macro"
  assert (strategy.skip_target, strategy.skip_weight) == (0.4, 0.8)  # cifar10_macro_search.sh
  assert enas_lib.ENAS(registry.get_space("nb201"), {"hidden_size": 8}).skip_weight == 0.0
  state = strategy.init(jax.random.key(0))
  archs, _ = strategy.ask(state, jax.random.key(1))
  scores = np.zeros(4)  # no reward signal: only the penalty moves the controller
  off = enas_lib.ENAS(SMALL, {"hidden_size": 8, "batch_size": 4, "skip_weight": 0.0})
  moved = strategy.tell(state, archs, scores)["params"]
  still = off.tell(state, archs, scores)["params"]
  diff = lambda a: max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(state["params"])))
  assert diff(moved) > 1e-4 and diff(moved) > 10 * diff(still)
