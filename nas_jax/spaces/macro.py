"""ENAS's macro search space (Pham et al., ICML 2018, Section 2.3; ``--search_for=macro``).

A network of ``L`` layers (ENAS's CIFAR-10 search: 12, ``--child_num_layers=12``
in ``scripts/cifar10_macro_search.sh``). Layer ``i`` picks one of six
operations and, for ``i >= 1``, a set of skip connections: one bit per earlier
*node*, where node 0 is the stem's output and node ``k >= 1`` is layer
``k - 1``'s output. Layer ``i`` reads layer ``i - 1`` (node ``i``) as its
input, and its bits ``0 .. i - 1`` add nodes ``0 .. i - 1`` (the stem and
layers ``0 .. i - 2``) to its output (as the authors' child does:
``src/cifar10/general_child.py``, ``_enas_layer``, bit ``j`` selects
``prev_layers[j]``, the stem being ``prev_layers[0]``).

The architecture is ``int32[L + L (L - 1) / 2]`` in the order of ENAS's
``fixed_arc`` strings (``whole_channels``: one op id per layer, then that
layer's skip bits)::

    [op_0,  op_1, s_1_0,  op_2, s_2_0, s_2_1,  op_3, s_3_0, s_3_1, s_3_2, ...]

Op ids are ENAS's branch ids (``general_child.py``, ``_enas_layer``)::

    0 conv_3x3   1 sep_conv_3x3   2 conv_5x5   3 sep_conv_5x5   4 avg_pool_3x3   5 max_pool_3x3

Tokens are ``value + 1`` per position (op tokens 1..6, skip tokens 1 = off,
2 = on; V = 7). ``token_kinds()`` marks the skip positions (``TokenKinds.skip``)
so that ENAS's controller decides them as ENAS's macro controller does: one
sigmoid per earlier layer from attention over the earlier layers' anchors
(``src/cifar10/general_controller.py``); every other strategy treats each
position as an independent choice. No two architectures compute the same
function (every op carries its own weights), so ``canonical`` is the identity.

Example:
    >>> space = MacroSpace(num_layers=3)
    >>> space.arch_shape
    (6,)
    >>> g = space.to_genotype([0, 4, 1, 3, 0, 1])
    >>> g["arc"], g["layers"][2]
    ('0 4 1 3 0 1', {'op': 'sep_conv_5x5', 'skips': ['layer0']})
    >>> space.from_genotype(g).tolist()
    [0, 4, 1, 3, 0, 1]
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces.base import Genotype, SearchSpace, TokenKinds
from nas_jax.spaces.nb201 import as_integer_array, uniform_ints

#: ENAS's six branches, in its branch-id order (general_child.py ``_enas_layer``,
#: ``--child_num_branches=6`` in scripts/cifar10_macro_search.sh).
OPS: tuple[str, ...] = ("conv_3x3", "sep_conv_3x3", "conv_5x5", "sep_conv_5x5", "avg_pool_3x3",
                        "max_pool_3x3")
NUM_OPS = len(OPS)
#: Layers of ENAS's CIFAR-10 macro search (scripts/cifar10_macro_search.sh --child_num_layers=12).
DEFAULT_LAYERS = 12
#: Token of a skip position: 1 = off, 2 = on (``value + 1``).
SKIP_OFF, SKIP_ON = 1, 2


def arch_length(num_layers: int) -> int:
  """``L + L (L - 1) / 2``: one op per layer plus one bit per (layer, earlier node)."""
  return num_layers + num_layers * (num_layers - 1) // 2


def layers_of_length(length: int) -> int:
  """The ``L`` with ``arch_length(L) == length``; ``ValueError`` when there is none.

  Example:
    >>> layers_of_length(78)
    12
  """
  num_layers = 0
  while arch_length(num_layers) < length:
    num_layers += 1
  if arch_length(num_layers) != length or num_layers < 1:
    raise ValueError(f"macro arch of length {length} is not L + L(L-1)/2 for any number of layers L "
                     "(12 layers: 78)")
  return num_layers


@functools.lru_cache(maxsize=None)
def layout(num_layers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per position of the arch: ``(layer, skip source node or -1, op position of each layer)``.

  Example:
    >>> layer, source, op_pos = layout(3)
    >>> layer.tolist(), source.tolist(), op_pos.tolist()
    ([0, 1, 1, 2, 2, 2], [-1, -1, 0, -1, 0, 1], [0, 1, 3])
  """
  layer, source, op_pos = [], [], []
  for i in range(num_layers):
    op_pos.append(len(layer))
    layer.append(i)
    source.append(-1)
    for j in range(i):
      layer.append(i)
      source.append(j)
  arrays = tuple(np.asarray(a, np.int32) for a in (layer, source, op_pos))
  for a in arrays:
    a.setflags(write=False)
  return arrays


def node_name(j: int) -> str:
  """Node ``j``'s name in genotypes: ``"stem"`` (0) or ``"layer<j-1>"``."""
  return "stem" if j == 0 else f"layer{j - 1}"


class MacroSpace(SearchSpace):
  """ENAS's macro space of ``num_layers`` layers (see the module docstring).

  Args:
    num_layers: L (ENAS: 12). The registry's ``macro`` has 12.

  Example:
    >>> space = MacroSpace()
    >>> arch = space.sample(jax.random.key(0))
    >>> arch.shape, space.token_length, space.vocab_size
    ((78,), 78, 7)
    >>> space.from_tokens(space.to_tokens(arch)).tolist() == arch.tolist()
    True
  """

  name = "macro"
  default_evaluator = "supernet"
  ops = OPS

  def __init__(self, num_layers: int = DEFAULT_LAYERS):
    if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or num_layers < 1:
      raise ValueError(f"macro num_layers must be an integer >= 1, got {num_layers!r}")
    self.num_layers = int(num_layers)
    self.arch_shape = (arch_length(self.num_layers),)
    self.token_length = self.arch_shape[0]
    self.vocab_size = NUM_OPS + 1
    layer, source, _ = layout(self.num_layers)
    self._layer, self._source = layer, source
    # values per position: 6 ops or 2 skip values
    self._bound = np.where(source < 0, NUM_OPS, 2).astype(np.int32)

  def __eq__(self, other):
    return type(other) is type(self) and other.num_layers == self.num_layers

  def __hash__(self):
    return hash((type(self).__name__, self.num_layers))

  def __repr__(self):
    return f"MacroSpace(num_layers={self.num_layers})"

  @property
  def op_positions(self) -> np.ndarray:
    """int32[L]: the arch position of each layer's op."""
    return layout(self.num_layers)[2]

  @property
  def skip_sources(self) -> np.ndarray:
    """int32[len]: the node a skip position adds (-1 on op positions)."""
    return self._source

  def _where(self, p: int) -> str:
    i, j = int(self._layer[p]), int(self._source[p])
    return f"layer {i} op" if j < 0 else f"layer {i} skip from {node_name(j)}"

  # --- sampling -----------------------------------------------------------
  def sample(self, key: jax.Array) -> jax.Array:
    """Uniform over all architectures (each op uniform, each skip bit fair); jittable.

    Example:
      >>> jax.vmap(MacroSpace(4).sample)(jax.random.split(jax.random.key(0), 8)).shape
      (8, 10)
    """
    return uniform_ints(key, self.arch_shape, jnp.asarray(self._bound))

  def mutate(self, key: jax.Array, arch: jax.Array) -> jax.Array:
    """Changes one uniformly chosen position (an op or a skip bit) to another value; jittable.

    Example:
      >>> a = jnp.zeros(10, jnp.int32)
      >>> int((MacroSpace(4).mutate(jax.random.key(0), a) != a).sum())
      1
    """
    arch = jnp.asarray(arch, jnp.int32)
    k_pos, k_val = jax.random.split(key)
    pos = uniform_ints(k_pos, (), self.arch_shape[0])
    bound = jnp.asarray(self._bound)[pos]
    shift = uniform_ints(k_val, (), bound - 1)
    return arch.at[pos].set((arch[pos] + 1 + shift) % bound)

  # --- checking and identity ----------------------------------------------
  def validate(self, arch: Any) -> np.ndarray:
    """int32 numpy copy of ``arch``; ``ValueError`` naming the first bad position.

    Example:
      >>> MacroSpace(3).validate([0, 4, 1, 3, 2, 1])
      Traceback (most recent call last):
      ValueError: macro arch[4] (layer 2 skip from stem) = 2 is out of range 0..1 (off, on)
    """
    a = as_integer_array(arch, self.arch_shape, self.name)
    bad = np.flatnonzero((a < 0) | (a >= self._bound))
    if bad.size:
      p = int(bad[0])
      allowed = ", ".join(OPS) if self._source[p] < 0 else "off, on"
      raise ValueError(f"macro arch[{p}] ({self._where(p)}) = {int(a[p])} is out of range "
                       f"0..{int(self._bound[p]) - 1} ({allowed})")
    return a

  def canonical(self, arch: Any) -> np.ndarray:
    """``arch`` itself (validated): every op has its own weights, so no two archs coincide."""
    return self.validate(arch)

  # --- readable form --------------------------------------------------------
  def to_genotype(self, arch: Any) -> Genotype:
    """``{"layers": [{"op", "skips": [node names]}], "arc": ENAS fixed_arc string}``.

    Example:
      >>> MacroSpace(2).to_genotype([5, 2, 1])["layers"]
      [{'op': 'max_pool_3x3', 'skips': []}, {'op': 'conv_5x5', 'skips': ['stem']}]
    """
    a = self.validate(arch)
    layers = [{"op": OPS[a[p]], "skips": []} for p in self.op_positions]
    for p in np.flatnonzero((self._source >= 0) & (a == 1)):
      layers[self._layer[p]]["skips"].append(node_name(int(self._source[p])))
    return {"layers": layers, "arc": " ".join(str(int(v)) for v in a)}

  def from_genotype(self, genotype: Genotype) -> np.ndarray:
    """Inverse of ``to_genotype``; accepts ``"layers"``, ``"arc"`` or both (must agree).

    Example:
      >>> MacroSpace(2).from_genotype({"arc": "5 2 1"}).tolist()
      [5, 2, 1]
      >>> MacroSpace(2).from_genotype({"layers": [{"op": "conv_3x3", "skips": ["layer0"]},
      ...                                          {"op": "conv_3x3", "skips": []}]})
      Traceback (most recent call last):
      ValueError: macro genotype layers[0] skips ['layer0'] must be distinct names among []
    """
    if not isinstance(genotype, dict):
      raise ValueError(f"macro genotype must be a dict with 'layers' and/or 'arc', got {type(genotype).__name__}")
    unknown = set(genotype) - {"layers", "arc"}
    if unknown:
      raise ValueError(f"macro genotype has unknown key(s) {sorted(unknown)}; allowed: 'layers', 'arc'")
    if not genotype:
      raise ValueError("macro genotype needs a 'layers' list or an 'arc' string")
    from_arc = from_layers = None
    if "arc" in genotype:
      text = genotype["arc"]
      try:
        values = [int(v) for v in str(text).split()]
      except ValueError:
        raise ValueError(f"macro genotype 'arc' must be integers separated by spaces, got {text!r}") from None
      if len(values) != self.arch_shape[0]:
        raise ValueError(f"macro genotype 'arc' has {len(values)} numbers; {self.num_layers} layers need "
                         f"{self.arch_shape[0]}")
      from_arc = self.validate(values)
    if "layers" in genotype:
      layers = genotype["layers"]
      if not isinstance(layers, list) or len(layers) != self.num_layers:
        raise ValueError(f"macro genotype 'layers' must be a list of {self.num_layers} "
                         "{'op', 'skips'} dicts")
      from_layers = np.zeros(self.arch_shape, np.int32)
      for i, item in enumerate(layers):
        if not isinstance(item, dict) or set(item) != {"op", "skips"}:
          raise ValueError(f"macro genotype layers[{i}] must be a dict with keys 'op', 'skips'; got {item!r}")
        if item["op"] not in OPS:
          raise ValueError(f"macro genotype layers[{i}] op {item['op']!r} is unknown; choose one of {list(OPS)}")
        from_layers[self.op_positions[i]] = OPS.index(item["op"])
        names = [node_name(j) for j in range(i)]
        skips = item["skips"]
        if not isinstance(skips, list) or not set(skips) <= set(names) or len(set(skips)) != len(skips):
          raise ValueError(f"macro genotype layers[{i}] skips {skips!r} must be distinct names among {names}")
        for name in skips:
          from_layers[self.op_positions[i] + 1 + names.index(name)] = 1
    if from_arc is not None and from_layers is not None and not np.array_equal(from_arc, from_layers):
      raise ValueError("macro genotype 'layers' and 'arc' describe different architectures")
    return from_arc if from_arc is not None else from_layers

  # --- token view -----------------------------------------------------------
  def to_tokens(self, arch: jax.Array) -> jax.Array:
    """``value + 1`` per position (ops 1..6, skips 1 = off / 2 = on); jnp-traceable."""
    return jnp.asarray(arch, jnp.int32) + 1

  def from_tokens(self, tokens: jax.Array) -> jax.Array:
    """Inverse of ``to_tokens``; jnp-traceable."""
    return jnp.asarray(tokens, jnp.int32) - 1

  def token_mask(self) -> np.ndarray:
    """bool[len, 7]: op positions allow tokens 1..6, skip positions 1..2.

    Example:
      >>> MacroSpace(2).token_mask().astype(int).tolist()
      [[0, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0, 0]]
    """
    v = np.arange(self.vocab_size)
    return (v[None, :] >= 1) & (v[None, :] <= self._bound[:, None])

  def token_kinds(self) -> TokenKinds:
    """One node per layer; skip positions marked for the controller's sigmoid attention.

    The skip bit of layer ``i`` towards node ``j`` attends to layer ``j``'s
    controller anchor (ENAS's general_controller.py: layer ``i``'s skip
    logits come from the anchors of layers ``0 .. i - 1``).

    Example:
      >>> kinds = MacroSpace(3).token_kinds()
      >>> kinds.node.tolist(), kinds.skip.tolist(), kinds.num_nodes
      ([0, 1, 1, 2, 2, 2], [-1, -1, 0, -1, 0, 1], 3)
    """
    length = self.token_length
    return TokenKinds(self._layer.copy(), np.full((length, self.vocab_size), -1, np.int32), self.num_layers,
                      skip=self._source.copy())
