"""Networks of the ``rnn`` space: the recurrent language model of one cell.

Architecture (see ``nas_jax.spaces.rnn``): ``int32[N, 2]`` indexed ``[node,
(input, activation)]``, activations ``0 tanh, 1 relu, 2 identity, 3 sigmoid``.

Cell (ENAS ``ptb_enas_child.py`` ``_rhn_fixed``, DARTS ``rnn/model.py``
``DARTSCell``), with ``m_x``, ``m_h`` per-sequence dropout masks::

    node 0:  [c, g] = [x_t * m_x, h_{t-1} * m_h] @ W_0        W_0: (E + H, 2H)
             s_0 = h_{t-1} + sigmoid(c) * (act_0(g) - h_{t-1})
    node i:  [c, g] = (s_j * m_h) @ W_i                       W_i: (H, 2H), j = input of i
             s_i = s_j + sigmoid(c) * (act_i(g) - s_j)
    h_t = mean of the output nodes (loose ends for ENAS's rule, nodes 1..N-1
          for DARTS's; ``nas_jax.spaces.rnn.output_nodes``)

i.e. the highway update ``s = c * act(g) + (1 - c) * s_prev``. No biases in
the cell, as both papers. The cell runs over time with ``lax.scan``; the input
half of node 0's matmul (``x_t @ W_0[:E]``) is computed for the whole window
before the scan (one large matmul instead of T small ones; the same function).

Model (DARTS ``RNNModel``): embedding (E) -> word dropout ``dropout_e`` (a
vocabulary row is zeroed for the whole window with probability p, DARTS
``embedded_dropout``) -> locked dropout ``dropout_i`` (one mask per sequence,
shared over time) -> cell (``dropout_x`` on its input, ``dropout_h`` on every
node input read from a hidden state, masks shared over time) -> locked dropout
``dropout_o`` -> decoder tied to the embedding (``logits = y @ E^T + b``), so
``emb_size == hidden_size`` (DARTS asserts ``ninp == nhid``). Masks are drawn
per call (per BPTT window) from the rng stream ``"dropout"``, scaled by
``1 / (1 - p)``, and only when ``train=True``. Initialisation: every weight
uniform in ``[-init_range, init_range]`` (DARTS ``INITRANGE = 0.04``), decoder
bias 0.

``__call__(tokens int32[B, T], hidden float32[B, H], *, train) -> (logits
float32[B, T, V], new_hidden float32[B, H])``. The initial hidden state is
zeros: ``model.initial_hidden(batch_size)`` or ``initial_hidden(batch_size,
hidden_size)``. The cell outputs before the output dropout (``[B, T, H]``, for
DARTS/ENAS's slowness regulariser) are sown into the ``"intermediates"``
collection as ``"cell_outputs"`` (``apply(..., mutable=["intermediates"])``).

The architecture is a Python constant of the child (a tuple), so each
architecture compiles its own train step (measured: see
``nas_jax.tasks.language_model``). ENAS's weight-sharing language model, with
the architecture traced, is ``nas_jax.networks.rnn_supernet`` (its own
signatures: the step carries the hidden state, so ``FAMILY.supernet`` stays
None until ``networks.base.WeightSharing`` has room for it); there is no
continuous relaxation.

Costs (``count_cost``; ``FAMILY.cost`` for the runner, ``flops`` = multiply-adds
per token): every node has its weights whatever the architecture, so
parameters and multiply-adds depend on N, E, H and V only.

Example:
    >>> from nas_jax.spaces.rnn import RNNSpace
    >>> space = RNNSpace()
    >>> model = build_child(space, space.sample(jax.random.key(0)), vocab_size=100,
    ...                     emb_size=16, hidden_size=16)
    >>> tokens = jnp.zeros((2, 5), jnp.int32)
    >>> variables = model.init({"params": jax.random.key(1)}, tokens, model.initial_hidden(2), train=False)
    >>> logits, h = model.apply(variables, tokens, model.initial_hidden(2), train=False)
    >>> logits.shape, h.shape
    ((2, 5, 100), (2, 16))
"""
from __future__ import annotations

import dataclasses
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nas_jax.spaces.rnn import ACTIVATIONS, output_nodes

#: DARTS rnn/model.py INITRANGE.
INIT_RANGE = 0.04
#: Dropout probabilities of DARTS's final PTB training (rnn/train.py): output
#: 0.75, hidden 0.25, cell input 0.75, embedding output 0.2, words 0.1. ENAS
#: (scripts/ptb_final.sh keep probabilities): words 0.21, x 0.75, h 0.25, output 0.76.
PAPER_DROPOUT = {"dropout_e": 0.1, "dropout_i": 0.2, "dropout_x": 0.75, "dropout_h": 0.25,
                 "dropout_o": 0.75}


def _activation(a: int):
  name = ACTIVATIONS[a]
  return {"tanh": jnp.tanh, "relu": jax.nn.relu, "identity": lambda v: v,
          "sigmoid": jax.nn.sigmoid}[name]


def initial_hidden(batch_size: int, hidden_size: int) -> jax.Array:
  """The initial hidden state: ``zeros float32[batch_size, hidden_size]``."""
  return jnp.zeros((batch_size, hidden_size), jnp.float32)


def dropout_masks(key: jax.Array, probs: dict[str, float],
                  shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
  """Inverted-dropout masks (``1/keep`` where kept, else 0), None where ``p == 0``.

  All masks come from one ``jax.random.bits`` draw (a value is kept when its
  32 random bits are below ``keep * 2**32``), cut in the order of ``shapes``:
  one threefry call compiles in a fraction of the time of five ``bernoulli``.
  The child (``RNNChild``) and the supernet (``nas_jax.networks.rnn_supernet``)
  both draw their masks here.

  Example:
    >>> m = dropout_masks(jax.random.key(0), {"dropout_h": 0.5, "dropout_o": 0.0},
    ...                   {"dropout_h": (2, 3), "dropout_o": (2, 1, 3)})
    >>> m["dropout_h"].shape, m["dropout_o"]
    ((2, 3), None)
  """
  on = [name for name in shapes if probs[name] > 0.0]
  out: dict[str, Any] = {name: None for name in shapes}
  if not on:
    return out
  sizes = [int(np.prod(shapes[name])) for name in on]
  bits = jax.random.bits(key, (sum(sizes),), jnp.uint32)
  start = 0
  for name, size in zip(on, sizes):
    keep = 1.0 - probs[name]
    threshold = np.uint32(min(int(round(keep * 2.0**32)), 2**32 - 1))
    kept = bits[start:start + size] < threshold
    out[name] = kept.reshape(shapes[name]).astype(jnp.float32) / keep
    start += size
  return out


# Random draws are made flat and reshaped: XLA:CPU compiles some multi-dimensional
# threefry draws for seconds (tests/conftest.py), the flat draw in a fraction.
def _uniform(scale: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, (int(np.prod(shape)),), dtype, -scale, scale).reshape(shape)
  return init


class RNNChild(nn.Module):
  """The language model of one recurrent cell (see the module docstring).

  Attributes:
    arch: ``((input, activation), ...)``, one pair per node.
    out_nodes: the nodes averaged into the cell output.
    vocab_size, emb_size, hidden_size: V, E, H (E == H: tied decoder).
    dropout_e, dropout_i, dropout_x, dropout_h, dropout_o: dropout
      probabilities (words, embedding output, cell input, hidden, output).
    init_range: uniform initialisation range.
  """
  arch: tuple
  out_nodes: tuple
  vocab_size: int
  emb_size: int
  hidden_size: int
  dropout_e: float = PAPER_DROPOUT["dropout_e"]
  dropout_i: float = PAPER_DROPOUT["dropout_i"]
  dropout_x: float = PAPER_DROPOUT["dropout_x"]
  dropout_h: float = PAPER_DROPOUT["dropout_h"]
  dropout_o: float = PAPER_DROPOUT["dropout_o"]
  init_range: float = INIT_RANGE

  def initial_hidden(self, batch_size: int) -> jax.Array:
    """``zeros float32[batch_size, hidden_size]``."""
    return initial_hidden(batch_size, self.hidden_size)

  def _masks(self, shapes: dict[str, tuple[int, ...]], train: bool) -> dict[str, Any]:
    """Dropout masks of the given shapes (``dropout_masks``), None when off."""
    probs = {name: getattr(self, name) for name in shapes}
    if not train or not any(p > 0.0 for p in probs.values()):
      return {name: None for name in shapes}
    return dropout_masks(self.make_rng("dropout"), probs, shapes)

  @nn.compact
  def __call__(self, tokens: jax.Array, hidden: jax.Array, *, train: bool):
    chex.assert_rank([tokens, hidden], [2, 2])
    b, t = tokens.shape
    e, h_size, v = self.emb_size, self.hidden_size, self.vocab_size
    chex.assert_shape(hidden, (b, h_size))
    init = _uniform(self.init_range)
    emb_w = self.param("embedding", init, (v, e))
    w0 = self.param("w0", init, (e + h_size, 2 * h_size))
    ws = self.param("w", init, (len(self.arch) - 1, h_size, 2 * h_size))
    bias = self.param("decoder_bias", nn.initializers.zeros, (v,))

    masks = self._masks({"dropout_e": (v, 1), "dropout_i": (b, 1, e), "dropout_x": (b, 1, e),
                         "dropout_h": (b, h_size), "dropout_o": (b, 1, h_size)}, train)
    x = jnp.take(emb_w, tokens, axis=0)  # [B, T, E]
    if masks["dropout_e"] is not None:  # a vocabulary row dropped for the whole window (DARTS embedded_dropout)
      x = x * jnp.take(masks["dropout_e"], tokens, axis=0)
    for name in ("dropout_i", "dropout_x"):  # embedding output, then cell input (both locked over time)
      if masks[name] is not None:
        x = x * masks[name]
    m_h = masks["dropout_h"]

    xw = jnp.einsum("bte,ef->tbf", x, w0[:e])  # node 0's input half, [T, B, 2H]
    w0_h = w0[e:]
    acts = [_activation(int(a)) for _, a in self.arch]
    out_nodes = self.out_nodes

    def drop_h(s):
      return s if m_h is None else s * m_h

    def step(h_prev, xw_t):
      ch = xw_t + drop_h(h_prev) @ w0_h
      c, g = jnp.split(ch, 2, axis=-1)
      states = [h_prev + jax.nn.sigmoid(c) * (acts[0](g) - h_prev)]
      for i in range(1, len(self.arch)):
        s_prev = states[self.arch[i][0]]
        c, g = jnp.split(drop_h(s_prev) @ ws[i - 1], 2, axis=-1)
        states.append(s_prev + jax.nn.sigmoid(c) * (acts[i](g) - s_prev))
      out = sum(states[k] for k in out_nodes) / len(out_nodes)
      return out, out

    # (Measured: batching the nodes of one tree depth into one matmul ran 1.4-2.6x
    # slower per step and compiled slower than this node-by-node body.)
    new_hidden, outs = lax.scan(step, hidden.astype(jnp.float32), xw)
    outs = jnp.swapaxes(outs, 0, 1)  # [B, T, H]
    self.sow("intermediates", "cell_outputs", outs)
    if masks["dropout_o"] is not None:
      outs = outs * masks["dropout_o"]
    logits = outs @ emb_w.T + bias
    return logits, new_hidden


def build_child(space: Any, arch: Any, *, vocab_size: int, emb_size: int, hidden_size: int,
                dropout_e: float = PAPER_DROPOUT["dropout_e"], dropout_i: float = PAPER_DROPOUT["dropout_i"],
                dropout_x: float = PAPER_DROPOUT["dropout_x"], dropout_h: float = PAPER_DROPOUT["dropout_h"],
                dropout_o: float = PAPER_DROPOUT["dropout_o"], init_range: float = INIT_RANGE) -> RNNChild:
  """The language model of ``arch`` (a flax module, see ``RNNChild``).

  Args:
    space: the ``rnn`` search space (validates ``arch``; gives the output rule).
    arch: int32[N, 2].
    vocab_size: V.
    emb_size: E (DARTS 850, ENAS 748; the task's CPU default 64).
    hidden_size: H; must equal ``emb_size`` (tied decoder).
    dropout_e, dropout_i, dropout_x, dropout_h, dropout_o: dropout
      probabilities in ``[0, 1)`` (defaults: DARTS's final training).
    init_range: uniform initialisation range (DARTS 0.04).

  Returns:
    ``RNNChild``; ``apply(variables, tokens, hidden, train=..., rngs={"dropout": key})``
    returns ``(logits, new_hidden)``.

  Raises:
    ValueError: a bad architecture, sizes, or dropout probability.

  Example:
    >>> from nas_jax.spaces.rnn import published
    >>> space, arch = published("darts_v2")
    >>> build_child(space, arch, vocab_size=10000, emb_size=850, hidden_size=850).out_nodes
    (1, 2, 3, 4, 5, 6, 7, 8)
  """
  a = space.validate(arch)
  for name, value in (("vocab_size", vocab_size), ("emb_size", emb_size), ("hidden_size", hidden_size)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"rnn network {name}={value!r}: must be an int >= 1")
  if emb_size != hidden_size:
    raise ValueError(f"rnn network emb_size={emb_size} != hidden_size={hidden_size}: the decoder is tied "
                     "to the embedding (as in DARTS/ENAS), so set them equal")
  drops = {"dropout_e": dropout_e, "dropout_i": dropout_i, "dropout_x": dropout_x,
           "dropout_h": dropout_h, "dropout_o": dropout_o}
  for name, p in drops.items():
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0.0 <= p < 1.0:
      raise ValueError(f"rnn network {name}={p!r}: must be a probability in [0, 1)")
  if not isinstance(init_range, (int, float)) or not init_range > 0:
    raise ValueError(f"rnn network init_range={init_range!r}: must be > 0")
  return RNNChild(arch=tuple((int(i), int(act)) for i, act in a),
                  out_nodes=output_nodes(a, getattr(space, "output", "loose_ends")),
                  vocab_size=int(vocab_size), emb_size=int(emb_size), hidden_size=int(hidden_size),
                  init_range=float(init_range), **{k: float(p) for k, p in drops.items()})


def count_cost(space: Any, arch: Any, *, vocab_size: int, emb_size: int,
               hidden_size: int) -> dict[str, int]:
  """Multiply-adds per token and parameter count of the child of ``arch``.

  Matmuls only (gates and activations are O(H) per node): the cell does
  ``(E + H) * 2H`` for node 0 and ``H * 2H`` for each other node; the decoder
  ``H * V``. Parameters (DARTS's final PTB model, E = H = 850: 22.96M; the
  paper reports 23M): the tied embedding ``V * E``, the decoder bias ``V``
  and the cell's ``(E + H) * 2H + (N - 1) * H * 2H``. Neither depends on the
  architecture beyond N (every node has its weights).

  Args:
    space: the ``rnn`` space (validates ``arch``).
    arch: int32[N, 2].
    vocab_size, emb_size, hidden_size: V, E, H.

  Returns:
    ``{"cell_macs": ..., "decoder_macs": ..., "macs": ...}`` per token and
    ``"params"``, ``"cell_params"``.

  Example:
    >>> from nas_jax.spaces.rnn import published
    >>> space, arch = published("darts_v2")
    >>> count_cost(space, arch, vocab_size=10000, emb_size=850, hidden_size=850)["params"]
    22960000
  """
  n = space.validate(arch).shape[0]
  e, h, v = int(emb_size), int(hidden_size), int(vocab_size)
  cell = (e + h) * 2 * h + (n - 1) * h * 2 * h
  return {"cell_macs": cell, "decoder_macs": h * v, "macs": cell + h * v,
          "cell_params": cell, "params": v * e + v + cell}


@dataclasses.dataclass(frozen=True)
class RNNFamily:
  """The ``rnn`` space's networks (``nas_jax.networks.base.NetworkFamily``).

  Example:
    >>> FAMILY.name, FAMILY.tasks, FAMILY.supernet
    ('rnn', ('language_model',), None)
  """
  name: str = "rnn"
  tasks: tuple[str, ...] = ("language_model",)
  supernet: Any = None
  continuous: Any = None

  def build_child(self, space: Any, arch: Any, **config: Any) -> RNNChild:
    """See the module's ``build_child``."""
    return build_child(space, arch, **config)

  def cost(self, arch: Any, *, vocab_size: int, emb_size: int, hidden_size: int,
           input_shape: Any = None, **unused: Any) -> dict[str, int]:
    """``count_cost`` in the runner's form (``nas_jax.runner.costs.CostModel``).

    ``flops`` is the multiply-adds **per token** (``macs``), ``params`` the
    parameter count; ``input_shape`` (the window length) and the other
    ``build_child`` keywords (dropouts) do not change them.

    Example:
      >>> FAMILY.cost(np.zeros((12, 2), np.int32), vocab_size=10000, emb_size=64, hidden_size=64)["flops"]
      746496
    """
    del input_shape, unused
    from nas_jax.spaces.rnn import RNNSpace  # pylint: disable=import-outside-toplevel
    a = np.asarray(arch)
    if a.ndim != 2 or a.shape[0] < 2:
      raise ValueError(f"rnn arch has shape {a.shape}; expected (num_nodes, 2)")
    c = count_cost(RNNSpace(num_nodes=a.shape[0]), a, vocab_size=vocab_size, emb_size=emb_size,
                   hidden_size=hidden_size)
    return {"flops": c["macs"], **c}


FAMILY = RNNFamily()
