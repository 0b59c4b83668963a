"""Petridish's grown networks (Hu et al., NeurIPS 2019): a seed plus a list of added layers.

A grown network is a fixed *seed* (``nas_jax.networks.petridish``: a stem,
then ``stages`` resolutions of ``layers_per_stage`` residual separable-conv
layers, a factorized reduction between resolutions) plus the layers that
growth added to it. The seed's feature maps are numbered *nodes*: each stage
``s`` owns nodes ``s * (L + 1) .. s * (L + 1) + L`` (``L = layers_per_stage``),
the first being the stem (``s = 0``) or the stage's reduction, the rest its
layers' outputs.

An added layer is one row ``(op, input, join)`` of the int32 architecture
``[max_layers, 3]``: ``op`` is 1 + an index into ``OPS`` (0 marks an unused
row, and unused rows come last), ``input`` and ``join`` are nodes of the same
stage with ``input <= join``. The layer computes ``op(node input)`` and adds
it, behind its gate, to node ``join``: later nodes see the sum (an input
equal to the join reads the join's value before the additions). Rows keep the
order in which growth added them, which names their weights (``layer_<row>``),
so a child's first rows are its parent's.

Simplification (documented, not the paper's full macro space): inputs are
seed nodes only (an added layer is not itself an input of later ones) and
every node of a stage has that stage's width.

Example:
    >>> space = PetridishSpace(stages=3, layers_per_stage=1, max_layers=4)
    >>> space.num_nodes, space.node_stage(3)
    (6, 1)
    >>> arch = space.from_genotype({"layers": [{"op": "sep_conv_3x3", "input": 0, "join": 1}]})
    >>> arch[:2].tolist()
    [[4, 0, 1], [0, 0, 0]]
    >>> space.to_genotype(arch)["layers"]
    [{'op': 'sep_conv_3x3', 'input': 0, 'join': 1}]
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.spaces.base import Genotype, SearchSpace

#: Candidate ops (Archai's ``PetridishOp.PRIMITIVES`` without ``none``).
OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
       "dil_conv_3x3", "dil_conv_5x5")
NUM_OPS = len(OPS)


def check_size(space: str, field: str, value: Any) -> None:
  """``ValueError`` naming the space and the field unless ``value`` is an int >= 1 (not a bool)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{space} space: {field} must be an int >= 1, got {value!r}")


class PetridishSpace(SearchSpace):
  """Seed network + added layers ``(op, input, join)`` (see the module docstring).

  Args:
    stages: resolutions (reductions + 1). Petridish's CIFAR seed: 3.
    layers_per_stage: seed layers per resolution (petridishnn ``--init_n=3``
      on CIFAR; 1 here, a CPU-sized seed).
    max_layers: the most layers growth may add (the arch's rows).
  """

  name = "petridish"
  default_evaluator = "scratch"

  def __init__(self, stages: int = 3, layers_per_stage: int = 1, max_layers: int = 16):
    for field, v in (("stages", stages), ("layers_per_stage", layers_per_stage), ("max_layers", max_layers)):
      check_size(self.name, field, v)
    self.stages, self.layers_per_stage, self.max_layers = int(stages), int(layers_per_stage), int(max_layers)
    self.num_nodes = self.stages * (self.layers_per_stage + 1)
    self.arch_shape = (self.max_layers, 3)
    self.token_length = self.max_layers * 3
    self.vocab_size = max(NUM_OPS + 1, self.num_nodes) + 1
    # allowed[j, i]: node i may feed a layer joined at node j.
    n = np.arange(self.num_nodes)
    same = (n[:, None] // (self.layers_per_stage + 1)) == (n[None, :] // (self.layers_per_stage + 1))
    self.allowed = same & (n[None, :] <= n[:, None])

  def __hash__(self):
    return hash((self.name, self.stages, self.layers_per_stage, self.max_layers))

  def __eq__(self, other):
    return isinstance(other, PetridishSpace) and hash(self) == hash(other)

  def node_stage(self, node: int) -> int:
    """The resolution (stage) of a node."""
    return int(node) // (self.layers_per_stage + 1)

  def empty(self) -> np.ndarray:
    """The seed itself: no added layer."""
    return np.zeros(self.arch_shape, np.int32)

  def num_layers(self, arch: Any) -> int:
    """How many rows are used."""
    return int(np.sum(np.asarray(arch)[:, 0] > 0))

  def append(self, arch: Any, rows: list[tuple[int, int, int]]) -> np.ndarray:
    """``arch`` with ``rows`` (``(op, input, join)``, op 1-based) added after its used rows.

    Raises:
      ValueError: more rows than ``max_layers`` allows.
    """
    a = self.validate(arch).copy()
    n = self.num_layers(a)
    if n + len(rows) > self.max_layers:
      raise ValueError(f"petridish: {n} + {len(rows)} layers exceed max_layers={self.max_layers}; "
                       "raise the space's max_layers")
    for k, row in enumerate(rows):
      a[n + k] = row
    return self.validate(a)

  # --- sampling -------------------------------------------------------------
  def _rows(self, u):
    """Rows from uniforms ``u[..., 3]`` in [0, 1): op, join, then an allowed input of that join."""
    allowed = jnp.asarray(self.allowed)
    op = 1 + jnp.floor(u[..., 0] * NUM_OPS).astype(jnp.int32)
    join = jnp.floor(u[..., 1] * self.num_nodes).astype(jnp.int32)
    ok = allowed[join]
    pick = jnp.floor(u[..., 2] * ok.sum(-1)).astype(jnp.int32)
    inp = jnp.argmax(jnp.cumsum(ok, -1) > pick[..., None], axis=-1).astype(jnp.int32)
    return jnp.stack([op, inp, join], -1)

  def sample(self, key: jax.Array) -> jax.Array:
    """A random number of random rows (unused rows last); jittable (one uniform draw)."""
    u = jax.random.uniform(key, (self.max_layers + 1, 3))
    n = jnp.floor(u[-1, 0] * (self.max_layers + 1)).astype(jnp.int32)
    used = jnp.arange(self.max_layers) < n
    return jnp.where(used[:, None], self._rows(u[:-1]), 0).astype(jnp.int32)

  def mutate(self, key: jax.Array, arch: jax.Array) -> jax.Array:
    """Redraws one used row (or adds a first row to the seed); jittable."""
    arch = jnp.asarray(arch, jnp.int32)
    u = jax.random.uniform(key, (4,))
    n = jnp.sum(arch[:, 0] > 0)
    i = jnp.minimum(jnp.floor(u[3] * jnp.maximum(n, 1)).astype(jnp.int32), self.max_layers - 1)
    return arch.at[i].set(self._rows(u[:3]))

  # --- checking and identity ------------------------------------------------
  def validate(self, arch: Any) -> np.ndarray:
    a = np.asarray(arch)
    if a.shape != self.arch_shape:
      raise ValueError(f"petridish arch has shape {a.shape}; expected {self.arch_shape} "
                       "(max_layers rows of (op, input, join))")
    if not np.issubdtype(a.dtype, np.integer):
      if not np.all(np.equal(np.mod(a, 1), 0)):
        raise ValueError("petridish arch must hold integers")
    a = a.astype(np.int32)
    used = a[:, 0] > 0
    if np.any(used[1:] & ~used[:-1]):
      raise ValueError("petridish arch: unused rows (op 0) must come after the used ones")
    for r, (op, inp, join) in enumerate(a):
      if op == 0:
        if inp or join:
          raise ValueError(f"petridish arch row {r}: an unused row must be all zeros")
        continue
      if not 1 <= op <= NUM_OPS:
        raise ValueError(f"petridish arch row {r}: op {op} out of range 1..{NUM_OPS} (1 + index in OPS)")
      if not (0 <= join < self.num_nodes and 0 <= inp < self.num_nodes):
        raise ValueError(f"petridish arch row {r}: nodes must be in 0..{self.num_nodes - 1}, got "
                         f"input {inp}, join {join}")
      if not self.allowed[join, inp]:
        raise ValueError(f"petridish arch row {r}: input {inp} must be a node of join {join}'s stage "
                         "at or before it")
    return a

  def canonical(self, arch: Any) -> np.ndarray:
    """Used rows sorted (the function does not depend on their order), unused rows last."""
    a = self.validate(arch)
    n = self.num_layers(a)
    rows = sorted(tuple(int(v) for v in r) for r in a[:n])
    out = self.empty()
    if rows:
      out[:n] = np.asarray(rows, np.int32)
    return out

  # --- readable form --------------------------------------------------------
  def to_genotype(self, arch: Any) -> Genotype:
    a = self.validate(arch)
    return {"stages": self.stages, "layers_per_stage": self.layers_per_stage,
            "layers": [{"op": OPS[int(op) - 1], "input": int(i), "join": int(j)}
                       for op, i, j in a[:self.num_layers(a)]]}

  def from_genotype(self, genotype: Genotype) -> np.ndarray:
    if not isinstance(genotype, dict) or not isinstance(genotype.get("layers"), list):
      raise ValueError("petridish genotype must be a dict with a 'layers' list of "
                       "{'op', 'input', 'join'}")
    for field, want in (("stages", self.stages), ("layers_per_stage", self.layers_per_stage)):
      if field in genotype and genotype[field] != want:
        raise ValueError(f"petridish genotype has {field}={genotype[field]} but the space has {want}; "
                         f"build PetridishSpace({field}={genotype[field]})")
    layers = genotype["layers"]
    if len(layers) > self.max_layers:
      raise ValueError(f"petridish genotype has {len(layers)} layers > max_layers={self.max_layers}")
    a = self.empty()
    for r, layer in enumerate(layers):
      try:
        a[r] = (OPS.index(layer["op"]) + 1, int(layer["input"]), int(layer["join"]))
      except (KeyError, ValueError, TypeError):
        raise ValueError(f"petridish genotype layer {r} must be {{'op': one of {OPS}, 'input': int, "
                         f"'join': int}}, got {layer!r}") from None
    return self.validate(a)

  # --- token view (value + 1 per field) --------------------------------------
  def to_tokens(self, arch: jax.Array) -> jax.Array:
    return jnp.asarray(arch, jnp.int32).reshape(-1) + 1

  def from_tokens(self, tokens: jax.Array) -> jax.Array:
    return (jnp.asarray(tokens, jnp.int32) - 1).reshape(self.arch_shape)

  def token_mask(self) -> np.ndarray:
    mask = np.zeros((self.token_length, self.vocab_size), bool)
    for t in range(self.token_length):
      hi = NUM_OPS + 1 if t % 3 == 0 else self.num_nodes
      mask[t, 1:hi + 1] = True
    return mask
