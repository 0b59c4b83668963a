"""The recurrent-cell space (``nas_jax.spaces.rnn``): sampling, mutation, tokens,
canonical forms, genotypes, published cells and input checking."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.spaces import get_space
from nas_jax.spaces import rnn as rnn_mod
from nas_jax.spaces.rnn import RNNSpace

ENAS = RNNSpace()
DARTS = RNNSpace.darts()
SMALL = RNNSpace(num_nodes=4)
SPACES = [ENAS, DARTS, SMALL]
N_BATCH = 2048


def _bounds(space) -> np.ndarray:
  n = np.zeros(space.arch_shape, np.int64)
  n[:, 0] = np.maximum(np.arange(space.num_nodes), 1)
  n[:, 1] = rnn_mod.NUM_ACTIVATIONS
  return n


@functools.lru_cache(maxsize=None)
def _batch(space):
  """Sampled, mutated and token-coded architectures (one compiled call per space)."""
  def one(key):
    arch = space.sample(key)
    tokens = space.to_tokens(arch)
    return {"arch": arch, "mutated": space.mutate(jax.random.fold_in(key, 1), arch),
            "tokens": tokens, "decoded": space.from_tokens(tokens)}
  keys = jax.random.split(jax.random.key(0), N_BATCH)
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(one))(keys))


def _random_relabel(arch: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
  """A random topological relabelling of the tree; returns (arch, order) with
  ``order[new] = old``."""
  n = arch.shape[0]
  placed, order = set(), []
  while len(order) < n:
    ready = [i for i in range(n) if i not in placed and (i == 0 or int(arch[i, 0]) in placed)]
    i = int(rng.choice(ready))
    placed.add(i)
    order.append(i)
  new = {old: k for k, old in enumerate(order)}
  out = np.zeros_like(arch)
  for old in order:
    out[new[old]] = (new[int(arch[old, 0])] if old else 0, arch[old, 1])
  return out, order


def test_registry_and_identity():
  space = get_space("rnn")
  assert space == ENAS and hash(space) == hash(RNNSpace(12, "loose_ends"))
  assert ENAS.arch_shape == (12, 2) and ENAS.token_length == 23 and ENAS.vocab_size == 16
  assert DARTS == RNNSpace(9, "mean") and DARTS != RNNSpace(9)
  assert ENAS.default_evaluator == "scratch"
  with pytest.raises(ValueError, match="num_nodes"):
    RNNSpace(1)
  with pytest.raises(ValueError, match="loose_ends"):
    RNNSpace(5, "concat")


@pytest.mark.parametrize("space", SPACES, ids=repr)
def test_sample_mutate_tokens_batched(space):
  b = _batch(space)
  bounds = _bounds(space)
  archs = b["arch"]
  assert archs.shape == (N_BATCH,) + space.arch_shape and archs.dtype == np.int32
  assert ((archs >= 0) & (archs < bounds)).all()
  # every decision takes every one of its values (2048 samples, at most 11 values)
  for idx in np.ndindex(space.arch_shape):
    assert len(np.unique(archs[(slice(None),) + idx])) == bounds[idx]
  # mutation: exactly one decision changes, to another valid value; never node 0/1's input
  mut = b["mutated"]
  assert ((mut >= 0) & (mut < bounds)).all()
  diff = (mut != archs).reshape(N_BATCH, -1)
  assert (diff.sum(1) == 1).all()
  changed = np.bincount(diff.argmax(1), minlength=2 * space.num_nodes)
  assert changed[0] == 0 and changed[2] == 0
  assert (changed[[k for k in range(2 * space.num_nodes) if k not in (0, 2)]] > 0).all()
  # tokens: round trip, inside the mask
  np.testing.assert_array_equal(b["decoded"], archs)
  mask = space.token_mask()
  assert mask.shape == (space.token_length, space.vocab_size) and not mask[:, 0].any()
  tokens = b["tokens"]
  assert mask[np.arange(space.token_length), tokens].all()
  for arch in archs[:50]:
    space.validate(arch)


@pytest.mark.parametrize("space", SPACES, ids=repr)
def test_any_masked_token_choice_is_valid(space):
  mask = space.token_mask()
  rng = np.random.default_rng(0)
  tokens = np.array([[rng.choice(np.flatnonzero(row)) for row in mask] for _ in range(200)], np.int32)
  archs = np.asarray(space.from_tokens(tokens))  # batched: leading dimensions are kept
  for arch in archs:
    space.validate(arch)
  np.testing.assert_array_equal(np.asarray(space.to_tokens(archs)), tokens)


def test_tokens_follow_enas_order():
  arch = np.array([[0, 3], [0, 1], [1, 2], [1, 0]], np.int32)  # node0 sigmoid; 1 relu<-0; 2 identity<-1; 3 tanh<-1
  assert np.asarray(SMALL.to_tokens(arch)).tolist() == [4 + 3, 1, 4 + 1, 2, 4 + 2, 2, 4 + 0]


@pytest.mark.parametrize("space", SPACES, ids=repr)
def test_canonical_is_invariant_under_relabelling(space):
  rng = np.random.default_rng(1)
  archs = _batch(space)["arch"][-150:]
  for arch in archs:
    canon = space.canonical(arch)
    space.validate(canon)
    np.testing.assert_array_equal(space.canonical(canon), canon)
    relabelled, _ = _random_relabel(arch, rng)
    np.testing.assert_array_equal(space.canonical(relabelled), canon)
    assert space.arch_id(relabelled) == space.arch_id(arch)
    # the multiset of (activation, number of children) is kept
    assert len(space.output_nodes(canon)) == len(space.output_nodes(arch))
    assert sorted(canon[:, 1]) == sorted(arch[:, 1])


def test_canonical_separates_different_cells():
  # same activations, different trees: a chain vs a star
  chain = np.array([[0, 0], [0, 1], [1, 1], [2, 1]], np.int32)
  star = np.array([[0, 0], [0, 1], [0, 1], [0, 1]], np.int32)
  assert SMALL.arch_id(chain) != SMALL.arch_id(star)
  # same tree, one activation moved between non-symmetric places
  a = np.array([[0, 0], [0, 1], [1, 2], [0, 3]], np.int32)
  b = np.array([[0, 0], [0, 3], [1, 2], [0, 1]], np.int32)  # relu and sigmoid swapped
  assert SMALL.arch_id(a) != SMALL.arch_id(b)
  # a genuine relabelling (the two children of node 0 swapped) is the same cell
  c = np.array([[0, 0], [0, 3], [0, 1], [2, 2]], np.int32)
  assert SMALL.arch_id(a) == SMALL.arch_id(c)
  # the output rule is part of the id
  assert RNNSpace(4, "mean").arch_id(a) != SMALL.arch_id(a)
  # number of distinct 4-node cells: 4 * (4 * 4 * 8 ...) enumerated vs canonical classes
  ids = set()
  total = 0
  for i2 in range(2):
    for i3 in range(3):
      for acts in np.ndindex(4, 4, 4, 4):
        arch = np.array([[0, acts[0]], [0, acts[1]], [i2, acts[2]], [i3, acts[3]]], np.int32)
        ids.add(SMALL.arch_id(arch))
        total += 1
  assert total == 1536 and 700 < len(ids) < total


def test_output_rules():
  arch = np.array([[0, 0], [0, 1], [1, 0], [1, 3]], np.int32)
  assert SMALL.output_nodes(arch) == (2, 3)
  assert RNNSpace(4, "mean").output_nodes(arch) == (1, 2, 3)
  chain = np.array([[0, 0], [0, 0], [1, 0], [2, 0]], np.int32)
  assert SMALL.output_nodes(chain) == (3,)


@pytest.mark.parametrize("space", SPACES, ids=repr)
def test_genotype_round_trip(space):
  for arch in _batch(space)["arch"][:100]:
    g = space.to_genotype(arch)
    assert list(g) == ["node0", "recurrent", "concat"]
    assert g["concat"] == list(space.output_nodes(arch))
    np.testing.assert_array_equal(space.from_genotype(g), arch)
    g2 = dict(g)
    del g2["concat"]
    np.testing.assert_array_equal(space.from_genotype(g2), arch)


@pytest.mark.parametrize("genotype, match", [
    ([], "must be a dict"),
    ({"recurrent": [["tanh", 0]] * 3, "extra": 1}, "unknown key"),
    ({"recurrent": [["tanh", 0]] * 2}, "list of 3"),
    ({"node0": "gelu", "recurrent": [["tanh", 0]] * 3}, "node0 'gelu'"),
    ({"recurrent": [["tanh", 0], ["swish", 0], ["tanh", 0]]}, r"recurrent\[1\] \(node 2\) activation 'swish'"),
    ({"recurrent": [["tanh", 0], ["tanh", 2], ["tanh", 0]]}, r"node 2\) input 2 is out of range 0..1"),
    ({"recurrent": [["tanh", 0], ["tanh", True], ["tanh", 0]]}, "input True"),
    ({"recurrent": [["tanh", 0], "relu", ["tanh", 0]]}, "must be \\[activation, input\\]"),
    ({"recurrent": [["tanh", 0], ["tanh", 1], ["tanh", 1]], "concat": [1, 2, 3]}, r"must list .*\[2, 3\]"),
])
def test_from_genotype_errors(genotype, match):
  with pytest.raises(ValueError, match=match):
    SMALL.from_genotype(genotype)


def test_darts_genotype_without_node0_is_tanh():
  g = {"recurrent": [["relu", 0], ["tanh", 1], ["sigmoid", 1]], "concat": [1, 2, 3]}
  arch = RNNSpace(4, "mean").from_genotype(g)
  assert arch.tolist() == [[0, 0], [0, 1], [1, 0], [1, 3]]


@pytest.mark.parametrize("arch, match", [
    (np.zeros((11, 2), np.int32), r"shape \(11, 2\)"),
    (np.zeros((12, 2), np.float32) + 0.5, "not an integer"),
    (np.array([[1, 0]] + [[0, 0]] * 11), r"arch\[0, 0\] \(node 0, input\) = 1 .*always 0"),
    (np.array([[0, 0], [1, 0]] + [[0, 0]] * 10), r"arch\[1, 0\] \(node 1, input\) = 1 is out of range 0..0"),
    (np.array([[0, 0]] * 7 + [[7, 0]] + [[0, 0]] * 4), r"arch\[7, 0\] \(node 7, input\) = 7 is out of range 0..6"),
    (np.array([[0, 0]] * 3 + [[0, 4]] + [[0, 0]] * 8), r"arch\[3, 1\] \(node 3, activation\) = 4 .*3 sigmoid"),
    (np.array([[0, -1]] + [[0, 0]] * 11), r"arch\[0, 1\]"),
])
def test_validate_errors(arch, match):
  with pytest.raises(ValueError, match=match):
    ENAS.validate(arch)


def test_published_cells():
  space, arch = rnn_mod.published("darts_v2")
  assert space == DARTS
  g = space.to_genotype(arch)
  assert g["recurrent"][0] == ["sigmoid", 0] and g["recurrent"][-1] == ["relu", 5]
  assert g["concat"] == list(range(1, 9))
  space, arch = rnn_mod.published("enas")
  assert space == ENAS and space.to_genotype(arch)["concat"] == [2, 5, 6, 9, 10, 11]
  space, final = rnn_mod.published("enas_ptb_final")
  assert space.to_tokens(final).tolist()[:5] == [12, 1, 12, 2, 13]  # "0 0 0 1 1 ..." shifted
  # DARTS's transcription of the ENAS cell is a relabelling of ENAS's own fixed_arc
  assert space.arch_id(final) == space.arch_id(arch)
  assert not (final == arch).all()
  rnn_mod.published("darts_v1")
  with pytest.raises(ValueError, match="darts_v2"):
    rnn_mod.published("nao")


def test_mutate_and_sample_jit_without_recompiling():
  sample = jax.jit(ENAS.sample)
  mutate = jax.jit(ENAS.mutate)
  a = sample(jax.random.key(0))
  for k in range(5):
    a = mutate(jax.random.key(k), a)
    ENAS.validate(a)
  assert mutate._cache_size() == 1
  assert jnp.asarray(a).dtype == jnp.int32
