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
from typing import Any, NamedTuple

import jax
import numpy as np

Genotype = dict[str, Any]


class TokenKinds(NamedTuple):
  """Which token positions pick an earlier node (the ENAS controller's pointer choices).

  The token sequence describes *nodes* in ascending order: each node's
  positions are consecutive, and a node may have none (a cell's inputs, which
  are given, not decided). An *input position* chooses one earlier node;
  every other position chooses an operation (or activation).

  Attributes:
    node: int32[L], the node that each position decides about (non-decreasing).
    target: int32[L, V], on an input position the node that token ``v``
      designates (an earlier node; -1 where ``token_mask()`` forbids ``v``);
      all -1 on the other positions.
    num_nodes: the number of nodes, given ones included.
    skip: optional int32[L]: on a *skip position* (a yes/no connection from
      an earlier node, ENAS's macro space) the earlier node it connects,
      -1 elsewhere; token 1 is "off" and 2 "on" there. The controller decides
      a node's skip positions together, after the node's other positions, one
      sigmoid each from attention over the earlier nodes' anchors. None: no
      skip positions.
  """
  node: np.ndarray
  target: np.ndarray
  num_nodes: int
  skip: np.ndarray | None = None


def cell_token_kinds(mask: np.ndarray, num_cells: int, num_nodes: int,
                     input_token0: int) -> TokenKinds:
  """``TokenKinds`` of the NASNet-style cell layout (``nasnet``, ``darts``).

  Tokens per node ``(input0, op0, input1, op1)``, cell after cell; an input
  token ``input_token0 + k`` designates the cell input ``k`` (``k < 2``) or
  the cell's node ``k - 2``. Each cell numbers its nodes afresh: its two
  inputs, then its ``num_nodes`` nodes (``num_nodes + 2`` nodes per cell).

  Args:
    mask: the space's ``token_mask()``, bool[num_cells * num_nodes * 4, V].
    num_cells: cells in the sequence (normal, reduction).
    num_nodes: decided nodes per cell.
    input_token0: the token of input 0.

  Returns:
    The ``TokenKinds``.

  Example:
    >>> from nas_jax.spaces.nasnet import NasNetSpace
    >>> kinds = NasNetSpace().token_kinds()
    >>> kinds.num_nodes, kinds.node[:8].tolist()
    (14, [2, 2, 2, 2, 3, 3, 3, 3])
    >>> kinds.target[4].tolist()  # node 1's input0: tokens 1, 2, 3 -> cell inputs 0, 1, node 0
    [-1, 0, 1, 2, -1, -1, -1, -1, -1, -1, -1, -1]
  """
  per_cell = num_nodes + 2
  length, vocab = mask.shape
  if length != num_cells * num_nodes * 4:
    raise ValueError(f"cell_token_kinds: mask has {length} positions, expected "
                     f"{num_cells * num_nodes * 4} (cells x nodes x 4)")
  t = np.arange(length)
  cell, i, slot = t // (4 * num_nodes), (t // 4) % num_nodes, t % 4
  node = (cell * per_cell + 2 + i).astype(np.int32)
  v = np.arange(vocab)
  target = (cell * per_cell)[:, None] + (v - input_token0)[None, :]
  is_input = (slot % 2 == 0)[:, None] & mask
  return TokenKinds(node, np.where(is_input, target, -1).astype(np.int32), num_cells * per_cell)


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

  def token_kinds(self) -> TokenKinds:
    """Which positions choose an earlier node (``TokenKinds``); optional.

    Default: none do; every position is its own node and chooses an
    operation. Spaces whose positions pick inputs override it (the ENAS
    controller then uses pointer attention there).

    Example:
      >>> from nas_jax.spaces import get_space
      >>> kinds = get_space("nb201").token_kinds()
      >>> kinds.num_nodes, int(kinds.target.max())
      (6, -1)
    """
    length = self.token_length
    return TokenKinds(np.arange(length, dtype=np.int32),
                      np.full((length, self.vocab_size), -1, np.int32), length)

  def augment_tokens(self, key: jax.Array, tokens: jax.Array) -> jax.Array:
    """A token sequence of the same architecture (NAO's symmetric swap).

    Default: the identity (spaces without a symmetry).
    """
    del key
    return tokens
