"""Petridish (Hu et al., NeurIPS 2019, "Efficient Forward Architecture Search").

Petridish grows networks forward. It keeps a pool of trained models and their
(FLOPs, validation error); each growth job

1. **chooses a parent** near the lower convex hull of the pool's (FLOPs,
   error) (``choose_parent``: the models within ``(1 + convex_hull_eps)`` of
   the hull, sampled with weights favouring models chosen less often and
   cheaper ones; Archai ``petridish_utils.sample_from_hull``);
2. **candidate phase**: attaches candidate layers (every op of ``OPS`` on
   sampled inputs at a sampled join node) to the parent through
   stop-gradient / stop-forward (``networks.petridish.build_candidates``),
   and trains parent and candidates together from the parent's weights for a
   few epochs; the candidates' merge weights carry an L1 penalty;
3. **selects** at most ``select_k`` candidates whose ``|omega|`` clears
   ``select_threshold`` (``networks.petridish.select_candidates``);
4. **child phase**: the parent's arch plus the selected layers, each behind a
   zero-initialised gate, warm-started from the candidate phase's weights
   (``transfer_from_candidates``: the child computes its parent's function at
   step 0), trained for ``child_epochs``; its validation accuracy, FLOPs and
   parameters join the pool.

The first job trains the seed (the space's empty arch) from scratch.

``Petridish`` holds the settings and the pure pieces; the runner's ``growth``
loop (``nas_jax.runner.growth``) runs the jobs, writes the history and the
frontier and resumes after a kill.

Example:
    >>> lower_convex_hull([1.0, 2.0, 3.0, 4.0], [0.5, 0.35, 0.39, 0.2])
    [0, 1, 3]
    >>> eps_hull([1.0, 2.0, 3.0, 4.0], [0.5, 0.35, 0.39, 0.2], eps=0.025)
    [0, 1, 3]
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np

from nas_jax.networks import petridish as nets
from nas_jax.spaces.petridish import NUM_OPS


def _cross(o, a, b) -> float:
  return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def lower_convex_hull(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
  """Indices of the points on the lower convex hull of ``(x, y)``, by increasing x.

  Andrew's monotone chain over the lower side, then cut after the lowest
  ``y``: the hull never rises (a costlier model with more error is never on
  it; Archai ``_convex_hull_from_points`` with ``allow_increase=False``).
  Of points with the same x only the lowest can be on it.

  Example:
    >>> lower_convex_hull([1, 2, 3], [1.0, 0.9, 0.1])  # (2, 0.9) lies above the chord
    [0, 2]
  """
  xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  if xs.shape != ys.shape or xs.ndim != 1:
    raise ValueError(f"lower_convex_hull needs two 1-D sequences of one length, got {xs.shape}, {ys.shape}")
  order = sorted(range(len(xs)), key=lambda i: (xs[i], ys[i], i))
  hull: list[int] = []
  for i in order:
    if hull and xs[hull[-1]] == xs[i]:
      continue  # same cost, more (or equal) error
    while len(hull) >= 2 and _cross((xs[hull[-2]], ys[hull[-2]]), (xs[hull[-1]], ys[hull[-1]]),
                                    (xs[i], ys[i])) <= 0:
      hull.pop()
    hull.append(i)
  if hull:
    best = min(range(len(hull)), key=lambda k: (ys[hull[k]], k))
    hull = hull[:best + 1]
  return hull


def eps_hull(xs: Sequence[float], ys: Sequence[float], eps: float) -> list[int]:
  """Indices of the points within ``(1 + eps)`` of the lower hull's interpolation (x order).

  Right of the hull's last (lowest-error) point the bound is that point's y
  (Archai ``_convex_hull_from_points``' eps band).
  """
  xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
  hull = lower_convex_hull(xs, ys)
  hx, hy = xs[hull], ys[hull]
  out = []
  for i in sorted(range(len(xs)), key=lambda i: (xs[i], ys[i], i)):
    if i in hull:
      out.append(i)
      continue
    if xs[i] < hx[0]:
      continue  # cannot happen: the cheapest point starts the hull
    bound = hy[-1] if xs[i] >= hx[-1] else float(np.interp(xs[i], hx, hy))
    if ys[i] <= bound * (1.0 + eps):
      out.append(i)
  return out


def parent_weights(flops: Sequence[float], counts: Sequence[int]) -> np.ndarray:
  """Sampling probabilities of eps-hull models (Archai ``sample_from_hull``).

  Each model scores ``1 / (1 + scaled count) + 1 / (1 + scaled FLOPs)``, both
  scaled to [0, 1] over the candidates (range 0 -> divide by the max, or 1):
  models chosen less often and cheaper models are preferred.
  """
  def scaled(v):
    v = np.asarray(v, np.float64)
    lo, hi = v.min(), v.max()
    rng = (hi - lo) if hi != lo else hi
    return (v - lo) / (rng if rng != 0 else 1.0)

  s = 1.0 / (scaled(counts) + 1.0) + 1.0 / (scaled(flops) + 1.0)
  return s / s.sum()


def choose_parent(models: Sequence[dict[str, Any]], key: jax.Array, eps: float,
                  exclude: Sequence[int] = ()) -> int:
  """The index (into ``models``) of the next parent.

  Args:
    models: the pool: dicts with ``flops``, ``valid_acc`` (%) and ``parent``
      (the index of its parent, None for the seed); a model whose
      ``valid_acc`` is None never becomes a parent.
    key: ``jax.random.key``: the draw.
    eps: the hull's multiplicative band (``convex_hull_eps``).
    exclude: indices that may shape the hull but cannot be chosen (models
      that cannot grow any more).

  Returns:
    An index into ``models``.

  Raises:
    ValueError: no model near the hull can be chosen.

  Example:
    >>> pool = [{"flops": 1.0, "valid_acc": 50.0, "parent": None},
    ...         {"flops": 2.0, "valid_acc": 40.0, "parent": 0}]  # costlier and worse
    >>> choose_parent(pool, jax.random.key(0), eps=0.025)
    0
  """
  ok = [i for i, m in enumerate(models) if m.get("valid_acc") is not None and m.get("flops") is not None]
  if not ok:
    raise ValueError("choose_parent: no trained model with valid_acc and flops in the pool")
  xs = [float(models[i]["flops"]) for i in ok]
  ys = [1.0 - float(models[i]["valid_acc"]) / 100.0 for i in ok]  # error in [0, 1]
  near = [ok[k] for k in eps_hull(xs, ys, eps) if ok[k] not in set(exclude)]
  if not near:
    raise ValueError("choose_parent: every model near the frontier is excluded (full); raise the "
                     "space's max_layers")
  counts = [sum(1 for m in models if m.get("parent") == i) for i in near]
  p = parent_weights([models[i]["flops"] for i in near], counts)
  u = float(jax.random.uniform(key))
  return near[min(int(np.searchsorted(np.cumsum(p), u, side="right")), len(near) - 1)]


def pareto_front(models: Sequence[dict[str, Any]]) -> list[int]:
  """Indices of the models no other model beats in both FLOPs and error, by increasing FLOPs.

  A model is dominated by one with at most its FLOPs and at most its error,
  better in one of them; of equal models the first trained is kept.

  Example:
    >>> pareto_front([{"flops": 1, "valid_acc": 50.0}, {"flops": 2, "valid_acc": 60.0},
    ...               {"flops": 3, "valid_acc": 55.0}, {"flops": 1, "valid_acc": 50.0}])
    [0, 1]
  """
  ok = [i for i, m in enumerate(models) if m.get("valid_acc") is not None and m.get("flops") is not None]
  out = []
  for i in ok:
    fi, ai = float(models[i]["flops"]), float(models[i]["valid_acc"])
    beaten = any(float(models[j]["flops"]) <= fi and float(models[j]["valid_acc"]) >= ai and
                 (float(models[j]["flops"]) < fi or float(models[j]["valid_acc"]) > ai or j < i)
                 for j in ok if j != i)
    if not beaten:
      out.append(i)
  return sorted(out, key=lambda i: (float(models[i]["flops"]), i))


def frontier(models: Sequence[dict[str, Any]]) -> list[int]:
  """Indices of the models on the lower convex hull of (FLOPs, error)."""
  ok = [i for i, m in enumerate(models) if m.get("valid_acc") is not None and m.get("flops") is not None]
  if not ok:
    return []
  hull = lower_convex_hull([models[i]["flops"] for i in ok],
                           [100.0 - models[i]["valid_acc"] for i in ok])
  return [ok[k] for k in hull]


class Petridish:
  """Petridish's settings and job pieces (run by ``nas_jax.runner.growth``).

  Args:
    space: a ``PetridishSpace``.
    config: settings (``default_config``); unknown keys raise ``ValueError``.
    data: the task's data (an ``ImageDataset`` with a validation split).
    workdir: where jobs keep their checkpoints and weights.
  """

  name = "petridish"
  kind = "growth"
  needs = ("data", "workdir")
  supported_spaces = ("petridish", "petridish_cell")

  def __init__(self, space, config: dict[str, Any] | None = None, *, data: Any = None,
               workdir: str | None = None):
    defaults = self.default_config()
    unknown = sorted(set(config or {}) - set(defaults))
    if unknown:
      raise ValueError(f"unknown petridish setting(s) {unknown}; allowed: {sorted(defaults)}")
    if space.name not in self.supported_spaces:
      raise ValueError(f"strategy 'petridish' grows networks of the 'petridish' (macro) or "
                       f"'petridish_cell' space, not {space.name!r}; use --space petridish")
    self.space, self.data, self.workdir = space, data, workdir
    from nas_jax import networks  # pylint: disable=import-outside-toplevel
    self.family = networks.family(space.name)  # build_child / build_candidates / cost
    self.config = cfg = {**defaults, **(config or {})}
    for name in ("seed_epochs", "candidate_epochs", "child_epochs", "select_k", "joins_per_phase",
                 "inputs_per_join", "init_channels", "batch_size"):
      if not isinstance(cfg[name], int) or isinstance(cfg[name], bool) or cfg[name] < 1:
        raise ValueError(f"petridish: {name} must be an int >= 1, got {cfg[name]!r}")
    for name in ("select_threshold", "convex_hull_eps", "lr"):
      if not isinstance(cfg[name], (int, float)) or cfg[name] < 0:
        raise ValueError(f"petridish: {name} must be a number >= 0, got {cfg[name]!r}")
    if data is not None and "valid" not in getattr(data, "labels", {"valid": None}):
      raise ValueError("petridish needs a validation split to place models on the frontier; "
                       "set data.valid_fraction (e.g. --set data.valid_fraction=0.2)")

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    """Settings, each with its source."""
    return {
        # Epochs. petridishnn trains each model for --max_train_model_epoch=40 (CIFAR scripts:
        # --debug_child_max_epoch=40); CPU-sized here for the digits data.
        "seed_epochs": 6,
        "candidate_epochs": 2,
        "child_epochs": 3,
        # Candidates: every op of Archai's PetridishOp.PRIMITIVES (without 'none') on up to
        # inputs_per_join inputs at joins_per_phase sampled join nodes (ours; Archai attaches one
        # PetridishOp per search iteration).
        "joins_per_phase": 1,
        "inputs_per_join": 2,
        # Selection: the 3 largest |omega| (Archai PetridishOp.finalize: heapq.nlargest(3)); a
        # threshold on |omega| (petridishnn --hallu_feat_sel_threshold, no default there; ours).
        "select_k": 3,
        "select_threshold": 1e-3,
        # Parent choice: eps band of the lower convex hull (Archai confs petridish.yaml
        # convex_hull_eps 0.025).
        "convex_hull_eps": 0.025,
        # Network width and training (petridishnn --init_channel=16; lr / batch: the image
        # task's defaults, nas_jax.tasks.images).
        "init_channels": 16,
        "batch_size": 64,
        "lr": 0.025,
    }

  # --- pieces of a job ---------------------------------------------------------
  def train_config(self, epochs: int) -> dict[str, Any]:
    """``train_child`` settings of a job with ``epochs`` epochs."""
    c = self.config
    return {"epochs": int(epochs), "batch_size": c["batch_size"], "lr": c["lr"],
            "init_channels": c["init_channels"], "eval_test": False}

  def network(self) -> dict[str, Any]:
    """``build_child`` keywords of the searched networks."""
    return {"num_classes": self.data.num_classes, "init_channels": self.config["init_channels"]}

  def cost(self, arch: Any) -> dict[str, int]:
    """FLOPs and parameters of ``arch``'s network at the search's width."""
    return self.family.cost(arch, space=self.space, input_shape=tuple(self.data.image_shape),
                            **self.network())

  def propose_candidates(self, arch: Any, key: jax.Array) -> list[tuple[int, int, int]]:
    """Candidate rows for a parent: every op on sampled inputs at sampled join nodes."""
    space = self.space
    k_join, k_in = jax.random.split(key)
    n_join = min(self.config["joins_per_phase"], space.num_nodes)
    joins = np.asarray(jax.random.choice(k_join, space.num_nodes, (n_join,), replace=False))
    rows = []
    for t, j in enumerate(sorted(int(v) for v in joins)):
      allowed = np.flatnonzero(space.allowed[j])
      n_in = min(self.config["inputs_per_join"], len(allowed))
      pick = np.asarray(jax.random.choice(jax.random.fold_in(k_in, t), len(allowed), (n_in,), replace=False))
      rows += nets.candidate_rows(space, j, sorted(int(allowed[i]) for i in pick), range(1, NUM_OPS + 1))
    free = space.max_layers - space.num_layers(arch)
    if free < 1:
      return []
    return rows

  def select(self, omega: Any, free_rows: int) -> tuple[list[int], str]:
    """Selected candidate indices and how (``"threshold"`` or ``"fallback_top1"``)."""
    k = min(self.config["select_k"], free_rows)
    chosen = nets.select_candidates(omega, k, self.config["select_threshold"])
    if chosen:
      return chosen, "threshold"
    return nets.select_candidates(omega, 1, -math.inf), "fallback_top1"
