"""Tests of NAO: the encoder-predictor-decoder and the ask/tell strategy.

Tiny models (hidden size 16) on the nb201 and nasnet token views; one shared
setting so the compiled functions are reused across tests.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.predictors.nao import NAOModel, pairwise_accuracy
from nas_jax.registry import get_space, get_strategy
from nas_jax.strategies.nao import normalise_scores

TINY = {"emb_size": 8, "hidden_size": 16, "mlp_hidden_size": 16, "batch_size": 32, "lr": 0.01}
TINY_STRATEGY = {**TINY, "init_pool": 12, "new_per_round": 4, "top_k": 4, "train_steps": 5,
                 "num_etas": 4, "capacity": 64}


def _tokens(space, key, n):
  archs = jax.vmap(space.sample)(jax.random.split(key, n))
  return jax.vmap(space.to_tokens)(archs)


def _score(tokens):
  """A learnable toy target on nb201 tokens: the share of conv3x3 edges."""
  return jnp.mean(tokens == 4, axis=-1).astype(jnp.float32)


@pytest.fixture(scope="module")
def nb201():
  return get_space("nb201")


@pytest.fixture(scope="module")
def trained(nb201):
  """A tiny model trained briefly on 64 random nb201 archs."""
  model = NAOModel(nb201, **TINY)
  params0, opt = model.init(jax.random.key(0))
  tokens = _tokens(nb201, jax.random.key(1), 64)
  params, opt, metrics = model.fit(params0, opt, jax.random.key(2), tokens, _score(tokens), 64, 300)
  return model, params0, params, tokens, metrics


@pytest.mark.slow  # heavy compile; CI runs the fast tier (python -m pytest -m slow runs it)
def test_decode_respects_mask_nasnet():
  space = get_space("nasnet")
  model = NAOModel(space, **TINY)
  params, _ = model.init(jax.random.key(3))
  tokens = _tokens(space, jax.random.key(4), 16)
  decoded = np.asarray(model.reconstruct(params, tokens))  # untrained: arbitrary choices
  mask = np.asarray(space.token_mask())
  assert decoded.shape == tokens.shape
  assert mask[np.arange(space.token_length)[None, :], decoded].all()
  for seq in decoded:  # every decoded sequence is a valid architecture
    space.validate(np.asarray(space.from_tokens(jnp.asarray(seq))))


def test_swap_augmentation_keeps_the_arch():
  space = get_space("nasnet")
  tokens = _tokens(space, jax.random.key(5), 8)
  keys = jax.random.split(jax.random.key(6), 8)
  swapped = jax.vmap(space.augment_tokens)(keys, tokens)
  assert not np.array_equal(np.asarray(swapped), np.asarray(tokens))  # it does swap something
  for a, b in zip(np.asarray(tokens), np.asarray(swapped)):
    arch_a = space.from_tokens(jnp.asarray(a))
    arch_b = space.from_tokens(jnp.asarray(b))
    assert space.arch_id(arch_a) == space.arch_id(arch_b)


def test_round_trip_and_predictor_improve_with_training(trained):
  model, params0, params, tokens, metrics = trained
  before = np.mean(np.all(np.asarray(model.reconstruct(params0, tokens)) == np.asarray(tokens), 1))
  after = np.mean(np.all(np.asarray(model.reconstruct(params, tokens)) == np.asarray(tokens), 1))
  assert after > before
  assert after > 0.3
  assert np.isfinite(float(metrics.loss))
  truth = np.asarray(_score(tokens))
  assert pairwise_accuracy(truth, np.asarray(model.predict(params, tokens))) > 0.7


def test_ascent_moves_predicted_score_up(trained):
  model, _, params, tokens, _ = trained
  fns = model.jitted
  encode, predict = fns["encode"], fns["predict_outputs"]

  def moved(seq, eta):
    outputs = encode(params, seq)
    grad = jax.grad(lambda o: predict(params, o))(outputs)
    new = outputs + eta * grad
    new = new / jnp.linalg.norm(new, axis=-1, keepdims=True)
    return predict(params, outputs), predict(params, new)

  old, new = jax.vmap(moved, (0, None))(tokens[:16], 0.5)
  assert np.all(np.asarray(new) >= np.asarray(old) - 1e-6)
  assert np.mean(np.asarray(new) > np.asarray(old)) > 0.9
  decoded, preds = model.ascend(params, tokens[:16], model.etas(8, 2.0))
  assert decoded.shape == (16, 8, 6) and preds.shape == (16, 8)
  seed_pred = np.asarray(model.predict(params, tokens[:16]))
  # the largest step decodes archs the predictor rates higher than the seeds
  assert np.mean(np.asarray(preds)[:, -1]) > np.mean(seed_pred)


def test_train_step_compiles_once(trained, nb201):
  model, _, params, _, _ = trained
  fit = model.jitted["fit"]
  before = fit._cache_size()
  opt = model.init(jax.random.key(7))[1]
  for i in range(3):  # new data, row counts and step numbers: no new compilation
    tokens = _tokens(nb201, jax.random.key(10 + i), 64)
    params, opt, _ = model.fit(params, opt, jax.random.key(i), tokens, _score(tokens), 5 + i, 2 + i)
  assert before >= 1
  assert fit._cache_size() == before


def test_bad_input_raises(nb201):
  with pytest.raises(ValueError, match="unknown NAO model setting"):
    NAOModel(nb201, hiden_size=3)
  with pytest.raises(ValueError, match="hidden_size"):
    NAOModel(nb201, hidden_size=0)
  model = NAOModel(nb201, **TINY)
  params, _ = model.init(jax.random.key(0))
  with pytest.raises(ValueError, match="length"):
    model.predict(params, jnp.ones((2, 7), jnp.int32))
  with pytest.raises(ValueError, match="selection"):
    get_strategy("nao")(nb201, {**TINY_STRATEGY, "selection": "best"})
  with pytest.raises(ValueError, match="unknown nao setting"):
    get_strategy("nao")(nb201, {"pool": 3})
  with pytest.raises(ValueError, match="targets"):
    get_strategy("nao")(nb201, {**TINY_STRATEGY, "targets": "zscore"})
  with pytest.raises(ValueError, match="pairwise"):
    pairwise_accuracy(np.ones(3), np.arange(3))


def _run(strategy, key, rounds, reference=None):
  """ask/tell loop with a toy score; returns the asked archs and the state."""
  state = strategy.init(key)
  asked = []
  for r in range(rounds):
    archs, state = strategy.ask(state, jax.random.fold_in(key, r))
    scores = np.asarray(_score(jax.vmap(strategy.space.to_tokens)(jnp.asarray(archs)))) * 100
    state = strategy.tell(state, archs, scores)
    asked.append(archs)
  return asked, state


def test_strategy_loop_state_and_determinism(nb201):
  strategy = get_strategy("nao")(nb201, TINY_STRATEGY)
  asked, state = _run(strategy, jax.random.key(0), 3)
  assert [len(a) for a in asked] == [12, 4, 4]
  ids = [nb201.arch_id(a) for a in np.concatenate(asked)]
  assert len(set(ids)) == len(ids)  # never asks an evaluated arch again
  assert int(state["count"]) == 20
  # checkpointable: a pytree of arrays only
  for leaf in jax.tree.leaves(state):
    assert isinstance(leaf, (np.ndarray, jax.Array)), type(leaf)
  # deterministic given the keys
  asked2, state2 = _run(get_strategy("nao")(nb201, TINY_STRATEGY), jax.random.key(0), 3)
  for a, b in zip(asked, asked2):
    np.testing.assert_array_equal(a, b)
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(state2)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # resuming from a copied state continues identically
  copy = jax.tree.map(lambda x: np.array(x, copy=True), state)
  a1, _ = strategy.ask(state, jax.random.key(9))
  a2, _ = strategy.ask(copy, jax.random.key(9))
  np.testing.assert_array_equal(a1, a2)


def test_reevaluate_pool_asks_pool_and_new(nb201):
  config = {**TINY_STRATEGY, "reevaluate_pool": True, "selection": "first"}
  strategy = get_strategy("nao")(nb201, config)
  asked, state = _run(strategy, jax.random.key(1), 3)
  assert [len(a) for a in asked] == [12, 16, 16]
  # the pool (first 12 of the second ask) is the first round's archs
  assert {nb201.arch_id(a) for a in asked[1][:12]} == {nb201.arch_id(a) for a in asked[0]}
  assert int(state["pool_count"]) == 12
  assert int(state["count"]) == 20  # re-scored archs are not stored twice


def test_neighbour_draws_come_from_the_ask_key(nb201):
  # train_steps=0: the model is not refitted, so with enough candidates the
  # ask key only reaches the choice through the neighbour mutations.
  config = {**TINY_STRATEGY, "train_steps": 0, "neighbours": 6, "num_etas": 2}
  strategy = get_strategy("nao")(nb201, config)
  state = strategy.init(jax.random.key(0))
  archs, state = strategy.ask(state, jax.random.key(1))
  scores = np.asarray(_score(jax.vmap(nb201.to_tokens)(jnp.asarray(archs)))) * 100
  state = strategy.tell(state, archs, scores)
  asked = [np.asarray(strategy.ask(state, jax.random.key(k))[0]) for k in range(2, 8)]
  # the same key gives the same archs
  np.testing.assert_array_equal(asked[0], np.asarray(strategy.ask(state, jax.random.key(2))[0]))
  # different keys give different neighbour draws (not one shared stream)
  distinct = {tuple(sorted(nb201.arch_id(a) for a in block)) for block in asked}
  assert len(distinct) > 1


def test_normalise_scores():
  scores = np.array([10.0, 90.0, 91.0, -np.inf, 90.0])
  np.testing.assert_allclose(normalise_scores(scores, "minmax"), [0, 80 / 81, 1, 0, 80 / 81],
                             rtol=1e-6)
  # rank: evenly spread over the finite scores, ties share their mean rank, failed -> 0
  np.testing.assert_allclose(normalise_scores(scores, "rank"), [0, 0.5, 1, 0, 0.5])
  assert normalise_scores(np.array([-np.inf, -np.inf]), "rank").tolist() == [0, 0]
  with pytest.raises(ValueError, match="normalisation"):
    normalise_scores(scores, "zscore")
