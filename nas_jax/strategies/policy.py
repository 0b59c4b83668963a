"""Pieces shared by the policy-gradient strategies (REINFORCE, ENAS).

Both draw an architecture as a sequence of tokens of the space's token view
(``space.to_tokens`` / ``from_tokens``), with the tokens that
``space.token_mask()`` forbids at a position never drawn.

Example:
    >>> from nas_jax.spaces import get_space
    >>> mask = checked_token_mask(get_space("nb201"), "reinforce")
    >>> mask.shape, bool(mask[0, 0])
    ((6, 6), False)
    >>> np.exp(masked_log_probs(jnp.zeros((1, 3)), jnp.array([[False, True, True]]))).round(2)
    array([[0. , 0.5, 0.5]], dtype=float32)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces.base import SearchSpace

#: Logit of a forbidden token (finite, so ``0 * logit`` stays 0 in entropies).
MASKED_LOGIT = -1e9


def masked_log_probs(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Log-probabilities over the last axis with forbidden tokens at (effectively) -inf.

  Args:
    logits: float[..., V].
    mask: bool[..., V] (broadcastable), True where a token is allowed.

  Returns:
    float[..., V] log-softmax of the masked logits.
  """
  return jax.nn.log_softmax(jnp.where(mask, logits, MASKED_LOGIT), axis=-1)


def checked_token_mask(space: SearchSpace, strategy: str) -> np.ndarray:
  """``space.token_mask()`` as bool[L, V], checked; ``ValueError`` naming the space.

  Args:
    space: the search space.
    strategy: the strategy's name, for the message.

  Returns:
    The mask (token 0 forbidden, an allowed token at every position).
  """
  mask = np.asarray(space.token_mask(), dtype=bool)
  shape = (space.token_length, space.vocab_size)
  if mask.shape != shape or mask[:, 0].any() or not mask.any(axis=1).all():
    raise ValueError(f"{strategy}: space {space.name!r} token_mask() must be bool{list(shape)} "
                     "with token 0 forbidden and an allowed token at every position")
  return mask
