"""Property tests of the search spaces (nb201, nasnet): encodings, sampling,
mutation, canonical forms and input checking."""
from __future__ import annotations

import gzip
import itertools
import json
import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax.spaces import get_space
from nas_jax.spaces import nasnet as nasnet_mod
from nas_jax.spaces import nb201 as nb201_mod

# Hypothesis costs about 4 ms of CPU per example here, so each property runs
# under hypothesis on a few hundred generated examples (edge cases, shrinking)
# and then, as plain loops, on thousands more (every one of the 15,625 nb201
# cells where that is cheap).
SETTINGS = hypothesis.settings(max_examples=150, deadline=None, derandomize=True,
                               suppress_health_check=[hypothesis.HealthCheck.too_slow])
N_BULK = 2000
NB201 = get_space("nb201")
NASNET = get_space("nasnet")
SPACES = [NB201, NASNET]
N_BATCH = 4096


def _bounds(space) -> np.ndarray:
  """Number of valid values of every decision, shaped like an arch."""
  if space.name == "nb201":
    return np.full(space.arch_shape, nb201_mod.NUM_OPS)
  return nasnet_mod._NUM_CHOICES  # pylint: disable=protected-access


def _valid_batch(space, archs) -> np.ndarray:
  archs = np.asarray(archs)
  axes = tuple(range(1, archs.ndim))
  return ((archs >= 0) & (archs < _bounds(space))).all(axis=axes)


# --- architectures as hypothesis strategies ----------------------------------
nb201_archs = st.lists(st.integers(0, 4), min_size=6, max_size=6).map(
    lambda v: np.array(v, np.int32))


def _nasnet_from_seed(seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 2**20, (2, 5, 4)) % nasnet_mod._NUM_CHOICES).astype(np.int32)  # pylint: disable=protected-access


def nasnet_archs():
  # One drawn integer per arch keeps generation cheap (40 draws per example are slow).
  return st.integers(0, 2**63 - 1).map(_nasnet_from_seed)


ARCHS = {"nb201": nb201_archs, "nasnet": nasnet_archs()}


# --- batched checks over thousands of sampled architectures (one jit each) ---
def _batch_fn(space):
  """Sampling, mutation, tokens and augmentation in one compiled call (compiling
  jax.random code is the slow part of this file, so there is one per space)."""

  def one(key):
    arch = space.sample(key)
    tokens = space.to_tokens(arch)
    return {"arch": arch, "mutated": space.mutate(key, arch), "tokens": tokens,
            "decoded": space.from_tokens(tokens), "augmented": space.augment_tokens(key, tokens)}

  return jax.jit(jax.vmap(one))


def _masked_choice(space, seed):
  """Per-position random tokens among those the mask allows (numpy)."""
  mask = space.token_mask()
  logits = np.random.default_rng(seed).random((N_BATCH,) + mask.shape)
  return np.where(mask, logits, -1.0).argmax(-1).astype(np.int32)


@pytest.fixture(scope="module", params=SPACES, ids=lambda s: s.name)
def batch(request):
  space = request.param
  keys = jax.random.split(jax.random.key(0), N_BATCH)
  fn = _batch_fn(space)
  out = jax.tree.map(np.asarray, fn(keys))
  again = jax.tree.map(np.asarray, fn(keys))
  return space, keys, out, again


def test_sample_always_valid_and_covers_every_value(batch):
  space, _, out, _ = batch
  archs = out["arch"]
  assert archs.shape == (N_BATCH,) + space.arch_shape and archs.dtype == np.int32
  assert _valid_batch(space, archs).all()
  # every decision takes every one of its values somewhere in the batch
  for pos in np.ndindex(space.arch_shape):
    assert len(np.unique(archs[(slice(None),) + pos])) == _bounds(space)[pos]
  for arch in archs[:100]:
    space.validate(arch)


def test_sample_is_deterministic_per_key(batch):
  space, keys, out, again = batch
  for k, v in out.items():
    np.testing.assert_array_equal(v, again[k], err_msg=k)
  np.testing.assert_array_equal(space.sample(keys[7]), out["arch"][7])  # eager == jit
  assert len({space.arch_id(a) for a in out["arch"][:50]}) > 40


def test_mutate_valid_and_changes_exactly_one_decision(batch):
  space, _, out, _ = batch
  mutated, archs = out["mutated"], out["arch"]
  assert _valid_batch(space, mutated).all()
  changed = (mutated != archs).reshape(N_BATCH, -1)
  np.testing.assert_array_equal(changed.sum(axis=1), 1)
  assert changed.any(axis=0).all()  # every position gets mutated somewhere


def test_token_round_trip_and_mask(batch):
  space, _, out, _ = batch
  tokens = out["tokens"]
  assert tokens.shape == (N_BATCH, space.token_length)
  np.testing.assert_array_equal(out["decoded"], out["arch"])
  mask = space.token_mask()
  assert mask.shape == (space.token_length, space.vocab_size) and mask.dtype == bool
  assert not mask[:, 0].any()
  assert ((tokens >= 1) & (tokens < space.vocab_size)).all()
  assert mask[np.arange(space.token_length), tokens].all()


def test_masked_random_choice_decodes_to_valid_arch(batch):
  space = batch[0]
  mask = space.token_mask()
  chosen = _masked_choice(space, 0)
  archs = np.asarray(jax.vmap(space.from_tokens)(chosen))
  assert _valid_batch(space, archs).all()
  for arch in archs[:100]:
    space.validate(arch)
  # the mask is tight: every allowed token shows up at every position
  seen = np.zeros(mask.shape, bool)
  seen[np.arange(space.token_length)[None, :].repeat(N_BATCH, 0), chosen] = True
  np.testing.assert_array_equal(seen, mask)


def test_augment_tokens_keeps_the_architecture(batch):
  space, _, out, _ = batch
  tokens, aug = out["tokens"], out["augmented"]
  assert aug.shape == tokens.shape
  if space.name == "nasnet":
    frac = (aug != tokens).reshape(N_BATCH, 2, 5, 4).any(-1).mean()
    assert 0.4 < frac < 0.6, frac  # about half of the nodes swapped
  for a, b in zip(out["arch"][:300], aug[:300]):
    b = space.from_tokens(b) if space.name == "nb201" else b.reshape(2, 5, 4) - [1, 7, 1, 7]
    np.testing.assert_array_equal(space.canonical(a), space.canonical(b))


# --- round trips: hypothesis plus bulk loops ----------------------------------
def _bulk(space, exhaustive, n):
  if space.name == "nb201":
    every = np.array(list(itertools.product(range(5), repeat=6)), np.int32)
    return list(every if exhaustive else np.random.default_rng(0).permutation(every)[:n])
  return [_nasnet_from_seed(s) for s in range(n)]


def _property(space, check, *extra, exhaustive=False, n=N_BULK):
  """Runs ``check(arch, *drawn)`` under hypothesis, then over ``_bulk(space)``:
  every nb201 cell when ``exhaustive``, else ``n`` random architectures."""
  @SETTINGS
  @hypothesis.given(st.tuples(ARCHS[space.name], *extra))
  def run(args):
    check(*args)

  run()
  rng = np.random.default_rng(0)
  for arch in _bulk(space, exhaustive, n):
    check(arch, *(int(rng.integers(2**31)) for _ in extra))


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
def test_genotype_json_round_trip(space):
  def check(arch):
    text = json.dumps(space.to_genotype(arch))
    assert space.from_genotype(json.loads(text)).tolist() == arch.tolist()

  _property(space, check)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
def test_canonical_idempotent_and_id_stable(space):
  def check(arch):
    c = space.canonical(arch)
    assert c.dtype == np.int32 and c.shape == space.arch_shape
    space.validate(c)
    assert space.canonical(c).tolist() == c.tolist()
    assert space.arch_id(arch) == f"{space.name}:" + ".".join(f"{v:x}" for v in c.ravel())

  _property(space, check, n=1000)


def test_nb201_string_and_index_round_trip():
  def check(arch):
    assert NB201.from_string(NB201.to_string(arch)).tolist() == arch.tolist()
    i = NB201.index(arch)
    assert 0 <= i < 15625
    assert NB201.from_index(i).tolist() == arch.tolist()  # over all cells: a bijection

  _property(NB201, check, exhaustive=True)


def test_nb201_index_matches_benchmark_order():
  # The shipped table (nas_jax/assets) lists the benchmark's cells in index order.
  assert NB201.to_string(NB201.from_index(0)) == (
      "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+"
      "|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
  assert NB201.to_string(NB201.from_index(1)) == (
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
      "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


def test_nb201_index_from_custom_table(tmp_path):
  archs = list(itertools.product(range(5), repeat=6))[::-1]  # reversed mixed-radix order
  path = tmp_path / "order.csv.gz"
  with gzip.open(path, "wt") as f:
    f.write("index,arch,extra\n")
    for i, a in enumerate(archs):
      f.write(f"{i},{NB201.to_string(np.array(a))},0\n")
  space = type(NB201)(index_table=path)
  assert space.index([4, 4, 4, 4, 4, 4]) == 0 and space.index([0] * 6) == 15624
  assert space.from_index(1).tolist() == [4, 4, 4, 4, 4, 3]
  bad = tmp_path / "bad.csv"
  bad.write_text("index,arch\n0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")
  with pytest.raises(ValueError, match="exactly once"):
    type(NB201)(index_table=bad).index([0] * 6)
  with pytest.raises(ValueError, match="index 15625 must be an int in 0..15624"):
    NB201.from_index(15625)


# --- canonical forms: soundness against a numeric model of each cell ----------
_NB201_FN = {2: lambda v: np.tanh(1.3 * v), 3: lambda v: np.sin(2.0 * v) + v * v,
             4: lambda v: 0.7 * v + 0.1 * v ** 3}


def _nb201_value(arch, x):
  """The cell's output with a fixed scalar function per op (f(0) = 0 for every op)."""
  node = [x, 0.0 * x, 0.0 * x, 0.0 * x]
  for e, (to, frm) in enumerate(nb201_mod.EDGES):
    op = int(arch[e])
    if op == 1:
      node[to] = node[to] + node[frm]
    elif op > 1:
      node[to] = node[to] + _NB201_FN[op](node[frm])
  return node[3]


def test_nb201_canonical_computes_the_same_function():
  x = np.linspace(-1.5, 1.7, 7)

  def check(arch):
    assert np.allclose(_nb201_value(NB201.canonical(arch), x), _nb201_value(arch, x),
                       rtol=1e-9, atol=1e-12), arch

  _property(NB201, check, exhaustive=True)


def test_nb201_canonical_known_equivalences():
  conv_skip = NB201.from_string("|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|")
  conv = NB201.from_string("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|")
  assert NB201.arch_id(conv_skip) == NB201.arch_id(conv)
  a = NB201.from_string("|nor_conv_1x1~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
  b = NB201.from_string("|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|")
  assert NB201.arch_id(a) == NB201.arch_id(b)  # nodes 1 and 2 swapped
  # one conv reached twice is not two parallel convs
  shared = NB201.from_string("|nor_conv_1x1~0|+|none~0|skip_connect~1|+|none~0|skip_connect~1|skip_connect~2|")
  parallel = NB201.from_string("|none~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|nor_conv_1x1~2|")
  assert NB201.arch_id(shared) != NB201.arch_id(parallel)
  # a cell whose output is cut off from its input is the empty cell
  cut = NB201.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|")
  assert NB201.canonical(cut).tolist() == [0] * 6


def test_nb201_canonical_table_and_jax_version():
  table = nb201_mod.canonical_table()
  assert len({tuple(r) for r in table.tolist()}) == 5260
  codes = table.astype(np.int64) @ (5 ** np.arange(5, -1, -1))
  np.testing.assert_array_equal(table[codes], table)  # idempotent over all 15,625 cells
  archs = jnp.array(list(itertools.product(range(5), repeat=6)), jnp.int32)
  np.testing.assert_array_equal(jax.jit(NB201.canonical_jax)(archs), table)


_NASNET_FN = [lambda v: np.tanh(1.1 * v + 0.3), lambda v: np.sin(1.7 * v) - 0.2,
              lambda v: 0.6 * v + 0.05, lambda v: np.abs(v), lambda v: v]


def _nasnet_outputs(cell, inputs):
  """Sorted loose-end values of a cell with a fixed scalar function per op."""
  h = list(inputs)
  for r in cell:
    h.append(_NASNET_FN[r[1]](h[r[0]]) + _NASNET_FN[r[3]](h[r[2]]))
  loose = nasnet_mod.loose_ends(cell)
  return np.sort([h[2 + j] for j in np.flatnonzero(loose)])


def _relabel(cell, rng):
  """The same cell with its nodes in a random topological order and random branch order."""
  order, placed = [], set()
  while len(order) < 5:
    ready = [n for n in range(5) if n not in placed
             and all(cell[n, s] < 2 or cell[n, s] - 2 in placed for s in (0, 2))]
    n = ready[rng.integers(len(ready))]
    order.append(n)
    placed.add(n)
  new = {old: k for k, old in enumerate(order)}
  out = np.zeros_like(cell)
  for old, k in new.items():
    r = [(v if v < 2 else 2 + new[v - 2]) if s % 2 == 0 else v for s, v in enumerate(cell[old])]
    out[k] = r[2:] + r[:2] if rng.integers(2) else r
  return out


def test_nasnet_canonical_invariant_under_relabelling_and_sound():
  x = (np.array([0.3, -0.8]), np.array([1.2, 0.4]))

  def check(arch, seed):
    rng = np.random.default_rng(seed)
    other = np.stack([_relabel(arch[c], rng) for c in range(2)])
    NASNET.validate(other)
    canon = NASNET.canonical(arch)
    assert NASNET.canonical(other).tolist() == canon.tolist(), (arch, other)
    for c in range(2):
      assert np.allclose(_nasnet_outputs(canon[c], x[c]), _nasnet_outputs(arch[c], x[c]),
                         rtol=1e-12), arch

  _property(NASNET, check, st.integers(0, 2**32 - 1), n=1000)


def test_nasnet_canonical_orders_branches():
  a = np.zeros((2, 5, 4), np.int32)
  a[:, :, 0], a[:, :, 1], a[:, :, 2], a[:, :, 3] = 1, 3, 0, 2
  c = NASNET.canonical(a)
  assert c[0, 0].tolist() == [0, 2, 1, 3]
  assert (c[:, :, :2] <= c[:, :, 2:]).all()


def test_nasnet_loose_ends_numpy_and_jit():
  cell = np.array([[0, 0, 1, 0], [2, 4, 1, 2], [0, 1, 3, 3], [1, 2, 0, 0], [4, 3, 5, 4]], np.int32)
  assert nasnet_mod.loose_ends(cell).tolist() == [False, False, False, False, True]
  batch = jnp.stack([jnp.asarray(cell), jnp.zeros((5, 4), jnp.int32)])
  out = jax.jit(jax.vmap(nasnet_mod.loose_ends))(batch)
  assert out.tolist() == [[False, False, False, False, True], [True] * 5]


def test_nasnet_genotype_format():
  a = np.zeros((2, 5, 4), np.int32)
  a[0, 4] = [5, 4, 1, 0]
  g = NASNET.to_genotype(a)
  assert g["normal"][4] == [["identity", 5], ["sep_conv_3x3", 1]]
  assert g["normal_concat"] == [2, 3, 4, 6] and g["reduce_concat"] == [2, 3, 4, 5, 6]
  g["normal"][4][0][0] = "skip_connect"  # DARTS's name for identity
  del g["reduce_concat"]
  np.testing.assert_array_equal(NASNET.from_genotype(g), a)


# --- invalid input ------------------------------------------------------------
@pytest.mark.parametrize("pos", list(np.ndindex(2, 5, 4)), ids=str)
@pytest.mark.parametrize("too_high", [True, False])
def test_nasnet_rejects_every_bad_field(pos, too_high):
  a = np.zeros((2, 5, 4), np.int32)
  hi = nasnet_mod._NUM_CHOICES[pos] - 1  # pylint: disable=protected-access
  a[pos] = hi + 1 if too_high else -1
  c, i, s = pos
  cell = ("normal", "reduction")[c]
  slot = ("input0", "op0", "input1", "op1")[s]
  with pytest.raises(ValueError) as err:
    NASNET.validate(a)
  msg = str(err.value)
  assert msg.startswith(f"nasnet arch[{c}, {i}, {s}] ({cell} cell, node {i}, {slot}) = {a[pos]} "
                        f"is out of range 0..{hi}"), msg
  assert "\n" not in msg


@pytest.mark.parametrize("edge", range(6))
@pytest.mark.parametrize("value", [5, -1, 99])
def test_nb201_rejects_every_bad_field(edge, value):
  a = np.ones(6, np.int32)
  a[edge] = value
  to, frm = nb201_mod.EDGES[edge]
  with pytest.raises(ValueError, match=rf"^nb201 arch\[{edge}\] \(edge {to}<-{frm}\) = {value} "
                     r"is out of range 0..4 \(none, skip_connect"):
    NB201.validate(a)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
@pytest.mark.parametrize("bad, match", [
    ("shape", "has shape .* expected"),
    ("bool", "dtype bool; expected an integer dtype"),
    ("str", "expected an integer dtype"),
    ("frac", r"is not an integer"),
    ("nan", r"is not an integer"),
    ("ragged", "not an array|has shape"),
])
def test_rejects_bad_shape_and_dtype(space, bad, match):
  zeros = np.zeros(space.arch_shape, np.int32)
  arch = {"shape": np.zeros(space.arch_shape + (1,), np.int32),
          "bool": zeros.astype(bool),
          "str": zeros.astype(str),
          "frac": zeros + 0.5,
          "nan": zeros + np.nan,
          "ragged": [[0], [0, 1]]}[bad]
  with pytest.raises(ValueError, match=match):
    space.validate(arch)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: s.name)
def test_accepts_integral_floats_and_jax_arrays(space):
  a = np.asarray(space.sample(jax.random.key(0)))
  np.testing.assert_array_equal(space.validate(a.astype(np.float64)), a)
  np.testing.assert_array_equal(space.validate(jnp.asarray(a)), a)
  np.testing.assert_array_equal(space.validate(a.tolist()), a)


@pytest.mark.parametrize("s, match", [
    ("|foo~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'foo'"),
    ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "must be 'op~1'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 has 1 edges, expected 2"),
    ("|none~0|+|none~0|none~1|", "2 node groups"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "enclosed in '|'"),
    ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "must be 'op~0'"),
    (3, "must be a str"),
])
def test_nb201_rejects_malformed_strings(s, match):
  with pytest.raises(ValueError, match=match):
    NB201.from_string(s)


_GOOD_NB201 = NB201.to_genotype([1, 2, 3, 4, 0, 1])


@pytest.mark.parametrize("geno, match", [
    ([], "must be a dict"),
    ({}, "needs a 'cell' string or an 'edges' list"),
    ({"cell": _GOOD_NB201["cell"], "ops": 1}, "unknown key"),
    ({"edges": _GOOD_NB201["edges"][:5]}, "list of 6"),
    ({"edges": [dict(e, op="conv") for e in _GOOD_NB201["edges"]]}, "op 'conv' is unknown"),
    ({"edges": [dict(e, to=9) for e in _GOOD_NB201["edges"]]}, r"expected 1<-0"),
    ({"edges": [{"op": "none"}] * 6}, "keys 'to', 'from', 'op'"),
    ({"cell": _GOOD_NB201["cell"], "edges": NB201.to_genotype([0] * 6)["edges"]}, "different"),
])
def test_nb201_rejects_malformed_genotypes(geno, match):
  with pytest.raises(ValueError, match=match):
    NB201.from_genotype(geno)


def _nasnet_geno(**changes):
  g = NASNET.to_genotype(np.zeros((2, 5, 4), np.int32))
  for k, v in changes.items():
    if v is None:
      del g[k]
    else:
      g[k] = v
  return g


_NODES = _nasnet_geno()["normal"]


@pytest.mark.parametrize("geno, match", [
    ("x", "must be a dict"),
    (_nasnet_geno(extra=1), "unknown key"),
    (_nasnet_geno(reduce=None), "lacks 'reduce'"),
    (_nasnet_geno(normal=_NODES[:4]), "list of 5 nodes"),
    (_nasnet_geno(normal=_NODES[:4] + [[["identity", 0]]]), r"normal\[4\] must be \[\[op, input\]"),
    (_nasnet_geno(normal=_NODES[:4] + [[["identity", 0], "x"]]), r"normal\[4\]\[1\] must be \[op, input\]"),
    (_nasnet_geno(normal=_NODES[:4] + [[["conv", 0], ["identity", 0]]]), "op 'conv' is unknown"),
    (_nasnet_geno(reduce=[[["identity", 2], ["identity", 0]]] + _NODES[1:]),
     r"reduce\[0\]\[0\] input 2 is out of range 0..1"),
    (_nasnet_geno(normal=_NODES[:4] + [[["identity", 0], ["identity", 1.0]]]), "input 1.0 is out of range"),
    (_nasnet_geno(normal_concat=[2, 3]), r"normal_concat \[2, 3\] must list the nodes no other node uses"),
])
def test_nasnet_rejects_malformed_genotypes(geno, match):
  with pytest.raises(ValueError, match=match):
    NASNET.from_genotype(geno)


def test_token_and_mask_sizes_match_the_issue():
  assert (NASNET.token_length, NASNET.vocab_size) == (40, 12)
  assert (NB201.token_length, NB201.vocab_size) == (6, 6)
  mask = NASNET.token_mask()
  assert np.flatnonzero(mask[16]).tolist() == [1, 2, 3, 4, 5, 6]  # node 4, input0: 1..i+2
  assert np.flatnonzero(mask[1]).tolist() == list(range(7, 12))
  assert math.prod(NB201.arch_shape) == 6
