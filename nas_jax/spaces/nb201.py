"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

A cell is a DAG on 4 nodes (0 = cell input, 3 = cell output); each of its 6
edges ``j <- i`` (i < j) carries one of 5 ops. An architecture is ``int32[6]``,
one op id per edge, in the edge order of the benchmark's string format
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``::

    EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))   # (to, from)
    OPS   = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

Tokens are ``op id + 1`` (L = 6, V = 6; 0 is start/end). The benchmark's index
order (the row order of NAS-Bench-201 / NATS-Bench ``tss``) is *not* a
mixed-radix enumeration of the edges: it is an arbitrary permutation of the
15,625 cells (index 0 is
``|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|``),
so ``index`` / ``from_index`` use a look-up table: a CSV file with columns
``index`` and ``arch`` (the benchmark string), read lazily from
``nas_jax/assets/nb201*.csv[.gz]`` or from the path given to ``NB201Space``.

Canonical form (``canonical``): two cells are equivalent when their computation
graphs are isomorphic after three exact simplifications:

1. ``none`` edges are dropped, and so is everything that does not reach the
   output; an op applied to a node with no live input is treated as zero (exact
   for skip and pooling; a ReLU-conv-BN of zeros outputs its BatchNorm shift, a
   per-channel constant, which every NAS-Bench-201 tool ignores too).
2. ``skip_connect`` is the identity: a node's value is the flattened multiset of
   the terms it sums (``x``, ``conv(...)``, ``pool(...)``), so a skip edge merges
   its source's terms into its target (sums are associative and commutative).
3. ``avg_pool_3x3`` has no parameters, so two pools of the same sum are the same
   value; each conv edge is its own parametrised instance, so ``2 * conv(x)``
   (one conv reached by two paths) differs from ``conv_a(x) + conv_b(x)``.

Isomorphism covers relabelling the intermediate nodes (e.g. swapping nodes 1 and
2 when edge ``2 <- 1`` is ``none``). Not canonicalised: algebraic
reparametrisations (a scale absorbed by BatchNorm). The 15,625 cells fall into
5,260 classes; the representative is the member with the fewest non-``none``
edges, then the smallest op tuple. (The paper's 6,466 "unique" cells come from
a string key that keeps placeholder terms for zero inputs and cannot tell a
shared conv from two parallel ones, so it is finer in some places and coarser
in others.) The class table is built once per process (about a second).

Example:
    >>> space = NB201Space()
    >>> arch = space.from_string("|nor_conv_3x3~0|+|none~0|skip_connect~1|+"
    ...                          "|nor_conv_1x1~0|none~1|avg_pool_3x3~2|")
    >>> arch.tolist()
    [3, 0, 1, 2, 0, 4]
    >>> space.to_string(arch) == space.to_string(space.from_string(space.to_string(arch)))
    True
"""
from __future__ import annotations

import csv
import functools
import gzip
import io
import itertools
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces.base import Genotype, SearchSpace

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (to, from) node of each edge, in arch order.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_EDGES = len(EDGES)
NUM_OPS = len(OPS)
NUM_ARCHS = NUM_OPS ** NUM_EDGES
_ASSETS = pathlib.Path(__file__).resolve().parent.parent / "assets"


def as_integer_array(arch: Any, shape: tuple[int, ...], space: str) -> np.ndarray:
  """``arch`` as int32 numpy of ``shape`` or ``ValueError`` (shape, dtype, non-integers).

  Integer arrays (numpy, jax, nested lists) are accepted; floats only when every
  value is integral; bools, strings and objects are rejected.

  Args:
    arch: array-like architecture.
    shape: the required shape.
    space: the space name, for messages.

  Returns:
    int32 numpy array of ``shape``.

  Example:
    >>> as_integer_array([1, 2], (2,), "toy").dtype
    dtype('int32')
  """
  try:
    a = np.asarray(arch)
  except Exception as e:  # ragged lists and the like
    raise ValueError(f"{space} arch is not an array ({e}); pass int32 of shape {shape}") from None
  if a.shape != tuple(shape):
    raise ValueError(f"{space} arch has shape {a.shape}; expected {tuple(shape)}")
  if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
    raise ValueError(f"{space} arch has dtype {a.dtype}; expected an integer dtype (int32)")
  if np.issubdtype(a.dtype, np.floating):
    bad = ~(np.isfinite(a) & (a == np.round(a)))
    if bad.any():
      pos = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f"{space} arch{list(pos)} = {float(a[pos])} is not an integer; pass int32 values")
    if np.abs(a).max(initial=0) > 2**31 - 1:
      raise ValueError(f"{space} arch has values beyond int32")
  elif a.dtype.itemsize > 4 and a.size and (a.min() < -2**31 or a.max() > 2**31 - 1):
    raise ValueError(f"{space} arch has values beyond int32")
  return a.astype(np.int32)  # always a copy


def uniform_ints(key: jax.Array, shape: tuple[int, ...], n: Any) -> jax.Array:
  """int32 values uniform in ``0 .. n - 1`` (``n`` broadcast to ``shape``); jittable.

  One ``jax.random.bits`` call reduced modulo ``n``: the bias is below
  ``n / 2**32`` (< 2e-9 for the spaces here), and it compiles faster than
  ``jax.random.randint``, which draws twice.

  Args:
    key: PRNG key.
    shape: output shape.
    n: number of values, an int or an int array broadcastable to ``shape``.

  Returns:
    int32 array of ``shape``.

  Example:
    >>> uniform_ints(jax.random.key(0), (3,), 5).shape
    (3,)
  """
  bits = jax.random.bits(key, shape, jnp.uint32)
  return (bits % jnp.asarray(n, jnp.uint32)).astype(jnp.int32)


def _edge_name(e: int) -> str:
  to, frm = EDGES[e]
  return f"edge {to}<-{frm}"


@functools.lru_cache(maxsize=4)
def _load_index_table(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(index -> mixed-radix code, mixed-radix code -> index) from a CSV table."""
  raw = pathlib.Path(path).read_bytes()
  if raw[:2] == b"\x1f\x8b":
    raw = gzip.decompress(raw)
  reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
  if not reader.fieldnames or "index" not in reader.fieldnames or "arch" not in reader.fieldnames:
    raise ValueError(f"NAS-Bench-201 index table {path} needs columns 'index' and 'arch'; "
                     f"found {reader.fieldnames}")
  to_code = np.full(NUM_ARCHS, -1, np.int64)
  for row in reader:
    i = int(row["index"])
    if not 0 <= i < NUM_ARCHS:
      raise ValueError(f"index {i} in {path} is out of range 0..{NUM_ARCHS - 1}")
    to_code[i] = _code(_parse_string(row["arch"]))
  if (to_code < 0).any() or len(np.unique(to_code)) != NUM_ARCHS:
    raise ValueError(f"NAS-Bench-201 index table {path} does not list each of the "
                     f"{NUM_ARCHS} cells exactly once")
  to_index = np.empty(NUM_ARCHS, np.int64)
  to_index[to_code] = np.arange(NUM_ARCHS)
  return to_code, to_index


_RADIX = NUM_OPS ** np.arange(NUM_EDGES - 1, -1, -1)


@functools.lru_cache(maxsize=1)
def _default_table_path() -> str:
  found = sorted(_ASSETS.glob("nb201*.csv*"))
  if not found:
    raise ValueError(
        f"no NAS-Bench-201 index table in {_ASSETS} (nb201*.csv or nb201*.csv.gz with columns "
        "'index','arch'); pass NB201Space(index_table=PATH)")
  return str(found[0])


def _code(arch: np.ndarray) -> int:
  """Mixed-radix code of an arch (edge 0 most significant); not the benchmark index."""
  return int(np.dot(arch, _RADIX))


def _decode(code: int) -> np.ndarray:
  return np.array([(code // NUM_OPS ** p) % NUM_OPS for p in range(NUM_EDGES - 1, -1, -1)], np.int32)


def _parse_string(s: str) -> np.ndarray:
  """Benchmark string -> int32[6]; ``ValueError`` on malformed input."""
  if not isinstance(s, str):
    raise ValueError(f"nb201 cell string must be a str, got {type(s).__name__}")
  fmt = "expected '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'"
  nodes = s.strip().split("+")
  if len(nodes) != 3:
    raise ValueError(f"nb201 cell string {s!r} has {len(nodes)} node groups; {fmt}")
  arch = []
  for to, group in enumerate(nodes, start=1):
    if len(group) < 2 or not (group.startswith("|") and group.endswith("|")):
      raise ValueError(f"nb201 cell string {s!r}: node {to} group {group!r} must be "
                       f"enclosed in '|'; {fmt}")
    items = group[1:-1].split("|")
    if len(items) != to:
      raise ValueError(f"nb201 cell string {s!r}: node {to} has {len(items)} edges, "
                       f"expected {to}; {fmt}")
    for frm, item in enumerate(items):
      op, sep, src = item.partition("~")
      if not sep or src != str(frm):
        raise ValueError(f"nb201 cell string {s!r}: edge {item!r} into node {to} must be "
                         f"'op~{frm}'; {fmt}")
      if op not in OPS:
        raise ValueError(f"nb201 cell string {s!r}: unknown op {op!r}; choose one of {list(OPS)}")
      arch.append(OPS.index(op))
  return np.array(arch, np.int32)


def _signature(arch: tuple[int, ...]) -> tuple:
  """An isomorphism-invariant key of the cell's simplified computation graph."""
  verts: list[tuple[str, tuple[int, ...]]] = []  # (op name, input vertex ids; -1 = cell input)
  pools: dict[tuple, int] = {}
  values: dict[int, list[int]] = {0: [-1]}  # node -> multiset (sorted list) of terms
  for node in (1, 2, 3):
    terms: list[int] = []
    for e, (to, frm) in enumerate(EDGES):
      if to != node:
        continue
      src, op = values[frm], OPS[arch[e]]
      if op == "none" or not src:
        continue
      if op == "skip_connect":
        terms += src
        continue
      key = (op, tuple(src))
      if op == "avg_pool_3x3" and key in pools:  # parameter-free: same input, same value
        terms.append(pools[key])
        continue
      verts.append(key)  # a conv is a new parametrised instance every time
      if op == "avg_pool_3x3":
        pools[key] = len(verts) - 1
      terms.append(len(verts) - 1)
    values[node] = sorted(terms)
  out = values[3]
  unfolded: dict[int, str] = {-1: "x"}

  def unfold(v: int) -> str:
    if v not in unfolded:
      op, inputs = verts[v]
      unfolded[v] = op + "(" + "+".join(sorted(unfold(u) for u in inputs)) + ")"
    return unfolded[v]

  live, stack = set(), list(out)
  while stack:
    v = stack.pop()
    if v >= 0 and v not in live:
      live.add(v)
      stack += verts[v][1]
  ordered = sorted(live, key=unfold)
  outs = "+".join(sorted(unfold(v) for v in out))
  groups = [list(g) for _, g in itertools.groupby(ordered, key=unfold)]
  if len(groups) == len(ordered):
    # Distinct unfolded strings name every vertex, so they determine the graph.
    return (outs, tuple(unfolded[v] for v in ordered))
  best = None
  # Vertices with equal unfolded strings may still differ in what they share:
  # try every labelling within such ties (rare, tiny) and keep the smallest.
  for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
    order = [v for p in perms for v in p]
    label = {v: n for n, v in enumerate(order)}
    label[-1] = -1
    ser = (tuple((verts[v][0], tuple(sorted(label[u] for u in verts[v][1]))) for v in order),
           tuple(sorted(label[v] for v in out)))
    if best is None or ser < best:
      best = ser
  return (outs, best)


@functools.lru_cache(maxsize=1)
def canonical_table() -> np.ndarray:
  """int32[15625, 6]: the canonical arch of every cell, indexed by mixed-radix code.

  The code of an arch is ``sum(arch[e] * 5 ** (5 - e))`` (edge 0 most
  significant); it is *not* the benchmark index.

  Returns:
    A read-only table, built once per process.

  Example:
    >>> canonical_table().shape
    (15625, 6)
  """
  archs = np.array(list(itertools.product(range(NUM_OPS), repeat=NUM_EDGES)), np.int32)
  best: dict[tuple, tuple] = {}
  sigs = []
  for a in map(tuple, archs.tolist()):
    sig = _signature(a)
    sigs.append(sig)
    rank = (sum(v != 0 for v in a), a)
    if sig not in best or rank < best[sig]:
      best[sig] = rank
  table = np.array([best[s][1] for s in sigs], np.int32)
  table.setflags(write=False)
  return table


class NB201Space(SearchSpace):
  """The NAS-Bench-201 cell space: ``int32[6]`` op ids, one per edge.

  Args:
    index_table: optional path of a CSV(.gz) with columns ``index`` and
      ``arch`` giving the benchmark's index order; default: the first
      ``nas_jax/assets/nb201*.csv*`` file. Only ``index``/``from_index`` use it.

  Example:
    >>> space = NB201Space()
    >>> arch = space.sample(jax.random.key(0))
    >>> space.from_tokens(space.to_tokens(arch)).tolist() == arch.tolist()
    True
  """

  name = "nb201"
  default_evaluator = "tabular"
  arch_shape = (NUM_EDGES,)
  token_length = NUM_EDGES
  vocab_size = NUM_OPS + 1
  ops = OPS
  edges = EDGES

  def __init__(self, index_table: str | os.PathLike | None = None):
    if index_table is not None and not isinstance(index_table, (str, os.PathLike)):
      raise ValueError(f"nb201 index_table must be a path (a CSV with columns index, arch) or None, "
                       f"got {index_table!r}")
    self._index_table = None if index_table is None else str(index_table)

  def __eq__(self, other):
    return type(other) is type(self) and other._index_table == self._index_table

  def __hash__(self):
    return hash((type(self).__name__, self._index_table))

  def __repr__(self):
    return "NB201Space()" if self._index_table is None else f"NB201Space({self._index_table!r})"

  # --- sampling -----------------------------------------------------------
  def sample(self, key: jax.Array) -> jax.Array:
    """Uniform over all 15,625 cells (see ``uniform_ints``); jittable and vmappable.

    Example:
      >>> jax.vmap(NB201Space().sample)(jax.random.split(jax.random.key(0), 8)).shape
      (8, 6)
    """
    return uniform_ints(key, (NUM_EDGES,), NUM_OPS)

  def mutate(self, key: jax.Array, arch: jax.Array) -> jax.Array:
    """Changes the op of one uniformly chosen edge to a different op; jittable.

    Example:
      >>> a = jnp.zeros(6, jnp.int32)
      >>> int((NB201Space().mutate(jax.random.key(0), a) != a).sum())
      1
    """
    arch = jnp.asarray(arch, jnp.int32)
    edge, shift = uniform_ints(key, (2,), jnp.array([NUM_EDGES, NUM_OPS - 1]))
    return arch.at[edge].set((arch[edge] + 1 + shift) % NUM_OPS)

  # --- checking and identity ----------------------------------------------
  def validate(self, arch: Any) -> np.ndarray:
    """int32 numpy copy of ``arch``; ``ValueError`` naming the first bad edge.

    Example:
      >>> NB201Space().validate([0, 1, 2, 3, 4, 7])
      Traceback (most recent call last):
      ValueError: nb201 arch[5] (edge 3<-2) = 7 is out of range 0..4 (none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3)
    """
    a = as_integer_array(arch, self.arch_shape, self.name)
    if a.min() < 0 or a.max() >= NUM_OPS:
      bad = np.flatnonzero((a < 0) | (a >= NUM_OPS))
      e = int(bad[0])
      raise ValueError(f"nb201 arch[{e}] ({_edge_name(e)}) = {int(a[e])} is out of range "
                       f"0..{NUM_OPS - 1} ({', '.join(OPS)})")
    return a

  def canonical(self, arch: Any) -> np.ndarray:
    """The representative of ``arch``'s equivalence class (see module docstring).

    Example:
      >>> NB201Space().canonical([1, 0, 0, 0, 3, 0]).tolist()  # conv(skip(x)) == conv(x)
      [0, 0, 0, 3, 0, 0]
    """
    return canonical_table()[_code(self.validate(arch))].copy()

  def canonical_jax(self, arch: jax.Array) -> jax.Array:
    """``canonical`` as a jnp gather from ``canonical_table()``; jittable, vmappable.

    Example:
      >>> NB201Space().canonical_jax(jnp.array([1, 0, 0, 0, 3, 0])).tolist()
      [0, 0, 0, 3, 0, 0]
    """
    arch = jnp.asarray(arch, jnp.int32)
    radix = jnp.asarray(NUM_OPS ** np.arange(NUM_EDGES - 1, -1, -1), jnp.int32)
    return jnp.asarray(canonical_table())[jnp.sum(arch * radix, axis=-1)]

  # --- benchmark string and index -------------------------------------------
  def to_string(self, arch: Any) -> str:
    """The benchmark's cell string, e.g. ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``.

    Example:
      >>> NB201Space().to_string([3, 0, 1, 2, 0, 4])
      '|nor_conv_3x3~0|+|none~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|'
    """
    a = self.validate(arch)
    groups, e = [], 0
    for to in (1, 2, 3):
      items = []
      for frm in range(to):
        items.append(f"{OPS[a[e]]}~{frm}")
        e += 1
      groups.append("|" + "|".join(items) + "|")
    return "+".join(groups)

  def from_string(self, s: str) -> np.ndarray:
    """Inverse of ``to_string``; ``ValueError`` on a malformed string or unknown op.

    Example:
      >>> NB201Space().from_string("|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|").tolist()
      [0, 0, 0, 0, 0, 1]
    """
    return _parse_string(s)

  def _table_path(self) -> str:
    return self._index_table if self._index_table is not None else _default_table_path()

  def index(self, arch: Any) -> int:
    """The architecture's NAS-Bench-201 index (0..15624), via the index table.

    Example:
      >>> NB201Space().index(NB201Space().from_index(123))  # the shipped index table
      123
    """
    _, to_index = _load_index_table(self._table_path())
    return int(to_index[_code(self.validate(arch))])

  def from_index(self, i: int) -> np.ndarray:
    """The architecture with NAS-Bench-201 index ``i``.

    Example:
      >>> NB201Space().to_string(NB201Space().from_index(0))
      '|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|'
    """
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < NUM_ARCHS:
      raise ValueError(f"nb201 index {i!r} must be an int in 0..{NUM_ARCHS - 1}")
    to_code, _ = _load_index_table(self._table_path())
    return _decode(int(to_code[int(i)]))

  # --- readable form --------------------------------------------------------
  def to_genotype(self, arch: Any) -> Genotype:
    """``{"cell": <benchmark string>, "edges": [{"to", "from", "op"}, ...]}``.

    Example:
      >>> NB201Space().to_genotype([1, 0, 0, 0, 0, 0])["edges"][0]
      {'to': 1, 'from': 0, 'op': 'skip_connect'}
    """
    a = self.validate(arch)
    return {"cell": self.to_string(a),
            "edges": [{"to": to, "from": frm, "op": OPS[a[e]]} for e, (to, frm) in enumerate(EDGES)]}

  def from_genotype(self, genotype: Genotype) -> np.ndarray:
    """Inverse of ``to_genotype``; accepts ``"cell"``, ``"edges"`` or both (must agree).

    Example:
      >>> s = NB201Space()
      >>> s.from_genotype(s.to_genotype([1, 2, 3, 4, 0, 1])).tolist()
      [1, 2, 3, 4, 0, 1]
    """
    if not isinstance(genotype, dict):
      raise ValueError(f"nb201 genotype must be a dict with 'cell' and/or 'edges', "
                       f"got {type(genotype).__name__}")
    unknown = set(genotype) - {"cell", "edges"}
    if unknown:
      raise ValueError(f"nb201 genotype has unknown key(s) {sorted(unknown)}; allowed: 'cell', 'edges'")
    if not genotype:
      raise ValueError("nb201 genotype needs a 'cell' string or an 'edges' list")
    from_cell = _parse_string(genotype["cell"]) if "cell" in genotype else None
    from_edges = None
    if "edges" in genotype:
      edges = genotype["edges"]
      if not isinstance(edges, list) or len(edges) != NUM_EDGES:
        raise ValueError(f"nb201 genotype 'edges' must be a list of {NUM_EDGES} "
                         "{'to', 'from', 'op'} dicts")
      from_edges = np.zeros(NUM_EDGES, np.int32)
      for e, (item, (to, frm)) in enumerate(zip(edges, EDGES)):
        if not isinstance(item, dict) or set(item) != {"to", "from", "op"}:
          raise ValueError(f"nb201 genotype edges[{e}] must be a dict with keys 'to', 'from', 'op'; "
                           f"got {item!r}")
        if item["to"] != to or item["from"] != frm:
          raise ValueError(f"nb201 genotype edges[{e}] connects {item['to']}<-{item['from']}; "
                           f"expected {to}<-{frm} (edges in order {list(EDGES)})")
        if item["op"] not in OPS:
          raise ValueError(f"nb201 genotype edges[{e}] op {item['op']!r} is unknown; "
                           f"choose one of {list(OPS)}")
        from_edges[e] = OPS.index(item["op"])
    if from_cell is not None and from_edges is not None and not np.array_equal(from_cell, from_edges):
      raise ValueError("nb201 genotype 'cell' and 'edges' describe different architectures")
    return from_cell if from_cell is not None else from_edges

  # --- token view -----------------------------------------------------------
  def to_tokens(self, arch: jax.Array) -> jax.Array:
    """``op id + 1`` per edge (int32[6], values 1..5); jnp-traceable."""
    return jnp.asarray(arch, jnp.int32) + 1

  def from_tokens(self, tokens: jax.Array) -> jax.Array:
    """Inverse of ``to_tokens``; jnp-traceable."""
    return jnp.asarray(tokens, jnp.int32) - 1

  def token_mask(self) -> np.ndarray:
    """bool[6, 6]: every op token 1..5 at every position; 0 never."""
    mask = np.ones((self.token_length, self.vocab_size), bool)
    mask[:, 0] = False
    return mask
