"""Tests of the darts search space: sampling, mutation, encodings, canonical
form, input checking and the published DARTS cells."""
from __future__ import annotations

import collections
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import registry
from nas_jax.spaces import darts as D

SPACE = D.DartsSpace()
N = 2000


def _random_archs(n: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 2**20, (n,) + SPACE.arch_shape) % D.NUM_CHOICES).astype(np.int32)


def _is_valid(archs: np.ndarray) -> np.ndarray:
  archs = np.asarray(archs)
  return ((archs >= 0) & (archs < D.NUM_CHOICES)).all(axis=(-3, -2, -1))


def test_registry_and_attributes():
  space = registry.get_space("darts")
  assert space == SPACE and hash(space) == hash(SPACE)
  assert space.arch_shape == (2, 4, 4) and space.token_length == 32 and space.vocab_size == 13
  assert space.default_evaluator == "scratch"
  assert space.ops == ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                       "dil_conv_3x3", "dil_conv_5x5")


def test_sample_valid_and_varied():
  archs = np.asarray(jax.jit(jax.vmap(SPACE.sample))(jax.random.split(jax.random.key(0), N)))
  assert archs.dtype == np.int32 and archs.shape == (N,) + SPACE.arch_shape
  assert _is_valid(archs).all()
  assert len({a.tobytes() for a in archs}) == N
  # Every value of every decision occurs, with roughly uniform frequency.
  for pos in np.ndindex(*SPACE.arch_shape):
    counts = np.bincount(archs[(slice(None),) + pos], minlength=D.NUM_CHOICES[pos])
    assert len(counts) == D.NUM_CHOICES[pos] and counts.min() > 0.6 * N / D.NUM_CHOICES[pos], (pos, counts)
  # Same key, same arch.
  np.testing.assert_array_equal(SPACE.sample(jax.random.key(5)), SPACE.sample(jax.random.key(5)))


def test_mutate_changes_exactly_one_decision():
  archs = _random_archs(N, seed=1)
  keys = jax.random.split(jax.random.key(1), N)
  out = np.asarray(jax.jit(jax.vmap(SPACE.mutate))(keys, archs))
  assert _is_valid(out).all()
  diff = (out != archs).reshape(N, -1)
  np.testing.assert_array_equal(diff.sum(axis=1), 1)
  # Every position gets mutated (node 0's inputs too, which have only two values).
  assert (diff.sum(axis=0) > 0).all()


def test_genotype_round_trip_and_json():
  for a in _random_archs(300, seed=2):
    g = SPACE.to_genotype(a)
    assert json.loads(json.dumps(g)) == g
    assert len(g["normal"]) == len(g["reduce"]) == 8 and g["normal_concat"] == g["reduce_concat"] == [2, 3, 4, 5]
    np.testing.assert_array_equal(SPACE.from_genotype(g), a)
  # DARTS's namedtuple form and tuple pairs are accepted.
  Genotype = collections.namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
  g = D.PUBLISHED["DARTS_V1"]
  nt = Genotype([tuple(p) for p in g["normal"]], range(2, 6), [tuple(p) for p in g["reduce"]], range(2, 6))
  np.testing.assert_array_equal(SPACE.from_genotype(nt), SPACE.from_genotype(g))


def test_published_genotypes():
  assert set(D.PUBLISHED) == {"DARTS_V1", "DARTS_V2"}
  for name, g in D.PUBLISHED.items():
    a = SPACE.from_genotype(g)
    assert SPACE.to_genotype(a) == g, name
  v2 = SPACE.from_genotype(D.PUBLISHED["DARTS_V2"])
  ops = {name: i for i, name in enumerate(D.OPS)}
  # DARTS (second order) normal cell, node 3: skip_connect(c_{k-2}) + dil_conv_3x3(node 0).
  np.testing.assert_array_equal(v2[0, 3], [0, ops["skip_connect"], 2, ops["dil_conv_3x3"]])
  # Its reduction cell holds only max pools and skip connections.
  assert set(v2[1, :, 1::2].ravel()) == {ops["max_pool_3x3"], ops["skip_connect"]}


def test_tokens_round_trip_and_mask():
  archs = _random_archs(500, seed=3)
  tokens = np.asarray(jax.vmap(SPACE.to_tokens)(archs))
  assert tokens.shape == (500, 32) and tokens.min() >= 1 and tokens.max() <= 12
  np.testing.assert_array_equal(np.asarray(jax.vmap(SPACE.from_tokens)(tokens)), archs)
  mask = SPACE.token_mask()
  assert mask.shape == (32, 13) and not mask[:, 0].any()
  assert mask[np.arange(32)[None, :], tokens].all()
  # Positions are independent: any per-position choice among the allowed tokens is a valid arch.
  rng = np.random.default_rng(0)
  picks = np.stack([[rng.choice(np.flatnonzero(m)) for m in mask] for _ in range(300)])
  assert _is_valid(np.asarray(SPACE.from_tokens(jnp.asarray(picks)))).all()
  # The mask allows exactly the valid values: node 3's inputs 0..4 (tokens 1..5), ops tokens 6..12.
  np.testing.assert_array_equal(np.flatnonzero(mask[12]), [1, 2, 3, 4, 5])
  np.testing.assert_array_equal(np.flatnonzero(mask[0]), [1, 2])
  np.testing.assert_array_equal(np.flatnonzero(mask[1]), np.arange(6, 13))


def test_canonical_and_arch_id_invariant_under_node_swap():
  archs = _random_archs(300, seed=4)
  rng = np.random.default_rng(4)
  ids = set()
  for a in archs:
    b = a.copy()
    swap = rng.random((2, 4)) < 0.5
    b[swap] = b[swap][:, [2, 3, 0, 1]]
    ca = SPACE.canonical(a)
    np.testing.assert_array_equal(ca, SPACE.canonical(b))
    assert SPACE.arch_id(a) == SPACE.arch_id(b)
    np.testing.assert_array_equal(SPACE.canonical(ca), ca)  # idempotent
    first, second = ca[..., :2], ca[..., 2:]
    assert ((first[..., 0] < second[..., 0])
            | ((first[..., 0] == second[..., 0]) & (first[..., 1] <= second[..., 1]))).all()
    ids.add(SPACE.arch_id(a))
  assert len(ids) == len(archs)
  # Changing one op changes the id.
  c = archs[0].copy()
  c[0, 0, 1] = (c[0, 0, 1] + 1) % D.NUM_OPS
  assert SPACE.arch_id(c) != SPACE.arch_id(archs[0])


def test_augment_tokens_keeps_the_architecture():
  archs = _random_archs(200, seed=5)
  tokens = jax.vmap(SPACE.to_tokens)(archs)
  aug = np.asarray(jax.jit(SPACE.augment_tokens)(jax.random.key(0), tokens))
  assert (aug != np.asarray(tokens)).any()
  for a, t in zip(archs, aug):
    np.testing.assert_array_equal(SPACE.canonical(np.asarray(SPACE.from_tokens(t))), SPACE.canonical(a))


@pytest.mark.parametrize("edit, message", [
    (lambda a: a[:1], r"darts arch has shape \(1, 4, 4\); expected \(2, 4, 4\)"),
    (lambda a: a.astype(np.float32) + 0.5, "darts arch"),
    (lambda a: _set(a, (0, 0, 2), 2), r"arch\[0, 0, 2\] \(normal cell, node 0, input1\) = 2 is out of range 0\.\.1 "
                                      r"\(cell inputs 0, 1\)"),
    (lambda a: _set(a, (1, 3, 0), 5), r"arch\[1, 3, 0\] \(reduction cell, node 3, input0\) = 5 is out of range "
                                      r"0\.\.4 \(cell inputs 0, 1; earlier nodes 2\.\.4\)"),
    (lambda a: _set(a, (1, 1, 3), 7), r"arch\[1, 1, 3\] \(reduction cell, node 1, op1\) = 7 is out of range 0\.\.6 "
                                      r"\(0 max_pool_3x3, .*6 dil_conv_5x5\)"),
    (lambda a: _set(a, (0, 2, 1), -1), r"arch\[0, 2, 1\] \(normal cell, node 2, op0\) = -1"),
])
def test_validate_messages(edit, message):
  with pytest.raises(ValueError, match=message):
    SPACE.validate(edit(np.zeros((2, 4, 4), np.int32)))


def _set(a, pos, value):
  a = a.copy()
  a[pos] = value
  return a


def _genotype_with(cell, k, pair=None, **top):
  g = json.loads(json.dumps(D.PUBLISHED["DARTS_V2"]))
  if pair is not None:
    g[cell][k] = pair
  g.update(top)
  return g


@pytest.mark.parametrize("genotype, message", [
    ([1, 2], "must be a dict"),
    ({"normal": []}, r"'normal' must be a list of 8 \[op, input\] pairs"),
    (_genotype_with("normal", 0, bogus=1), r"unknown key\(s\) \['bogus'\]"),
    ({k: v for k, v in D.PUBLISHED["DARTS_V2"].items() if k != "reduce"}, "lacks 'reduce'"),
    (_genotype_with("normal", 0, normal=[["sep_conv_3x3", 0]] * 7), "must be a list of 8"),
    (_genotype_with("normal", 3, ["none", 0]), r"'none' is a relaxation op only"),
    (_genotype_with("reduce", 5, ["sep_conv_7x7", 0]), r"reduce\[5\] \(node 2\) op 'sep_conv_7x7' is unknown"),
    (_genotype_with("normal", 1, ["sep_conv_3x3", 2]), r"normal\[1\] \(node 0\) input 2 is out of range 0\.\.1"),
    (_genotype_with("normal", 7, ["sep_conv_3x3", 5]), r"normal\[7\] \(node 3\) input 5 is out of range 0\.\.4"),
    (_genotype_with("normal", 7, ["sep_conv_3x3", True]), "input True"),
    (_genotype_with("normal", 7, ["sep_conv_3x3"]), r"must be \[op, input\]"),
    (_genotype_with("normal", 0, normal_concat=[2, 3, 4]), r"normal_concat \[2, 3, 4\] must be \[2, 3, 4, 5\]"),
])
def test_from_genotype_errors(genotype, message):
  with pytest.raises(ValueError, match=message):
    SPACE.from_genotype(genotype)


def test_identity_alias_accepted():
  g = _genotype_with("normal", 5, ["identity", 0])
  np.testing.assert_array_equal(SPACE.from_genotype(g), SPACE.from_genotype(D.PUBLISHED["DARTS_V2"]))
