"""A space of independent named choices: the quickest way to a custom search space.

``CategoricalSpace`` implements the whole ``SearchSpace`` protocol (sampling,
mutation, validation, genotypes, tokens) for an architecture made of
independent decisions, each picking one option from a list: an MLP's depth,
width and activation; an augmentation policy; a learning-rate schedule. A
subclass only names its decisions::

    class MLPSpace(CategoricalSpace):
      name = "mlp"
      choices = {"depth": [1, 2, 3], "width": [32, 64, 128], "act": ["relu", "gelu"]}

An architecture is ``int32[D]`` (one option index per decision, in the order
of ``choices``); the genotype is ``{decision: option}``; tokens are the option
index plus one, masked per position, so every strategy of ``nas_jax.strategies``
(random, evolution, REINFORCE, NAO, ENAS) runs on it unchanged. Every
architecture is its own canonical form (no symmetries).

Example:
    >>> space = CategoricalSpace({"depth": [1, 2, 3], "act": ["relu", "tanh"]}, name="toy")
    >>> space.arch_shape, space.token_length, space.vocab_size
    ((2,), 2, 4)
    >>> space.to_genotype([2, 1])
    {'depth': 3, 'act': 'tanh'}
    >>> space.from_genotype({"depth": 1, "act": "relu"}).tolist()
    [0, 0]
    >>> space.validate([3, 0])
    Traceback (most recent call last):
    ValueError: toy arch[0] (depth) = 3 is out of range 0..2 (1, 2, 3)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces.base import Genotype, SearchSpace
from nas_jax.spaces.nb201 import as_integer_array, uniform_ints


class CategoricalSpace(SearchSpace):
  """Independent decisions, each one option of a list (subclass it, or pass ``choices``).

  Args:
    choices: ``{decision name: [options]}`` (at least one decision, each with
      at least one option; options are JSON-friendly values such as str, int,
      float). Default: the class attribute ``choices``.
    name: the space's name (ids, messages). Default: the class attribute ``name``.

  Raises:
    ValueError: no decisions, a decision without options, or repeated options.
  """

  name = "categorical"
  choices: Mapping[str, Sequence[Any]] = {}

  def __init__(self, choices: Mapping[str, Sequence[Any]] | None = None, name: str | None = None):
    choices = dict(self.choices if choices is None else choices)
    if name is not None:
      self.name = name
    if not choices:
      raise ValueError(f"{self.name}: no decisions; give choices={{'decision': [option, ...], ...}}")
    for k, opts in choices.items():
      if isinstance(opts, (str, bytes)) or not isinstance(opts, Sequence) or len(opts) == 0:
        raise ValueError(f"{self.name}: decision {k!r} needs a non-empty list of options, got {opts!r}")
      if len({repr(o) for o in opts}) != len(opts):
        raise ValueError(f"{self.name}: decision {k!r} lists an option twice: {list(opts)!r}")
    self.choices = {str(k): tuple(v) for k, v in choices.items()}
    self.decisions: tuple[str, ...] = tuple(self.choices)
    self.sizes = np.array([len(v) for v in self.choices.values()], np.int32)
    self.arch_shape = (len(self.decisions),)
    self.token_length = len(self.decisions)
    self.vocab_size = int(self.sizes.max()) + 1

  def _key(self):
    return (type(self), self.name, tuple((k, tuple(map(repr, v))) for k, v in self.choices.items()))

  def __eq__(self, other):
    return isinstance(other, CategoricalSpace) and self._key() == other._key()

  def __hash__(self):  # a static argument of the strategies' jitted samplers
    return hash(self._key())

  def __repr__(self):
    return f"{type(self).__name__}(name={self.name!r}, sizes={self.sizes.tolist()})"

  # --- sampling -----------------------------------------------------------
  def sample(self, key: jax.Array) -> jax.Array:
    """Each decision uniform over its options; jittable and vmappable."""
    return uniform_ints(key, self.arch_shape, self.sizes)

  def mutate(self, key: jax.Array, arch: jax.Array) -> jax.Array:
    """Another option for one uniformly chosen decision (unchanged if it has one option)."""
    arch = jnp.asarray(arch, jnp.int32)
    k_pos, k_shift = jax.random.split(key)
    pos = uniform_ints(k_pos, (), len(self.decisions))
    size = jnp.asarray(self.sizes)[pos]
    shift = uniform_ints(k_shift, (), jnp.maximum(size - 1, 1))
    return arch.at[pos].set((arch[pos] + 1 + shift) % size)

  # --- checking and identity ----------------------------------------------
  def validate(self, arch: Any) -> np.ndarray:
    """int32 numpy copy of ``arch``; ``ValueError`` naming the first bad decision."""
    a = as_integer_array(arch, self.arch_shape, self.name)
    bad = np.flatnonzero((a < 0) | (a >= self.sizes))
    if bad.size:
      i = int(bad[0])
      k = self.decisions[i]
      raise ValueError(f"{self.name} arch[{i}] ({k}) = {int(a[i])} is out of range "
                       f"0..{int(self.sizes[i]) - 1} ({', '.join(map(str, self.choices[k]))})")
    return a

  def canonical(self, arch: Any) -> np.ndarray:
    """The architecture itself: independent decisions have no symmetries."""
    return self.validate(arch)

  # --- readable form --------------------------------------------------------
  def to_genotype(self, arch: Any) -> Genotype:
    """``{decision: option}`` in the order of ``choices``."""
    a = self.validate(arch)
    return {k: self.choices[k][int(i)] for k, i in zip(self.decisions, a)}

  def from_genotype(self, genotype: Genotype) -> np.ndarray:
    """Inverse of ``to_genotype``; ``ValueError`` on a missing decision or unknown option."""
    if not isinstance(genotype, Mapping) or set(genotype) != set(self.decisions):
      got = sorted(genotype) if isinstance(genotype, Mapping) else type(genotype).__name__
      raise ValueError(f"{self.name} genotype must map exactly the decisions {list(self.decisions)}, "
                       f"got {got}")
    out = []
    for k in self.decisions:
      reprs = [repr(o) for o in self.choices[k]]
      if repr(genotype[k]) not in reprs:
        raise ValueError(f"{self.name} genotype: {k}={genotype[k]!r} is not an option; "
                         f"choose one of {list(self.choices[k])}")
      out.append(reprs.index(repr(genotype[k])))
    return np.asarray(out, np.int32)

  # --- token view -----------------------------------------------------------
  def to_tokens(self, arch: jax.Array) -> jax.Array:
    """Option index + 1 per decision."""
    return jnp.asarray(arch, jnp.int32) + 1

  def from_tokens(self, tokens: jax.Array) -> jax.Array:
    """Inverse of ``to_tokens``."""
    return jnp.asarray(tokens, jnp.int32) - 1

  def token_mask(self) -> np.ndarray:
    """bool[D, V]: tokens ``1 .. len(options)`` at each decision."""
    v = np.arange(self.vocab_size)
    return (v[None, :] >= 1) & (v[None, :] <= self.sizes[:, None])
