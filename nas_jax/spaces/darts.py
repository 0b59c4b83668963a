"""The DARTS cell space (Liu, Simonyan, Yang, "DARTS: Differentiable
Architecture Search", ICLR 2019; code: github.com/quark0/darts, ``cnn/``).

Two cells (0 = normal, 1 = reduction) of B = 4 intermediate nodes. Node ``i``
sums two branches ``op(input)``; an input is ``0`` or ``1`` for the cell inputs
(``c_{k-2}``, ``c_{k-1}``) or ``2 + j`` for an earlier node ``j < i``, so node
``i`` may use inputs ``0 .. i + 1`` (the input numbering of DARTS genotypes).
The cell output concatenates all four nodes (DARTS: ``concat = range(2, 6)``).
An architecture is ``int32[2, 4, 4]`` indexed
``[cell, node, (input0, op0, input1, op1)]`` with op ids (the DARTS
``PRIMITIVES`` order without ``none``, ``cnn/genotypes.py``)::

    OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
           "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")

Both inputs of a node may be the same state. DARTS itself never derives such
a node (it keeps two distinct incoming edges), but the space allows it, as the
ENAS micro space does: then every decision ranges over a fixed set whatever
the others are, so the token positions are independent given the mask (which
the ``SearchSpace`` protocol requires) and sampling and mutation stay uniform.

Tokens (NAO): per node ``(input0 + 1, op0 + 6, input1 + 1, op1 + 6)``, normal
cell then reduction cell, L = 32, V = 13, 0 = start/end.

Canonical form (``canonical``): the two branches of every node are ordered
(``(input, op)`` ascending), since the node sums them. Nodes are not
relabelled: the labels stay those of the genotype and of ``derive`` in the
continuous relaxation (a relabelling in topological order would be a further
true symmetry, since the output concatenates every node).

Genotype (``to_genotype``): DARTS's ``Genotype`` as JSON, e.g. for the
published DARTS (second order) cell (``PUBLISHED["DARTS_V2"]``)::

    {"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ...],  # 8 pairs: node i = pairs 2i, 2i+1
     "normal_concat": [2, 3, 4, 5],
     "reduce": [["max_pool_3x3", 0], ...], "reduce_concat": [2, 3, 4, 5]}

Example:
    >>> space = DartsSpace()
    >>> arch = space.from_genotype(PUBLISHED["DARTS_V2"])
    >>> arch.shape
    (2, 4, 4)
    >>> space.to_genotype(arch) == PUBLISHED["DARTS_V2"]
    True
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces.base import Genotype, SearchSpace, TokenKinds, cell_token_kinds
from nas_jax.spaces.nb201 import as_integer_array, uniform_ints

# DARTS cnn/genotypes.py PRIMITIVES, without 'none' (a derived cell never holds it).
OPS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                        "dil_conv_3x3", "dil_conv_5x5")
#: Accepted in genotypes as another name of ``skip_connect`` (the nasnet space's name).
OP_ALIASES = {"identity": "skip_connect"}
NUM_OPS = len(OPS)
NUM_NODES = 4  # DARTS model_search.Network(steps=4)
NUM_CELLS = 2
CONCAT = tuple(range(2, 2 + NUM_NODES))  # DARTS multiplier=4: every node is concatenated
CELL_NAMES = ("normal", "reduction")
SLOT_NAMES = ("input0", "op0", "input1", "op1")
GENOTYPE_CELLS = ("normal", "reduce")
#: First token of the input / op vocabulary ranges.
INPUT_TOKEN0 = 1
OP_TOKEN0 = INPUT_TOKEN0 + NUM_NODES + 1  # 6: inputs take values 0..4
VOCAB_SIZE = OP_TOKEN0 + NUM_OPS  # 13


def _genotype(normal, reduce) -> Genotype:
  return {"normal": [list(p) for p in normal], "normal_concat": list(CONCAT),
          "reduce": [list(p) for p in reduce], "reduce_concat": list(CONCAT)}


#: The cells published by DARTS (paper, Fig. 4-5; ``cnn/genotypes.py`` of the
#: authors' code): ``DARTS_V1`` from the first-order search, ``DARTS_V2`` from
#: the second-order one (the cell of the paper's CIFAR-10 result, 2.76% test
#: error with cutout, 3.3 M parameters at C=36, 20 cells).
PUBLISHED: dict[str, Genotype] = {
    "DARTS_V1": _genotype(
        normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
                ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)]),
    "DARTS_V2": _genotype(
        normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]),
}


def _upper_bounds() -> np.ndarray:
  """int32[2, 4, 4]: number of valid values of every decision."""
  n = np.zeros((NUM_CELLS, NUM_NODES, 4), np.int32)
  n[:, :, 0] = n[:, :, 2] = np.arange(NUM_NODES) + 2
  n[:, :, 1] = n[:, :, 3] = NUM_OPS
  return n


NUM_CHOICES = _upper_bounds()
_TOKEN_OFFSET = np.array([INPUT_TOKEN0, OP_TOKEN0, INPUT_TOKEN0, OP_TOKEN0], np.int32)


def _describe(pos: tuple[int, int, int]) -> str:
  c, i, s = pos
  return f"{CELL_NAMES[c]} cell, node {i}, {SLOT_NAMES[s]}"


class DartsSpace(SearchSpace):
  """The DARTS cell space: ``int32[2, 4, 4]`` (see the module docstring).

  Example:
    >>> space = DartsSpace()
    >>> space.to_tokens(space.sample(jax.random.key(1))).shape
    (32,)
  """

  name = "darts"
  default_evaluator = "scratch"  # no benchmark table and no weight-sharing supernet (yet)
  published = PUBLISHED  # name -> genotype of the DARTS paper's cells
  arch_shape = (NUM_CELLS, NUM_NODES, 4)
  token_length = NUM_CELLS * NUM_NODES * 4
  vocab_size = VOCAB_SIZE
  ops = OPS
  num_nodes = NUM_NODES

  def __eq__(self, other):
    return type(other) is type(self)

  def __hash__(self):
    return hash(type(self).__name__)

  def __repr__(self):
    return "DartsSpace()"

  # --- sampling -----------------------------------------------------------
  def sample(self, key: jax.Array) -> jax.Array:
    """Every decision uniform over its valid values; jittable and vmappable.

    Example:
      >>> int(DartsSpace().sample(jax.random.key(0))[0, 0, 0]) in (0, 1)
      True
    """
    return uniform_ints(key, self.arch_shape, NUM_CHOICES)

  def mutate(self, key: jax.Array, arch: jax.Array) -> jax.Array:
    """Changes one uniformly chosen decision (of 32) to a different valid value; jittable.

    Example:
      >>> s = DartsSpace()
      >>> a = s.sample(jax.random.key(0))
      >>> int((s.mutate(jax.random.key(1), a) != a).sum())
      1
    """
    arch = jnp.asarray(arch, jnp.int32)
    flat = arch.reshape(-1)
    n = jnp.asarray(NUM_CHOICES.reshape(-1))
    bits = jax.random.bits(key, (2,), jnp.uint32)
    pos = (bits[0] % flat.shape[0]).astype(jnp.int32)
    # Every decision has >= 2 values (node 0's inputs: exactly 2), so a different value exists.
    shift = 1 + (bits[1] % (n[pos] - 1).astype(jnp.uint32)).astype(jnp.int32)
    return flat.at[pos].set((flat[pos] + shift) % n[pos]).reshape(self.arch_shape)

  # --- checking and identity ----------------------------------------------
  def validate(self, arch: Any) -> np.ndarray:
    """int32 numpy copy of ``arch``; ``ValueError`` naming the first bad field.

    Example:
      >>> a = np.zeros((2, 4, 4), np.int32); a[1, 2, 2] = 5
      >>> DartsSpace().validate(a)
      Traceback (most recent call last):
      ValueError: darts arch[1, 2, 2] (reduction cell, node 2, input1) = 5 is out of range 0..3 (cell inputs 0, 1; earlier nodes 2..3)
    """
    a = as_integer_array(arch, self.arch_shape, self.name)
    bad = np.argwhere((a < 0) | (a >= NUM_CHOICES))
    if bad.size:
      pos = tuple(int(v) for v in bad[0])
      c, i, s = pos
      hi = int(NUM_CHOICES[pos]) - 1
      if s % 2 == 0:
        allowed = "cell inputs 0, 1" + ("" if i == 0 else f"; earlier nodes 2..{hi}")
      else:
        allowed = ", ".join(f"{k} {name}" for k, name in enumerate(OPS))
      raise ValueError(f"darts arch[{c}, {i}, {s}] ({_describe(pos)}) = {int(a[pos])} is out of "
                       f"range 0..{hi} ({allowed})")
    return a

  def canonical(self, arch: Any) -> np.ndarray:
    """The two ``(input, op)`` branches of every node in ascending order.

    Example:
      >>> s = DartsSpace()
      >>> a = s.validate(s.sample(jax.random.key(0)))
      >>> b = a[:, :, [2, 3, 0, 1]]  # every node's branches swapped
      >>> bool((s.canonical(a) == s.canonical(b)).all())
      True
    """
    a = self.validate(arch)
    first, second = a[..., 0:2], a[..., 2:4]
    # Lexicographic (input, op) order of the two branches.
    swap = (first[..., 0] > second[..., 0]) | ((first[..., 0] == second[..., 0]) & (first[..., 1] > second[..., 1]))
    lo = np.where(swap[..., None], second, first)
    hi = np.where(swap[..., None], first, second)
    return np.concatenate([lo, hi], axis=-1).astype(np.int32)

  # --- readable form --------------------------------------------------------
  def to_genotype(self, arch: Any) -> Genotype:
    """DARTS's ``Genotype`` as JSON: 8 ``[op, input]`` pairs per cell and the concat lists.

    Example:
      >>> g = DartsSpace().to_genotype(np.zeros((2, 4, 4), np.int32))
      >>> g["normal"][:2], g["normal_concat"]
      ([['max_pool_3x3', 0], ['max_pool_3x3', 0]], [2, 3, 4, 5])
    """
    a = self.validate(arch)
    out: Genotype = {}
    for c, name in enumerate(GENOTYPE_CELLS):
      out[name] = [[OPS[int(r[2 * b + 1])], int(r[2 * b])] for r in a[c] for b in range(2)]
      out[name + "_concat"] = list(CONCAT)
    return out

  def from_genotype(self, genotype: Genotype) -> np.ndarray:
    """Inverse of ``to_genotype``; ``ValueError`` on malformed input.

    Accepts a dict (JSON) or DARTS's ``Genotype`` namedtuple; pairs may be
    lists or tuples; ``*_concat`` is optional and, when given, must be
    ``[2, 3, 4, 5]``; ``identity`` is accepted as a name of ``skip_connect``.

    Example:
      >>> s = DartsSpace()
      >>> a = s.validate(s.sample(jax.random.key(3)))
      >>> bool((s.from_genotype(s.to_genotype(a)) == a).all())
      True
    """
    if hasattr(genotype, "_asdict"):  # DARTS's namedtuple
      genotype = dict(genotype._asdict())
    if not isinstance(genotype, dict):
      raise ValueError(f"darts genotype must be a dict, got {type(genotype).__name__}")
    allowed = set(GENOTYPE_CELLS) | {n + "_concat" for n in GENOTYPE_CELLS}
    unknown = set(genotype) - allowed
    if unknown:
      raise ValueError(f"darts genotype has unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    a = np.zeros(self.arch_shape, np.int32)
    n_pairs = 2 * NUM_NODES
    for c, name in enumerate(GENOTYPE_CELLS):
      if name not in genotype:
        raise ValueError(f"darts genotype lacks {name!r} (a list of {n_pairs} [op, input] pairs)")
      pairs = genotype[name]
      if not isinstance(pairs, (list, tuple)) or len(pairs) != n_pairs:
        raise ValueError(f"darts genotype {name!r} must be a list of {n_pairs} [op, input] pairs "
                         f"(node i = pairs 2i, 2i+1), got {pairs!r}")
      for k, pair in enumerate(pairs):
        i, b = divmod(k, 2)
        where = f"darts genotype {name}[{k}] (node {i})"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
          raise ValueError(f"{where} must be [op, input], got {pair!r}")
        op, inp = pair
        op = OP_ALIASES.get(op, op)
        if op not in OPS:
          hint = " ('none' is a relaxation op only)" if op == "none" else ""
          raise ValueError(f"{where} op {pair[0]!r} is unknown{hint}; choose one of {list(OPS)}")
        if isinstance(inp, bool) or not isinstance(inp, (int, np.integer)) or not 0 <= inp <= i + 1:
          raise ValueError(f"{where} input {inp!r} is out of range 0..{i + 1} (cell inputs 0, 1"
                           + ("" if i == 0 else f"; earlier nodes 2..{i + 1}") + ")")
        a[c, i, 2 * b] = int(inp)
        a[c, i, 2 * b + 1] = OPS.index(op)
      key = name + "_concat"
      if key in genotype:
        given = genotype[key]
        try:
          ok = sorted(int(v) for v in given) == list(CONCAT)
        except (TypeError, ValueError):
          ok = False
        if not ok:
          raise ValueError(f"darts genotype {key} {given!r} must be {list(CONCAT)} (every node is "
                           f"concatenated in this space)")
    return a

  # --- token view -----------------------------------------------------------
  def to_tokens(self, arch: jax.Array) -> jax.Array:
    """int32[32]: ``(input + 1, op + 6)`` per branch; jnp-traceable."""
    arch = jnp.asarray(arch, jnp.int32)
    return (arch + jnp.asarray(_TOKEN_OFFSET)).reshape(arch.shape[:-3] + (self.token_length,))

  def from_tokens(self, tokens: jax.Array) -> jax.Array:
    """Inverse of ``to_tokens``; jnp-traceable."""
    tokens = jnp.asarray(tokens, jnp.int32)
    return tokens.reshape(tokens.shape[:-1] + self.arch_shape) - jnp.asarray(_TOKEN_OFFSET)

  def token_mask(self) -> np.ndarray:
    """bool[32, 13]: input positions of node i allow 1..i+2, op positions 6..12."""
    lo = np.broadcast_to(_TOKEN_OFFSET, self.arch_shape).reshape(-1)
    hi = lo + NUM_CHOICES.reshape(-1)  # exclusive
    v = np.arange(self.vocab_size)
    return (v >= lo[:, None]) & (v < hi[:, None])

  def token_kinds(self) -> TokenKinds:
    """Input positions point at the cell's inputs or earlier nodes (``cell_token_kinds``)."""
    return cell_token_kinds(self.token_mask(), NUM_CELLS, NUM_NODES, INPUT_TOKEN0)

  def augment_tokens(self, key: jax.Array, tokens: jax.Array) -> jax.Array:
    """NAO's symmetric swap: each node's two branches swapped with probability 0.5.

    Works on ``int32[..., 32]``; jittable. The result encodes the same
    architecture (same ``canonical``).

    Example:
      >>> s = DartsSpace()
      >>> t = s.to_tokens(s.sample(jax.random.key(0)))
      >>> bool((s.canonical(s.from_tokens(s.augment_tokens(jax.random.key(1), t)))
      ...       == s.canonical(s.from_tokens(t))).all())
      True
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    lead = tokens.shape[:-1]
    t = tokens.reshape(lead + (NUM_CELLS, NUM_NODES, 2, 2))
    swap = uniform_ints(key, lead + (NUM_CELLS, NUM_NODES), 2) == 1
    t = jnp.where(swap[..., None, None], t[..., ::-1, :], t)
    return t.reshape(tokens.shape)
