"""Petridish's cell-based growth: a normal and a reduction cell, each shared by all its instances.

The network (``nas_jax.networks.petridish_cell``) is a stem, then per
resolution ``cells_per_stage`` normal cells, a reduction cell between
resolutions (DARTS' layout). Every cell reads the two previous cells' outputs
(``in0``, ``in1``, each projected to the cell's width) and its seed computes
one node ``sep_conv_3x3(in1) + skip(in0)`` (stride 2 in a reduction cell).

Growth adds layers to a *cell type*: a row ``(op, input, cell)`` of the int32
arch ``[max_layers, 3]`` adds ``op(input)`` behind a gate to the node of every
cell of that type (``cell`` 0: normal, 1: reduction); ``input`` is ``in0``
(0), ``in1`` (1) or the node itself before the additions (2). Op 0 marks an
unused row; rows keep the order of growth (it names their weights).

Example:
    >>> space = PetridishCellSpace(max_layers=4)
    >>> arch = space.from_genotype({"layers": [{"cell": "reduce", "op": "max_pool_3x3", "input": "in1"}]})
    >>> arch[0].tolist(), space.to_genotype(arch)["layers"]
    ([1, 1, 1], [{'cell': 'reduce', 'op': 'max_pool_3x3', 'input': 'in1'}])
"""
from __future__ import annotations

from typing import Any

import numpy as np

from nas_jax.spaces.base import Genotype
from nas_jax.spaces.petridish import NUM_OPS, OPS, PetridishSpace, check_size

CELLS = ("normal", "reduce")
INPUTS = ("in0", "in1", "node")


class PetridishCellSpace(PetridishSpace):
  """Cell-based Petridish growth (see the module docstring).

  Args:
    stages: resolutions (Petridish's CIFAR cell search: 3).
    cells_per_stage: normal cells per resolution (CPU-sized: 1).
    max_layers: the most layers growth may add, both cell types together.
  """

  name = "petridish_cell"

  def __init__(self, stages: int = 3, cells_per_stage: int = 1, max_layers: int = 16):
    check_size(self.name, "cells_per_stage", cells_per_stage)  # the parent would call it layers_per_stage
    super().__init__(stages=stages, layers_per_stage=cells_per_stage, max_layers=max_layers)
    self.cells_per_stage = self.layers_per_stage
    # "Nodes" of the generic growth code are the join positions: one per cell type.
    self.num_nodes = len(CELLS)
    self.allowed = np.ones((len(CELLS), len(INPUTS)), bool)
    self.vocab_size = max(NUM_OPS + 1, len(INPUTS)) + 1

  def __hash__(self):
    return hash((self.name, self.stages, self.cells_per_stage, self.max_layers))

  def node_stage(self, node: int) -> int:
    raise ValueError("petridish_cell has no per-stage nodes: a row's join is a cell type")

  def validate(self, arch: Any) -> np.ndarray:
    a = np.asarray(arch)
    if a.shape != self.arch_shape:
      raise ValueError(f"petridish_cell arch has shape {a.shape}; expected {self.arch_shape} "
                       "(max_layers rows of (op, input, cell))")
    if not np.issubdtype(a.dtype, np.integer) and not np.all(np.equal(np.mod(a, 1), 0)):
      raise ValueError("petridish_cell arch must hold integers")
    a = a.astype(np.int32)
    used = a[:, 0] > 0
    if np.any(used[1:] & ~used[:-1]):
      raise ValueError("petridish_cell arch: unused rows (op 0) must come after the used ones")
    for r, (op, inp, cell) in enumerate(a):
      if op == 0:
        if inp or cell:
          raise ValueError(f"petridish_cell arch row {r}: an unused row must be all zeros")
        continue
      if not 1 <= op <= NUM_OPS:
        raise ValueError(f"petridish_cell arch row {r}: op {op} out of range 1..{NUM_OPS}")
      if not 0 <= inp < len(INPUTS):
        raise ValueError(f"petridish_cell arch row {r}: input {inp} must be 0 (in0), 1 (in1) or 2 (node)")
      if not 0 <= cell < len(CELLS):
        raise ValueError(f"petridish_cell arch row {r}: cell {cell} must be 0 (normal) or 1 (reduce)")
    return a

  def to_genotype(self, arch: Any) -> Genotype:
    a = self.validate(arch)
    return {"stages": self.stages, "cells_per_stage": self.cells_per_stage,
            "layers": [{"cell": CELLS[int(c)], "op": OPS[int(op) - 1], "input": INPUTS[int(i)]}
                       for op, i, c in a[:self.num_layers(a)]]}

  def from_genotype(self, genotype: Genotype) -> np.ndarray:
    if not isinstance(genotype, dict) or not isinstance(genotype.get("layers"), list):
      raise ValueError("petridish_cell genotype must be a dict with a 'layers' list of "
                       "{'cell', 'op', 'input'}")
    for field, want in (("stages", self.stages), ("cells_per_stage", self.cells_per_stage)):
      if field in genotype and genotype[field] != want:
        raise ValueError(f"petridish_cell genotype has {field}={genotype[field]} but the space has "
                         f"{want}; build PetridishCellSpace({field}={genotype[field]})")
    layers = genotype["layers"]
    if len(layers) > self.max_layers:
      raise ValueError(f"petridish_cell genotype has {len(layers)} layers > max_layers={self.max_layers}")
    a = self.empty()
    for r, layer in enumerate(layers):
      try:
        a[r] = (OPS.index(layer["op"]) + 1, INPUTS.index(layer["input"]), CELLS.index(layer["cell"]))
      except (KeyError, ValueError, TypeError):
        raise ValueError(f"petridish_cell genotype layer {r} must be {{'cell': one of {CELLS}, 'op': one "
                         f"of {OPS}, 'input': one of {INPUTS}}}, got {layer!r}") from None
    return self.validate(a)

  def token_mask(self) -> np.ndarray:
    mask = np.zeros((self.token_length, self.vocab_size), bool)
    for t in range(self.token_length):
      hi = (NUM_OPS + 1, len(INPUTS), len(CELLS))[t % 3]
      mask[t, 1:hi + 1] = True
    return mask
