"""The NASNet micro cell space of ENAS, NAO and DARTS.

Two cells (0 = normal, 1 = reduction) of B = 5 nodes. Node ``i`` sums two
branches ``op(input)``; an input is ``0`` or ``1`` for the cell inputs
(``c_{k-2}``, ``c_{k-1}``) or ``2 + j`` for an earlier node ``j < i``, so node
``i`` may use inputs ``0 .. i + 1``. The cell output concatenates the *loose
ends*: the nodes that no other node of the cell uses. An architecture is
``int32[2, 5, 4]`` indexed ``[cell, node, (input0, op0, input1, op1)]`` with
op ids::

    OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")

Tokens (NAO): per node ``(input0 + 1, op0 + 7, input1 + 1, op1 + 7)``, normal
cell then reduction cell, L = 40, V = 12, 0 = start/end.

Canonical form (``canonical``) of each cell:

1. The two branches of every node are ordered (``(input, op)`` ascending): the
   node sums them, so their order is irrelevant (NAO's symmetric swap).
2. The nodes are relabelled in the topological order whose sequence of
   relabelled nodes is lexicographically smallest (ties between identical ready
   nodes are explored exhaustively, so the result does not depend on the
   original labels). Relabelling permutes the channel blocks of the
   concatenated output, which the next cell's 1x1 preprocessing absorbs.

Not canonicalised (these are different parametrisations, or equal only up to a
scale): two nodes that compute the same expression are kept apart, an
``identity`` branch is not inlined, and ``avg_pool(x) + avg_pool(x)`` is not
reduced.

Example:
    >>> space = NasNetSpace()
    >>> arch = space.sample(jax.random.key(0))
    >>> space.validate(arch).shape
    (2, 5, 4)
    >>> g = space.to_genotype(arch)
    >>> bool((space.from_genotype(g) == space.validate(arch)).all())
    True
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces.base import Genotype, SearchSpace, TokenKinds, cell_token_kinds
from nas_jax.spaces.nb201 import as_integer_array, uniform_ints

OPS: tuple[str, ...] = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")
#: Accepted in genotypes as another name of ``identity`` (DARTS's name).
OP_ALIASES = {"skip_connect": "identity"}
NUM_OPS = len(OPS)
NUM_NODES = 5
NUM_CELLS = 2
CELL_NAMES = ("normal", "reduction")
SLOT_NAMES = ("input0", "op0", "input1", "op1")
_GENO_CELLS = ("normal", "reduce")
#: First token of the input / op vocabulary ranges.
INPUT_TOKEN0 = 1
OP_TOKEN0 = 7
VOCAB_SIZE = OP_TOKEN0 + NUM_OPS  # 12


def _upper_bounds() -> np.ndarray:
  """int32[2, 5, 4]: number of valid values of every decision."""
  n = np.zeros((NUM_CELLS, NUM_NODES, 4), np.int32)
  n[:, :, 0] = n[:, :, 2] = np.arange(NUM_NODES) + 2
  n[:, :, 1] = n[:, :, 3] = NUM_OPS
  return n


_NUM_CHOICES = _upper_bounds()
_TOKEN_OFFSET = np.array([INPUT_TOKEN0, OP_TOKEN0, INPUT_TOKEN0, OP_TOKEN0], np.int32)


def loose_ends(arch_cell: Any) -> jax.Array:
  """bool[5]: the nodes of one cell that no other node uses (the cell output).

  Works on numpy and traced jnp arrays (usable under ``jit``/``vmap``), with
  any leading batch dimensions.

  Args:
    arch_cell: int32[..., 5, 4] ``(input0, op0, input1, op1)`` per node.

  Returns:
    bool[..., 5], True for the nodes concatenated into the cell output: a jnp
    array for jax input, numpy otherwise.

  Example:
    >>> cell = np.array([[0, 0, 1, 0], [2, 4, 1, 2], [0, 1, 3, 3], [1, 2, 0, 0], [4, 3, 5, 4]])
    >>> loose_ends(cell).tolist()
    [False, False, False, False, True]
  """
  xp = jnp if isinstance(arch_cell, jax.Array) else np
  cell = xp.asarray(arch_cell)
  inputs = cell[..., :, ::2]  # [..., 5, 2]: input0, input1
  node_ids = xp.arange(NUM_NODES) + 2
  used = (inputs[..., :, :, None] == node_ids).any(axis=(-3, -2))
  return ~used


def _describe(pos: tuple[int, int, int]) -> str:
  c, i, s = pos
  return f"{CELL_NAMES[c]} cell, node {i}, {SLOT_NAMES[s]}"


def _canonical_cell(cell: np.ndarray) -> np.ndarray:
  """Canonical form of one int32[5, 4] cell (branch order and node labels)."""
  branches = [sorted([(int(r[0]), int(r[1])), (int(r[2]), int(r[3]))]) for r in cell]
  best: list[tuple] = []

  def relabel(node: int, new_label: dict[int, int]) -> tuple:
    pair = sorted((inp if inp < 2 else 2 + new_label[inp - 2], op) for inp, op in branches[node])
    return tuple(pair)

  def search(placed: dict[int, int], seq: list[tuple]) -> None:
    nonlocal best
    if best and seq > best[:len(seq)]:  # already worse than the best sequence
      return
    if len(placed) == NUM_NODES:
      if not best or seq < best:
        best = list(seq)
      return
    ready = [n for n in range(NUM_NODES) if n not in placed
             and all(inp < 2 or inp - 2 in placed for inp, _ in branches[n])]
    contents = {n: relabel(n, placed) for n in ready}
    low = min(contents.values())
    for n in ready:
      if contents[n] == low:
        search({**placed, n: len(placed)}, seq + [low])

  search({}, [])
  return np.array([[b[0][0], b[0][1], b[1][0], b[1][1]] for b in best], np.int32)


def _genotype_of_arc(arc: str) -> Genotype:
  """A genotype from the authors' 40-number arc string (ENAS and NAO code).

  Both codes write a cell as 5 nodes of ``x_id x_op y_id y_op`` with the op ids
  of ``OPS`` (0 sep 3x3, 1 sep 5x5, 2 avg pool, 3 max pool, 4 identity) and
  inputs 0, 1 = the two previous cells, 2 + j = node j; normal cell first.
  """
  v = [int(t) for t in arc.split()]
  cells = [v[:20], v[20:]]
  return {name: [[[OPS[c[4 * i + 1]], c[4 * i]], [OPS[c[4 * i + 3]], c[4 * i + 2]]]
                 for i in range(NUM_NODES)]
          for name, c in zip(_GENO_CELLS, cells)}


#: Published cells of this space, in the authors' arc notation:
#: ``NAONet-B``: the cell NAO-WS found (Luo et al. 2018, table 1 "NAONet-WS";
#: NAO_pytorch ``NAO_V1/train_NAONet_B_36_cifar10.sh``), 3.53 % CIFAR-10 error
#: at C=36. ``ENAS``: the micro cell ENAS found (Pham et al. 2018, fig. 4;
#: enas ``scripts/cifar10_micro_final.sh``), 2.89 % error with cutout.
PUBLISHED: dict[str, Genotype] = {
    "NAONet-B": _genotype_of_arc("0 1 0 2 0 1 2 2 1 3 0 2 4 0 1 3 2 1 0 3 "
                                 "1 1 1 0 2 1 2 4 1 0 2 3 3 1 2 2 0 2 0 2"),
    "ENAS": _genotype_of_arc("0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 "
                             "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1"),
}


class NasNetSpace(SearchSpace):
  """The ENAS/NAO/DARTS micro space: ``int32[2, 5, 4]``.

  Example:
    >>> space = NasNetSpace()
    >>> tokens = space.to_tokens(space.sample(jax.random.key(1)))
    >>> tokens.shape
    (40,)
  """

  name = "nasnet"
  default_evaluator = "supernet"
  arch_shape = (NUM_CELLS, NUM_NODES, 4)
  token_length = NUM_CELLS * NUM_NODES * 4
  vocab_size = VOCAB_SIZE
  ops = OPS
  num_nodes = NUM_NODES
  published = PUBLISHED  # name -> genotype of cells from the papers

  def __eq__(self, other):
    return type(other) is type(self)

  def __hash__(self):
    return hash(type(self).__name__)

  def __repr__(self):
    return "NasNetSpace()"

  # --- sampling -----------------------------------------------------------
  def sample(self, key: jax.Array) -> jax.Array:
    """Every decision uniform over its valid values; jittable and vmappable.

    Example:
      >>> int(NasNetSpace().sample(jax.random.key(0))[0, 0, 0]) in (0, 1)
      True
    """
    return uniform_ints(key, self.arch_shape, _NUM_CHOICES)

  def mutate(self, key: jax.Array, arch: jax.Array) -> jax.Array:
    """Changes one uniformly chosen decision (of 40) to a different valid value.

    Example:
      >>> a = NasNetSpace().sample(jax.random.key(0))
      >>> int((NasNetSpace().mutate(jax.random.key(1), a) != a).sum())
      1
    """
    arch = jnp.asarray(arch, jnp.int32)
    flat = arch.reshape(-1)
    n = jnp.asarray(_NUM_CHOICES.reshape(-1))
    bits = jax.random.bits(key, (2,), jnp.uint32)
    pos = (bits[0] % flat.shape[0]).astype(jnp.int32)
    shift = 1 + (bits[1] % (n[pos] - 1).astype(jnp.uint32)).astype(jnp.int32)
    return flat.at[pos].set((flat[pos] + shift) % n[pos]).reshape(self.arch_shape)

  # --- checking and identity ----------------------------------------------
  def validate(self, arch: Any) -> np.ndarray:
    """int32 numpy copy of ``arch``; ``ValueError`` naming the first bad field.

    Example:
      >>> a = np.zeros((2, 5, 4), np.int32); a[1, 3, 2] = 7
      >>> NasNetSpace().validate(a)
      Traceback (most recent call last):
      ValueError: nasnet arch[1, 3, 2] (reduction cell, node 3, input1) = 7 is out of range 0..4 (cell inputs 0, 1; earlier nodes 2..4)
    """
    a = as_integer_array(arch, self.arch_shape, self.name)
    bad = np.argwhere((a < 0) | (a >= _NUM_CHOICES))
    if bad.size:
      pos = tuple(int(v) for v in bad[0])
      c, i, s = pos
      hi = int(_NUM_CHOICES[pos]) - 1
      if s % 2 == 0:
        allowed = "cell inputs 0, 1" + ("" if i == 0 else f"; earlier nodes 2..{hi}")
      else:
        allowed = ", ".join(OPS)
      raise ValueError(f"nasnet arch[{c}, {i}, {s}] ({_describe(pos)}) = {int(a[pos])} is out of "
                       f"range 0..{hi} ({allowed})")
    return a

  def canonical(self, arch: Any) -> np.ndarray:
    """Branches ordered and nodes relabelled canonically (see module docstring).

    Example:
      >>> s = NasNetSpace()
      >>> a = s.validate(s.sample(jax.random.key(0)))
      >>> b = a.copy(); b[:, :, [0, 1, 2, 3]] = a[:, :, [2, 3, 0, 1]]  # swap every node's branches
      >>> bool((s.canonical(a) == s.canonical(b)).all())
      True
    """
    a = self.validate(arch)
    return np.stack([_canonical_cell(a[c]) for c in range(NUM_CELLS)])

  # --- readable form --------------------------------------------------------
  def to_genotype(self, arch: Any) -> Genotype:
    """DARTS-like genotype: ``(op name, input)`` pairs per node and the concat lists.

    Example:
      >>> g = NasNetSpace().to_genotype(np.zeros((2, 5, 4), np.int32))
      >>> g["normal"][0], g["normal_concat"]
      ([['sep_conv_3x3', 0], ['sep_conv_3x3', 0]], [2, 3, 4, 5, 6])
    """
    a = self.validate(arch)
    out: Genotype = {}
    for c, name in enumerate(_GENO_CELLS):
      out[name] = [[[OPS[r[1]], int(r[0])], [OPS[r[3]], int(r[2])]] for r in a[c]]
      out[name + "_concat"] = [int(j) + 2 for j in np.flatnonzero(loose_ends(a[c]))]
    return out

  def from_genotype(self, genotype: Genotype) -> np.ndarray:
    """Inverse of ``to_genotype``; ``ValueError`` on malformed input.

    ``*_concat`` lists are optional; when given they must equal the loose ends.
    ``skip_connect`` is accepted as a name of ``identity``.

    Example:
      >>> s = NasNetSpace()
      >>> a = s.validate(s.sample(jax.random.key(3)))
      >>> bool((s.from_genotype(s.to_genotype(a)) == a).all())
      True
    """
    if not isinstance(genotype, dict):
      raise ValueError(f"nasnet genotype must be a dict, got {type(genotype).__name__}")
    allowed = set(_GENO_CELLS) | {n + "_concat" for n in _GENO_CELLS}
    unknown = set(genotype) - allowed
    if unknown:
      raise ValueError(f"nasnet genotype has unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    a = np.zeros(self.arch_shape, np.int32)
    for c, name in enumerate(_GENO_CELLS):
      if name not in genotype:
        raise ValueError(f"nasnet genotype lacks {name!r} (a list of {NUM_NODES} nodes)")
      nodes = genotype[name]
      if not isinstance(nodes, (list, tuple)) or len(nodes) != NUM_NODES:
        raise ValueError(f"nasnet genotype {name!r} must be a list of {NUM_NODES} nodes, "
                         f"each [[op, input], [op, input]]")
      for i, node in enumerate(nodes):
        if not isinstance(node, (list, tuple)) or len(node) != 2:
          raise ValueError(f"nasnet genotype {name}[{i}] must be [[op, input], [op, input]], got {node!r}")
        for b, branch in enumerate(node):
          where = f"nasnet genotype {name}[{i}][{b}]"
          if not isinstance(branch, (list, tuple)) or len(branch) != 2:
            raise ValueError(f"{where} must be [op, input], got {branch!r}")
          op, inp = branch
          op = OP_ALIASES.get(op, op)
          if op not in OPS:
            raise ValueError(f"{where} op {branch[0]!r} is unknown; choose one of {list(OPS)}")
          if isinstance(inp, bool) or not isinstance(inp, (int, np.integer)) or not 0 <= inp <= i + 1:
            raise ValueError(f"{where} input {inp!r} is out of range 0..{i + 1} (cell inputs 0, 1; "
                             f"earlier nodes 2..{i + 1})")
          a[c, i, 2 * b] = int(inp)
          a[c, i, 2 * b + 1] = OPS.index(op)
      key = name + "_concat"
      if key in genotype:
        expected = [int(j) + 2 for j in np.flatnonzero(loose_ends(a[c]))]
        given = genotype[key]
        if not isinstance(given, (list, tuple)) or sorted(given) != expected:
          raise ValueError(f"nasnet genotype {key} {given!r} must list the nodes no other node uses: "
                           f"{expected}")
    return a

  # --- token view -----------------------------------------------------------
  def to_tokens(self, arch: jax.Array) -> jax.Array:
    """int32[40]: ``(input + 1, op + 7)`` per branch; jnp-traceable."""
    arch = jnp.asarray(arch, jnp.int32)
    return (arch + jnp.asarray(_TOKEN_OFFSET)).reshape(arch.shape[:-3] + (self.token_length,))

  def from_tokens(self, tokens: jax.Array) -> jax.Array:
    """Inverse of ``to_tokens``; jnp-traceable."""
    tokens = jnp.asarray(tokens, jnp.int32)
    return tokens.reshape(tokens.shape[:-1] + self.arch_shape) - jnp.asarray(_TOKEN_OFFSET)

  def token_mask(self) -> np.ndarray:
    """bool[40, 12]: input positions of node i allow 1..i+2, op positions 7..11."""
    lo = np.broadcast_to(_TOKEN_OFFSET, self.arch_shape).reshape(-1)
    hi = lo + _NUM_CHOICES.reshape(-1)  # exclusive
    v = np.arange(self.vocab_size)
    return (v >= lo[:, None]) & (v < hi[:, None])

  def token_kinds(self) -> TokenKinds:
    """Input positions point at the cell's inputs or earlier nodes (``cell_token_kinds``)."""
    return cell_token_kinds(self.token_mask(), NUM_CELLS, NUM_NODES, INPUT_TOKEN0)

  def augment_tokens(self, key: jax.Array, tokens: jax.Array) -> jax.Array:
    """NAO's symmetric swap: each node's two branches swapped with probability 0.5.

    Works on ``int32[..., 40]``; jittable. The result encodes the same
    architecture.

    Example:
      >>> s = NasNetSpace()
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
