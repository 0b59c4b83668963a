"""The recurrent-cell space of ENAS (Pham et al. 2018), also searched by DARTS.

A cell maps ``(x_t, h_{t-1})`` to ``h_t`` through ``N`` nodes. Node 0 reads
``x_t`` and ``h_{t-1}``; every node ``i > 0`` reads exactly one earlier node
``j < i``; every node applies one activation among::

    ACTIVATIONS = ("tanh", "relu", "identity", "sigmoid")   # ENAS's ids 0..3

inside a highway update (see ``nas_jax.networks.rnn``). The nodes form a tree
rooted at node 0. The cell output (which is also the next hidden state) is the
average of a set of nodes fixed by the space's ``output`` rule:

* ``"loose_ends"`` (default, ENAS ``ptb_enas_child.py``: the nodes that no
  other node reads are averaged), or
* ``"mean"`` (DARTS ``rnn/model.py``: every node but node 0 is averaged; this
  is the rule of DARTS's continuous relaxation, where loose ends are not
  defined).

Number of nodes: ENAS searches 12 (``scripts/ptb_search.sh``,
``--child_rhn_depth=12``, node 0 included); DARTS 8 after a fixed ``tanh``
node 0 (``rnn/genotypes.py``, ``STEPS = 8``), i.e. ``num_nodes=9`` here. The
default is ENAS's: ``RNNSpace()`` is ``RNNSpace(num_nodes=12,
output="loose_ends")``; ``RNNSpace.darts()`` is ``RNNSpace(9, "mean")``.

An architecture is ``int32[N, 2]`` indexed ``[node, (input, activation)]``;
node 0's input is always 0 (it has no choice: it reads ``x_t, h_{t-1}``) and
node 1's input is always 0 (its only earlier node).

Tokens (ENAS's controller order): ``act_0`` then ``(input_i, act_i)`` for
``i = 1 .. N-1``, L = 2N - 1; an input ``j`` is token ``j + 1`` (1 .. N-1), an
activation ``a`` is token ``N + a``; V = N + 4, 0 = start/end.

Canonical form (``canonical``): relabelling the nodes in any order that keeps
every node after the node it reads computes the same function (the weights are
permuted with the labels), under either output rule. The representative labels
the tree in pre-order, visiting each node's children in the order of their
subtrees' canonical encodings (activation, then the sorted encodings of its
children); isomorphic trees therefore get the same array. Not canonicalised:
two sibling subtrees with the same shape are different parametrisations, and
an ``identity`` node is still a gated (parametrised) update.

Published cells as data (``PUBLISHED``, ``published(name)``):

* ``"darts_v2"``, ``"darts_v1"``: DARTS's second- and first-order PTB cells
  (``rnn/genotypes.py``; ``DARTS = DARTS_V2``), in ``RNNSpace.darts()``.
* ``"enas"``: the ENAS PTB cell as transcribed in DARTS's ``rnn/genotypes.py``
  (concat = its loose ends), in ``RNNSpace()``.
* ``"enas_ptb_final"``: the ``fixed_arc`` of ENAS's ``scripts/ptb_final.sh``
  (``0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1``), in ``RNNSpace()``.

Example:
    >>> space = RNNSpace()
    >>> arch = space.sample(jax.random.key(0))
    >>> space.validate(arch).shape
    (12, 2)
    >>> space.to_tokens(arch).shape
    (23,)
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces.base import Genotype, SearchSpace, TokenKinds
from nas_jax.spaces.nb201 import as_integer_array, uniform_ints

#: Activations in ENAS's id order (``ptb_enas_child.py``: 0 tanh, 1 relu, 2 identity, 3 sigmoid).
ACTIVATIONS: tuple[str, ...] = ("tanh", "relu", "identity", "sigmoid")
NUM_ACTIVATIONS = len(ACTIVATIONS)
#: ENAS: ``--child_rhn_depth=12`` in ``scripts/ptb_search.sh`` and ``ptb_final.sh``.
ENAS_NUM_NODES = 12
#: DARTS: node 0 plus ``STEPS = 8`` nodes (``rnn/genotypes.py``).
DARTS_NUM_NODES = 9
OUTPUT_RULES = ("loose_ends", "mean")
SLOT_NAMES = ("input", "activation")


def output_nodes(arch: Any, output: str = "loose_ends") -> tuple[int, ...]:
  """The nodes a cell averages into its output (numpy / concrete ``arch``).

  Args:
    arch: int[N, 2] ``(input, activation)`` per node.
    output: ``"loose_ends"`` (nodes no other node reads; ENAS) or ``"mean"``
      (nodes 1 .. N-1; DARTS).

  Returns:
    Sorted node ids.

  Example:
    >>> output_nodes([[0, 0], [0, 1], [1, 0], [1, 3]])
    (2, 3)
    >>> output_nodes([[0, 0], [0, 1], [1, 0], [1, 3]], "mean")
    (1, 2, 3)
  """
  a = np.asarray(arch)
  n = a.shape[0]
  if output == "mean":
    return tuple(range(1, n))
  if output != "loose_ends":
    raise ValueError(f"output rule {output!r} is unknown; choose one of {list(OUTPUT_RULES)}")
  used = set(int(j) for j in a[1:, 0])
  return tuple(i for i in range(n) if i not in used)


def _canonical_tree(a: np.ndarray) -> np.ndarray:
  """Pre-order relabelling with children sorted by subtree encoding."""
  n = a.shape[0]
  children: list[list[int]] = [[] for _ in range(n)]
  for i in range(1, n):
    children[int(a[i, 0])].append(i)
  code: list[Any] = [None] * n
  for i in reversed(range(n)):  # a node's children have larger ids
    code[i] = (int(a[i, 1]), tuple(sorted(code[c] for c in children[i])))
  order: list[int] = []
  stack = [0]
  while stack:
    i = stack.pop()
    order.append(i)
    # push in reverse so that the smallest encoding is visited first
    stack.extend(sorted(children[i], key=lambda c: code[c], reverse=True))
  new = {old: k for k, old in enumerate(order)}
  out = np.zeros_like(a)
  for old in order:
    out[new[old]] = (new[int(a[old, 0])] if old else 0, a[old, 1])
  return out


class RNNSpace(SearchSpace):
  """ENAS's recurrent cell space: ``int32[num_nodes, 2]`` (see module docstring).

  Args:
    num_nodes: N, nodes per cell including node 0 (>= 2). Default 12 (ENAS).
    output: ``"loose_ends"`` (ENAS, default) or ``"mean"`` (DARTS).

  Example:
    >>> s = RNNSpace()
    >>> s.token_length, s.vocab_size
    (23, 16)
    >>> RNNSpace.darts()
    RNNSpace(num_nodes=9, output='mean')
  """

  name = "rnn"
  default_evaluator = "scratch"
  activations = ACTIVATIONS

  def __init__(self, num_nodes: int = ENAS_NUM_NODES, output: str = "loose_ends"):
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)) or num_nodes < 2:
      raise ValueError(f"rnn num_nodes={num_nodes!r}: must be an int >= 2 (ENAS 12, DARTS 9)")
    if output not in OUTPUT_RULES:
      raise ValueError(f"rnn output={output!r}: choose one of {list(OUTPUT_RULES)}")
    self.num_nodes = int(num_nodes)
    self.output = output
    n = self.num_nodes
    self.arch_shape = (n, 2)
    self.token_length = 2 * n - 1
    self.vocab_size = n + NUM_ACTIVATIONS
    choices = np.zeros((n, 2), np.int32)
    choices[:, 0] = np.maximum(np.arange(n), 1)  # node i reads one of 0..i-1; node 0 has one "choice"
    choices[:, 1] = NUM_ACTIVATIONS
    self._num_choices = choices
    # Decisions with more than one value (node 0's and node 1's inputs have one).
    self._mutable = np.flatnonzero(choices.reshape(-1) > 1).astype(np.int32)
    # Token position t -> flat arch position; offsets per position.
    pos = [1] + [p for i in range(1, n) for p in (2 * i, 2 * i + 1)]
    self._token_pos = np.array(pos, np.int32)
    self._token_offset = np.where(self._token_pos % 2 == 0, 1, n).astype(np.int32)

  @classmethod
  def darts(cls) -> "RNNSpace":
    """DARTS's variant: 9 nodes (node 0 + STEPS = 8), output = mean of nodes 1..8."""
    return cls(DARTS_NUM_NODES, "mean")

  def __eq__(self, other):
    return type(other) is type(self) and (other.num_nodes, other.output) == (self.num_nodes, self.output)

  def __hash__(self):
    return hash((type(self).__name__, self.num_nodes, self.output))

  def __repr__(self):
    return f"RNNSpace(num_nodes={self.num_nodes}, output={self.output!r})"

  # --- sampling -----------------------------------------------------------
  def sample(self, key: jax.Array) -> jax.Array:
    """Every decision uniform over its valid values; jittable and vmappable.

    Example:
      >>> a = RNNSpace().sample(jax.random.key(0))
      >>> int(a[0, 0]), int(a[1, 0])
      (0, 0)
    """
    return uniform_ints(key, self.arch_shape, self._num_choices)

  def mutate(self, key: jax.Array, arch: jax.Array) -> jax.Array:
    """Changes one uniformly chosen decision (of the 2N - 2 that have a choice).

    Example:
      >>> s = RNNSpace()
      >>> a = s.sample(jax.random.key(0))
      >>> int((s.mutate(jax.random.key(1), a) != a).sum())
      1
    """
    arch = jnp.asarray(arch, jnp.int32)
    flat = arch.reshape(-1)
    n = jnp.asarray(self._num_choices.reshape(-1))
    mutable = jnp.asarray(self._mutable)
    bits = jax.random.bits(key, (2,), jnp.uint32)
    pos = mutable[(bits[0] % mutable.shape[0]).astype(jnp.int32)]
    shift = 1 + (bits[1] % (n[pos] - 1).astype(jnp.uint32)).astype(jnp.int32)
    return flat.at[pos].set((flat[pos] + shift) % n[pos]).reshape(self.arch_shape)

  # --- checking and identity ----------------------------------------------
  def validate(self, arch: Any) -> np.ndarray:
    """int32 numpy copy of ``arch``; ``ValueError`` naming the first bad field.

    Example:
      >>> a = np.zeros((12, 2), np.int32); a[5, 0] = 7
      >>> RNNSpace().validate(a)
      Traceback (most recent call last):
      ValueError: rnn arch[5, 0] (node 5, input) = 7 is out of range 0..4 (an earlier node)
    """
    a = as_integer_array(arch, self.arch_shape, self.name)
    bad = np.argwhere((a < 0) | (a >= self._num_choices))
    if bad.size:
      i, s = (int(v) for v in bad[0])
      hi = int(self._num_choices[i, s]) - 1
      if s == 1:
        allowed = ", ".join(f"{k} {name}" for k, name in enumerate(ACTIVATIONS))
      elif i == 0:
        allowed = "node 0 reads x_t and h_{t-1}; its input is always 0"
      else:
        allowed = "an earlier node"
      raise ValueError(f"rnn arch[{i}, {s}] (node {i}, {SLOT_NAMES[s]}) = {int(a[i, s])} is out of "
                       f"range 0..{hi} ({allowed})")
    return a

  def canonical(self, arch: Any) -> np.ndarray:
    """The tree relabelled canonically (see module docstring).

    Example:
      >>> s = RNNSpace(num_nodes=3)
      >>> s.canonical([[0, 0], [0, 1], [0, 0]]).tolist()  # node 2 (tanh) is visited before node 1 (relu)
      [[0, 0], [0, 0], [0, 1]]
    """
    return _canonical_tree(self.validate(arch))

  def arch_id(self, arch: Any) -> str:
    """``rnn:...`` (loose-ends rule) or ``rnn-mean:...`` of the canonical form."""
    prefix = self.name if self.output == "loose_ends" else f"{self.name}-{self.output}"
    return f"{prefix}:" + "".join(f"{int(v):x}." for v in np.ravel(self.canonical(arch))).rstrip(".")

  def output_nodes(self, arch: Any) -> tuple[int, ...]:
    """The nodes averaged into the cell output under this space's rule."""
    return output_nodes(self.validate(arch), self.output)

  # --- readable form --------------------------------------------------------
  def to_genotype(self, arch: Any) -> Genotype:
    """DARTS-like genotype: node 0's activation, ``[activation, input]`` per
    node 1..N-1 (inputs are node ids, 0 = node 0, as DARTS's ``recurrent``),
    and ``concat``: the averaged nodes.

    Example:
      >>> RNNSpace(num_nodes=3).to_genotype([[0, 0], [0, 1], [1, 3]])
      {'node0': 'tanh', 'recurrent': [['relu', 0], ['sigmoid', 1]], 'concat': [2]}
    """
    a = self.validate(arch)
    return {"node0": ACTIVATIONS[a[0, 1]],
            "recurrent": [[ACTIVATIONS[a[i, 1]], int(a[i, 0])] for i in range(1, self.num_nodes)],
            "concat": list(output_nodes(a, self.output))}

  def from_genotype(self, genotype: Genotype) -> np.ndarray:
    """Inverse of ``to_genotype``; ``ValueError`` on malformed input.

    ``node0`` may be omitted: it then is ``tanh``, DARTS's fixed node-0
    activation. ``concat`` is optional; when given it must list the nodes the
    space's output rule averages.

    Example:
      >>> s = RNNSpace.darts()
      >>> a = s.from_genotype(PUBLISHED["darts_v2"]["genotype"])
      >>> a[:3].tolist()
      [[0, 0], [0, 3], [1, 1]]
    """
    if not isinstance(genotype, dict):
      raise ValueError(f"rnn genotype must be a dict with 'recurrent' (and 'node0', 'concat'), "
                       f"got {type(genotype).__name__}")
    unknown = set(genotype) - {"node0", "recurrent", "concat"}
    if unknown:
      raise ValueError(f"rnn genotype has unknown key(s) {sorted(unknown)}; allowed: 'node0', "
                       "'recurrent', 'concat'")
    a = np.zeros(self.arch_shape, np.int32)
    node0 = genotype.get("node0", "tanh")
    if node0 not in ACTIVATIONS:
      raise ValueError(f"rnn genotype node0 {node0!r} is unknown; choose one of {list(ACTIVATIONS)}")
    a[0, 1] = ACTIVATIONS.index(node0)
    rec = genotype.get("recurrent")
    if not isinstance(rec, (list, tuple)) or len(rec) != self.num_nodes - 1:
      raise ValueError(f"rnn genotype 'recurrent' must be a list of {self.num_nodes - 1} "
                       f"[activation, input] pairs (nodes 1..{self.num_nodes - 1}), got {rec!r:.80}")
    for i, entry in enumerate(rec, start=1):
      where = f"rnn genotype recurrent[{i - 1}] (node {i})"
      if not isinstance(entry, (list, tuple)) or len(entry) != 2:
        raise ValueError(f"{where} must be [activation, input], got {entry!r}")
      act, inp = entry
      if act not in ACTIVATIONS:
        raise ValueError(f"{where} activation {act!r} is unknown; choose one of {list(ACTIVATIONS)}")
      if isinstance(inp, bool) or not isinstance(inp, (int, np.integer)) or not 0 <= inp < i:
        raise ValueError(f"{where} input {inp!r} is out of range 0..{i - 1} (an earlier node)")
      a[i] = (int(inp), ACTIVATIONS.index(act))
    if "concat" in genotype:
      given = genotype["concat"]
      expected = list(output_nodes(a, self.output))
      try:
        ok = sorted(int(v) for v in given) == expected
      except (TypeError, ValueError):
        ok = False
      if not ok:
        raise ValueError(f"rnn genotype concat {given!r} must list the nodes the {self.output!r} "
                         f"rule averages: {expected}")
    return a

  # --- token view -----------------------------------------------------------
  def to_tokens(self, arch: jax.Array) -> jax.Array:
    """int32[2N-1]: ``act_0``, then ``(input_i + 1, N + act_i)``; jnp-traceable."""
    arch = jnp.asarray(arch, jnp.int32)
    flat = arch.reshape(arch.shape[:-2] + (-1,))
    return flat[..., jnp.asarray(self._token_pos)] + jnp.asarray(self._token_offset)

  def from_tokens(self, tokens: jax.Array) -> jax.Array:
    """Inverse of ``to_tokens``; jnp-traceable (node 0's input is set to 0)."""
    tokens = jnp.asarray(tokens, jnp.int32)
    values = tokens - jnp.asarray(self._token_offset)
    flat = jnp.zeros(tokens.shape[:-1] + (2 * self.num_nodes,), jnp.int32)
    flat = flat.at[..., jnp.asarray(self._token_pos)].set(values)
    return flat.reshape(tokens.shape[:-1] + self.arch_shape)

  def token_mask(self) -> np.ndarray:
    """bool[2N-1, N+4]: input of node i allows 1..i, activations N..N+3."""
    lo = self._token_offset
    hi = lo + self._num_choices.reshape(-1)[self._token_pos]  # exclusive
    v = np.arange(self.vocab_size)
    return (v >= lo[:, None]) & (v < hi[:, None])

  def token_kinds(self) -> TokenKinds:
    """Node ``i``'s input position points at node ``j < i`` (token ``j + 1``).

    Example:
      >>> kinds = RNNSpace(3).token_kinds()
      >>> kinds.node.tolist(), kinds.target[3].tolist()  # node 2's input: tokens 1, 2 -> nodes 0, 1
      ([0, 1, 1, 2, 2], [-1, 0, 1, -1, -1, -1, -1])
    """
    node = (self._token_pos // 2).astype(np.int32)
    is_input = (self._token_pos % 2 == 0)[:, None] & self.token_mask()
    target = np.where(is_input, np.arange(self.vocab_size) - 1, -1).astype(np.int32)
    return TokenKinds(node, target, self.num_nodes)


def _enas_sequence(seq: str) -> dict[str, Any]:
  """ENAS's ``fixed_arc`` string (``act_0, (input_i, act_i)...``) as a genotype."""
  v = [int(t) for t in seq.split()]
  return {"node0": ACTIVATIONS[v[0]],
          "recurrent": [[ACTIVATIONS[v[k + 1]], v[k]] for k in range(1, len(v), 2)]}


#: Published PTB cells: the space they belong to (``RNNSpace(**space)``) and their genotype.
PUBLISHED: dict[str, dict[str, Any]] = {
    # DARTS rnn/genotypes.py DARTS_V2 (second order; DARTS = DARTS_V2), concat=range(1, 9).
    "darts_v2": {"space": {"num_nodes": DARTS_NUM_NODES, "output": "mean"}, "genotype": {
        "node0": "tanh",
        "recurrent": [["sigmoid", 0], ["relu", 1], ["relu", 1], ["identity", 1], ["tanh", 2],
                      ["sigmoid", 5], ["tanh", 3], ["relu", 5]],
        "concat": list(range(1, 9))}},
    # DARTS rnn/genotypes.py DARTS_V1 (first order).
    "darts_v1": {"space": {"num_nodes": DARTS_NUM_NODES, "output": "mean"}, "genotype": {
        "node0": "tanh",
        "recurrent": [["relu", 0], ["relu", 1], ["tanh", 2], ["relu", 3], ["relu", 4],
                      ["identity", 1], ["relu", 5], ["relu", 1]],
        "concat": list(range(1, 9))}},
    # The ENAS cell as DARTS rnn/genotypes.py transcribes it (concat = its loose ends).
    "enas": {"space": {"num_nodes": ENAS_NUM_NODES, "output": "loose_ends"}, "genotype": {
        "node0": "tanh",
        "recurrent": [["tanh", 0], ["tanh", 1], ["relu", 1], ["tanh", 3], ["tanh", 3], ["relu", 3],
                      ["relu", 4], ["relu", 7], ["relu", 8], ["relu", 8], ["relu", 8]],
        "concat": [2, 5, 6, 9, 10, 11]}},
    # ENAS scripts/ptb_final.sh --child_fixed_arc.
    "enas_ptb_final": {"space": {"num_nodes": ENAS_NUM_NODES, "output": "loose_ends"},
                       "genotype": _enas_sequence("0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1")},
}


def published(name: str) -> tuple[RNNSpace, np.ndarray]:
  """``(space, arch)`` of a published cell (see ``PUBLISHED``).

  Example:
    >>> space, arch = published("darts_v2")
    >>> space, arch.shape
    (RNNSpace(num_nodes=9, output='mean'), (9, 2))
  """
  if name not in PUBLISHED:
    raise ValueError(f"unknown published rnn cell {name!r}; choose one of {sorted(PUBLISHED)}")
  entry = PUBLISHED[name]
  space = RNNSpace(**entry["space"])
  return space, space.from_genotype(entry["genotype"])
