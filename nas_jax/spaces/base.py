"""The search-space protocol shared by every strategy, evaluator and network.

An architecture is a fixed-shape ``int32`` array (``space.arch_shape``). Every
space offers the same pure functions, so strategies (random, evolution,
REINFORCE, NAO, ENAS) and evaluators never special-case a space.

Token view (NAO encoder/decoder, ENAS controller, REINFORCE): every space also
maps an architecture to a sequence of ``token_length`` tokens with values in
``1 .. vocab_size - 1`` (0 is reserved as start/end). ``token_mask()[t, v]`` is
True when token ``v`` is allowed at position ``t``; positions are independent
given the mask, so any masked per-position choice is a valid architecture.

Example:
    >>> from nas_jax.spaces import get_space
    >>> space = get_space("nb201")
    >>> arch = space.sample(jax.random.key(0))
    >>> space.validate(arch).shape == space.arch_shape
    True
"""
from __future__ import annotations

import abc
from typing import Any

import jax
import numpy as np

Genotype = dict[str, Any]


class SearchSpace(abc.ABC):
  """Abstract search space. Subclasses are stateless and hashable.

  Attributes:
    name: registry name, e.g. ``"nasnet"``.
    arch_shape: shape of the int32 architecture array.
    token_length: length L of the token sequence.
    vocab_size: V, token values are ``1..V-1``; 0 is start/end.
    default_evaluator: the evaluator that ``evaluator.name = "auto"`` means on
      this space (``"tabular"`` where a benchmark table exists, ``"supernet"``
      where a weight-sharing supernet does, else ``"scratch"``).
  """

  name: str
  arch_shape: tuple[int, ...]
  token_length: int
  vocab_size: int
  default_evaluator: str = "scratch"

  # --- sampling -----------------------------------------------------------
  @abc.abstractmethod
  def sample(self, key: jax.Array) -> jax.Array:
    """A uniformly random valid architecture; jittable and vmappable."""

  @abc.abstractmethod
  def mutate(self, key: jax.Array, arch: jax.Array) -> jax.Array:
    """A valid neighbour differing in one decision; jittable."""

  # --- checking and identity ----------------------------------------------
  @abc.abstractmethod
  def validate(self, arch: Any) -> np.ndarray:
    """Returns ``arch`` as an int32 numpy array or raises ``ValueError``.

    The message names the bad field (cell, node, slot) and the allowed range.
    """

  @abc.abstractmethod
  def canonical(self, arch: Any) -> np.ndarray:
    """A representative of the architecture's equivalence class (numpy)."""

  def arch_id(self, arch: Any) -> str:
    """A stable string id of the canonical form, used for de-duplication."""
    canon = self.canonical(arch)
    return f"{self.name}:" + "".join(f"{int(v):x}." for v in np.ravel(canon)).rstrip(".")

  # --- readable form --------------------------------------------------------
  @abc.abstractmethod
  def to_genotype(self, arch: Any) -> Genotype:
    """A JSON-serialisable readable description (op names, input names)."""

  @abc.abstractmethod
  def from_genotype(self, genotype: Genotype) -> np.ndarray:
    """Inverse of ``to_genotype``; raises ``ValueError`` on malformed input."""

  # --- token view -----------------------------------------------------------
  @abc.abstractmethod
  def to_tokens(self, arch: jax.Array) -> jax.Array:
    """int32[L] tokens in ``1..V-1``; jnp-traceable (works under vmap)."""

  @abc.abstractmethod
  def from_tokens(self, tokens: jax.Array) -> jax.Array:
    """Inverse of ``to_tokens``; jnp-traceable."""

  @abc.abstractmethod
  def token_mask(self) -> np.ndarray:
    """bool[L, V]: which tokens are valid at each position (0 never is)."""

  def augment_tokens(self, key: jax.Array, tokens: jax.Array) -> jax.Array:
    """A token sequence of the same architecture (NAO's symmetric swap).

    Default: the identity (spaces without a symmetry).
    """
    del key
    return tokens
