"""BayesNAS: hierarchical ARD priors on op switches (Zhou, Yang, Wang & Pan, ICML 2019).

Every op of every edge of the space's relaxed cell is multiplied by a scalar
*switch* ``s_op[t, e, o]`` and every edge by an edge-level switch
``s_edge[t, e]`` (``t`` the cell type: normal / reduction for ``darts``, one
shared cell for ``nb201``). The relaxation (``ContinuousRelaxation.apply``)
gets the raw products ``w[t, e, o] = s_edge[t, e] * s_op[t, e, o]`` as its op
weights (``none`` is masked to 0: its output is zero, so its switch carries
no information). Switches start at 1 (authors' ``nn.Parameter(torch.ones(1))``).

The prior (paper section 3)
---------------------------
Each switch has a zero-mean Gaussian prior of variance ``gamma`` (automatic
relevance determination); an op's switch sits below its edge's switch, and
the hierarchy enters through the op's effective variance
``1 / gamma_op <- 1 / gamma_op + 1 / gamma_edge`` (an op is no more relevant
than its edge: a pruned edge prunes its ops). With a Laplace approximation of
the training loss around the current switches (curvature ``H``, diagonal
``h``) and ``lambda`` in the role of the noise variance, the type-II maximum
likelihood over ``gamma`` is handled by the re-weighted group penalty of
Wipf & Nagarajan (2010) that the paper adopts; per outer iteration:

    C      = (1 / gamma + h / lambda)^-1                    (posterior variance, diagonal)
    omega  = sqrt( sum_group (1 / gamma - C / gamma^2) )     (= sqrt(sum h~ / (1 + h~ gamma)), h~ = h / lambda)
    gamma  = ||s_group|| / omega
    gamma_op <- (1 / gamma_op + 1 / gamma_edge)^-1
    loss   = CE(w, s) + lambda * sum_groups omega * ||s_group||

(the closed form of ``omega`` follows from the diagonal ``C``:
``1/gamma - 1/(gamma^2 (1/gamma + h~)) = h~ / (1 + h~ gamma)``). The switches
here are shared by all cells of a type (the relaxation's weights), so every
group is one scalar and ``||s_group|| = |s|``; the authors' code keeps one
copy per cell and groups a switch's copies across the cells of a type. Their
code takes the absolute value inside ``omega`` to survive negative
curvature (a non-convex loss, or a noisy estimate); here ``|h|`` is used
throughout (``C`` and ``omega``), which equals the formulas above for
``h >= 0`` and keeps ``C`` positive. (Clipping ``h`` at 0 instead, tried
first, sends ``omega`` to 0 and ``gamma`` to infinity for every switch with a
negative estimate: on nb201/digits a third of them after one update.)
``lambda`` (config ``lam`` for op switches, ``lam_edge`` for edge switches,
the authors' ``--lambda_child`` / ``--lambda_origin``) is the paper's
sparsity knob: 0.01 / 0.007 / 0.005 are its CIFAR-10 settings (the authors'
``pre_trained/0.01``, ``0.007``, ``0.005`` networks).

Schedule (paper Algorithm 1; the authors' ``main.py``: one epoch of weights,
then ``train_switch``: one epoch of weights and switches, then
``algorithm.update``): an *outer iteration* is ``weight_epochs`` epochs of
weight steps (switches frozen), then ``switch_epochs`` epochs of joint steps
on the penalised loss, then the prior update above at the end of the last
step. The runner's budget counts epochs, so a budget of 6 with the defaults
is 3 outer iterations. One jitted step serves both phases (the phase is a
traced 0/1 factor on the switch update).

Hessian w.r.t. the switches (``hessian``)
-----------------------------------------
The update needs the diagonal of the Hessian of the training loss w.r.t. the
switches. The exact diagonal is one Hessian-vector product per switch (252 on
the ``darts`` space: 2 x 14 x 8 op switches and 28 edge switches; 36 on
``nb201``), each about 3 training steps of work, so about 750 steps on
``darts``. Nothing in the structure makes it cheaper: a switch ``s`` scales
one op's output ``y`` into a node ``z``, so ``d2L/ds2 = y^T (d2L/dz2) y``, a
different direction for every switch, and the off-diagonal terms between
switches (same node, other cells sharing the switch, later cells) are not
zero, so no grouping of probe vectors recovers the diagonal exactly.

* ``"exact"``: the exact diagonal, ``e_i^T H e_i`` for every switch by
  forward-over-reverse (``jax.jvp`` of ``jax.grad``, ``lax.map`` over the
  basis: one compiled HVP, S runs). Equal to ``jnp.diag(jax.hessian(loss))``
  (tested). The choice for ``nb201`` (36 switches) and small networks.
* ``"hutchinson"`` (default on ``darts``): Hutchinson's diagonal estimator
  (Bekas, Kokiopoulou & Saad 2007, as in AdaHessian / PyHessian):
  ``z * (H z)`` with a Rademacher probe ``z``, one HVP per probe, averaged
  over ``hessian_batches`` training batches (one probe each, a fresh batch
  each: the Laplace approximation wants the curvature of the whole training
  loss, which one batch estimates anyway). Unbiased for ``diag(H)``; exact
  when ``H`` is diagonal (tested), with variance ``sum_{j != i} H_ij^2``
  otherwise, which the averaging over batches reduces. Cost: one HVP, within
  the 5x of one training step the issue asks for. Measured
  (``benchmarks/bayesnas.py``: ``darts`` relaxation, 8 cells, C = 16,
  32x32x3, batch 64, 2 cores shared at load 9-12, medians of 3 alternating
  calls): training step 43.7 s, Hessian diagonal 68.4 s, ratio 1.57;
  compilation 341 s and 516 s. The exact diagonal would be 252 such HVPs.

The authors' code computes a third thing: a layer-wise *diagonal
back-propagation* of second derivatives (Becker & LeCun 1989; the
``Algorithm.compute_hessian`` passes of ``search/Algorithm.py``), which drops
every off-diagonal term inside each layer and averages the activations'
derivatives over the batch before propagating; it is neither the exact
diagonal nor unbiased for it, and it needs a hand-written rule per op, so it
is not reproduced. ``"auto"`` picks ``"exact"`` up to ``exact_max_switches``
switches and ``"hutchinson"`` above.

Pruning and the discrete architecture (``derive``)
--------------------------------------------------
The paper prunes a switch whose relevance ``gamma`` falls below a threshold
(config ``prune_threshold``; the authors' public code has no pruning step, so
the rule below is derived from the paper's model): a pruned edge switch
prunes the whole edge, and through the hierarchy (``gamma_op <=
gamma_edge``) every op on it. Ops are ranked by ``gamma_op`` (the posterior
relevance, not the switch magnitude the paper argues against), ties (e.g.
before the first update, when all ``gamma`` are equal) by ``|w|``.

* ``nb201`` (one op per edge): an edge keeps its most relevant surviving op
  (``none`` when nothing survives). A node is kept only if it lies on a path
  from the cell input (node 0) to the output (node 3); edges into or out of a
  dropped node become ``none``. If pruning cut every path, the path whose
  weakest edge is strongest is restored (each edge with its best op), so the
  kept nodes always connect input to output.
* ``darts`` (two inputs per node, all nodes concatenated into the output): a
  node keeps its two strongest surviving incoming edges (distinct inputs, as
  DARTS), each with its best op; where fewer than two survive, the strongest
  pruned edges fill the slots (the genotype needs two inputs per node), so
  every node stays connected to the cell inputs.

``summary`` counts the surviving switches per edge and the slots filled
against the threshold (``forced``).

Optimisers: weights as DARTS (SGD, momentum 0.9, cosine lr 0.025 -> 0.001,
weight decay per space, gradient clipping 5: the same budget and schedule as
``darts`` for comparisons; the authors use lr 0.1, weight decay 1e-4);
switches SGD with momentum 0.9, lr ``switch_lr`` 0.1, no weight decay (the
authors' ``optimizer_no_weight_decay``).

State (checkpointed by the runner)::

    {"params", "batch_stats", "momentum",             # network and its SGD buffers
     "switches": {"edge", "op"}, "switch_momentum": {"edge", "op"},
     "prior": {"gamma_edge", "gamma_op", "omega_edge", "omega_op",
               "cov_edge", "cov_op", "hess_edge", "hess_op"},
     "step", "iteration",                             # int64: steps, prior updates done
     "data": {"train_seed", "train_epoch", "train_step", "hessian_seed"}}

Example:
    >>> import nas_jax.data
    >>> from nas_jax import registry
    >>> data = nas_jax.data.load_dataset("digits", train_size=64, valid_fraction=0.5)
    >>> m = BayesNAS(registry.get_space("nb201"), {"init_channels": 4, "layers": 1, "epochs": 4}, data=data)
    >>> m.config["lam"], m.hessian_mode, m.num_switches
    (0.01, 'exact', 36)

  A search (not run here: the relaxed network's step compiles for tens of
  seconds)::

    state = m.init(jax.random.key(0))
    for t in range(4 * m.steps_per_epoch()):
      state, metrics = m.step(state, jax.random.key(t))
    m.derive(state), m.summary(state)["surviving"]
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from nas_jax.data import images as data_lib
from nas_jax.oneshot import darts as darts_lib
from nas_jax.oneshot.base import OneShotMethod, State

_EPS = 1e-12  # floor for gamma and omega (a switch at exactly 0 has gamma 0)


# --- the prior ---------------------------------------------------------------------------
def ard_update(s_edge: np.ndarray, s_op: np.ndarray, h_edge: np.ndarray, h_op: np.ndarray,
               gamma_edge: np.ndarray, gamma_op: np.ndarray, *, lam_edge: float, lam_op: float,
               op_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """One update of the hierarchical ARD prior (see the module docstring).

  Every switch is its own group (switches shared by the cells of a type).

  Args:
    s_edge, s_op: edge switches ``[..., E]`` and op switches ``[..., E, O]``.
    h_edge, h_op: the diagonal of the training loss's Hessian at them
      (its absolute value is used).
    gamma_edge, gamma_op: the current variances (``gamma_op`` the effective,
      hierarchical one).
    lam_edge, lam_op: ``lambda`` of the edge and op switches.
    op_mask: 1 for real ops, 0 for ``none`` (its variance is set to 0).

  Returns:
    ``{"gamma_edge", "gamma_op", "omega_edge", "omega_op", "cov_edge",
    "cov_op"}`` (float64 numpy).

  Example:
    >>> out = ard_update(np.ones(1), np.array([[1.0, 0.0]]), np.ones(1), np.array([[1.0, 1.0]]),
    ...                  np.ones(1), np.ones((1, 2)), lam_edge=1.0, lam_op=1.0)
    >>> np.round(out["omega_op"], 4).tolist(), float(out["gamma_op"][0, 1])
    ([[0.7071, 0.7071]], 0.0)
  """
  f = lambda a: np.asarray(a, np.float64)  # noqa: E731
  s_edge, s_op, h_edge, h_op, gamma_edge, gamma_op = map(f, (s_edge, s_op, h_edge, h_op, gamma_edge, gamma_op))
  if lam_edge <= 0 or lam_op <= 0:
    raise ValueError(f"lambda must be > 0, got lam_edge={lam_edge}, lam_op={lam_op}")
  out = {}
  for name, s, h, g, lam in (("edge", s_edge, h_edge, gamma_edge, lam_edge), ("op", s_op, h_op, gamma_op, lam_op)):
    g = np.maximum(g, _EPS)
    ht = np.abs(h) / lam  # the authors' abs (see the module docstring)
    cov = 1.0 / (1.0 / g + ht)
    omega = np.sqrt(np.maximum(np.abs(1.0 / g - cov / g ** 2), _EPS ** 2))  # one switch per group
    out[f"cov_{name}"], out[f"omega_{name}"] = cov, omega
    out[f"gamma_{name}"] = np.abs(s) / omega
  out["gamma_op"] = 1.0 / (1.0 / np.maximum(out["gamma_op"], _EPS) + 1.0 / np.maximum(out["gamma_edge"], _EPS)[..., None])
  out["gamma_op"] = np.where(out["gamma_op"] <= _EPS, 0.0, out["gamma_op"])
  if op_mask is not None:
    out["gamma_op"] = out["gamma_op"] * f(op_mask)
  return out


def penalty(switches: dict[str, jax.Array], omega_edge: jax.Array, omega_op: jax.Array, *, lam_edge: float,
            lam_op: float, op_mask: jax.Array) -> jax.Array:
  """``lambda * sum omega * ||s_group||`` over the edge and (masked) op switches (traceable)."""
  return (lam_edge * jnp.sum(omega_edge * jnp.abs(switches["edge"]))
          + lam_op * jnp.sum(op_mask * omega_op * jnp.abs(switches["op"])))


def hessian_diagonal(loss: Callable[[jax.Array], jax.Array], x: jax.Array, *, mode: str = "exact",
                     key: jax.Array | None = None) -> jax.Array:
  """The diagonal of ``hessian(loss)(x)`` for a flat ``x`` (traceable).

  Args:
    loss: scalar function of a 1-D array.
    x: the point.
    mode: ``"exact"`` (one HVP per coordinate, ``lax.map`` over the basis) or
      ``"hutchinson"`` (``z * (H z)`` for one Rademacher probe drawn from
      ``key``).
    key: PRNG key of the probe (``"hutchinson"``).

  Returns:
    float array like ``x``.

  Example:
    >>> f = lambda v: jnp.sum(v ** 3) + v[0] * v[1]
    >>> hessian_diagonal(f, jnp.array([1.0, 2.0])).tolist()
    [6.0, 12.0]
  """
  grad = jax.grad(loss)
  hvp = lambda t: jax.jvp(grad, (x,), (t,))[1]  # noqa: E731
  if mode == "exact":
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    return jax.lax.map(lambda e: jnp.vdot(e, hvp(e)), eye)
  if mode == "hutchinson":
    if key is None:
      raise ValueError("hutchinson's Hessian diagonal needs a key for its probe")
    z = jax.random.rademacher(key, x.shape, dtype=x.dtype)
    return z * hvp(z)
  raise ValueError(f"hessian mode must be 'exact' or 'hutchinson', got {mode!r}")


def _path_nodes(edges: tuple[tuple[int, int], ...], alive: np.ndarray, num_nodes: int) -> tuple[set, set]:
  """Nodes reachable from node 0 and nodes that reach the last node over the ``alive`` edges."""
  fwd, bwd = {0}, {num_nodes - 1}
  for _ in range(num_nodes):
    for k, (dst, src) in enumerate(edges):
      if alive[k]:
        if src in fwd:
          fwd.add(dst)
        if dst in bwd:
          bwd.add(src)
  return fwd, bwd


class BayesNAS(OneShotMethod):
  """BayesNAS over the ``darts`` or ``nb201`` relaxation (see the module docstring).

  Args:
    space: the ``darts`` or ``nb201`` space.
    config: settings (``default_config``); unknown keys raise ``ValueError``.
    data: an ``ImageDataset`` with ``train`` (weights, switches, Hessian) and
      ``valid`` (scoring) splits.
    continuous: a ``ContinuousRelaxation`` to use instead of the family's
      (tests); its weights must be ``[E, O]`` or ``[T, E, O]``.

  Example (compiles for tens of seconds, so not run here)::

      m = BayesNAS(space, {"lam": 0.007, "epochs": 6}, data=data)
      state = m.init(jax.random.key(0))
      state, metrics = m.step(state, jax.random.key(1))
  """

  kind = "oneshot"
  name = "bayesnas"
  needs = ("data",)
  supported_spaces = ("darts", "nb201")

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    """BayesNAS's settings; sources in the comments."""
    return {
        # lambda of the op switches: paper / authors' --lambda_child, CIFAR-10 presets 0.01, 0.007, 0.005.
        "lam": 0.01,
        "lam_edge": None,         # lambda of the edge switches (authors' --lambda_origin); None = lam
        "epochs": 50,             # search epochs; the runner sets it from its budget
        "weight_epochs": 1,       # paper Alg. 1 / authors' main.py: 1 epoch of weights ...
        "switch_epochs": 1,       # ... then 1 epoch of weights and switches (train_switch), then the update
        "steps_per_epoch": None,  # None = one pass over the train split; an int caps it (CPU runs)
        "batch_size": 64,         # DARTS's 64 (the authors' 18 is a GPU-memory choice)
        "lr": 0.025,              # weights: DARTS's SGD (authors: 0.1 constant), for comparisons with darts
        "lr_min": 0.001,          # DARTS --learning_rate_min (cosine per epoch)
        "momentum": 0.9,          # authors' main.py --momentum 0.9; DARTS 0.9
        "weight_decay": None,     # None: per space as darts (3e-4; nb201 5e-4); authors 1e-4
        "nesterov": None,         # None: per space as darts
        "grad_clip": 5.0,         # DARTS clip on the weights' gradient (authors: none)
        "switch_lr": 0.1,         # authors' optimizer_no_weight_decay: SGD lr 0.1 (--lr), momentum 0.9, no decay
        "switch_momentum": 0.9,
        "switch_init": 1.0,       # authors' OneShot.py: nn.Parameter(torch.ones(1))
        "gamma_init": 1.0,        # authors: torch.rand(1) (U(0, 1)); 1 here: deterministic, same scale
        "omega_init": 1.0,        # authors: torch.rand(1); 1 here: the first penalty is lambda * |s|
        # Hessian diagonal: "auto" (exact up to exact_max_switches, else hutchinson), "exact", "hutchinson".
        "hessian": "auto",
        "exact_max_switches": 64,
        "hessian_batches": 4,     # training batches (one probe each) averaged per prior update
        # Switches whose gamma falls below this are pruned (paper: a threshold on gamma; its value is ours).
        "prune_threshold": 1e-3,
        "init_channels": 8,       # DARTS / NB201 search C 16; CPU-sized
        "layers": None,           # None: per space as darts (nb201 N 1, darts 5 cells)
        "network": {},
        "augment": True,          # pad-crop + flip (authors' switch loader: crop + flip)
        "score_batches": None,
        "eval_batch_size": 256,
        "eval_bn": "batch",
    }

  def __init__(self, space, config: dict[str, Any] | None = None, *, data: Any = None, continuous: Any = None):
    super().__init__(space, config, data=data)
    cfg = self.config
    self._check(cfg)
    if not isinstance(data, data_lib.ImageDataset):
      raise ValueError("bayesnas needs data=ImageDataset with 'train' and 'valid' splits "
                       "(nas_jax.data.load_dataset(..., valid_fraction=0.5))")
    for split in ("train", "valid"):
      if split not in data.labels or data.size(split) < cfg["batch_size"]:
        size = data.size(split) if split in data.labels else 0
        raise ValueError(f"bayesnas needs at least batch_size={cfg['batch_size']} examples in split {split!r}, "
                         f"dataset {data.name!r} has {size}; lower batch_size or change valid_fraction")
    # The network, data streams, lr schedule and scoring are DARTS's (a helper instance, never stepped).
    dcfg = {k: cfg[k] for k in ("epochs", "steps_per_epoch", "batch_size", "lr", "lr_min", "momentum",
                                "weight_decay", "nesterov", "grad_clip", "init_channels", "layers", "network",
                                "augment", "score_batches", "eval_batch_size", "eval_bn")}
    self._darts = darts_lib.DARTS(space, dcfg, data=data, continuous=continuous)
    self.continuous, self.net_config, self.hparams = (self._darts.continuous, self._darts.net_config,
                                                      self._darts.hparams)
    shape = self._darts.alpha_shape
    if not (isinstance(shape, tuple) and len(shape) in (2, 3)):
      raise ValueError(f"bayesnas needs op weights of shape [edges, ops] or [cells, edges, ops], got {shape}")
    self.weights_shape = shape
    ops = tuple(self.continuous.op_names)
    self.op_mask = np.array([0.0 if o == "none" else 1.0 for o in ops], np.float32) * np.ones(shape, np.float32)
    self._real = self.op_mask.reshape((-1,) + shape[-2:])[0] > 0  # [E, O]: real ops (not 'none')
    self.num_switches = int(np.prod(shape) + np.prod(shape[:-1]))
    mode = cfg["hessian"]
    self.hessian_mode = (("exact" if self.num_switches <= cfg["exact_max_switches"] else "hutchinson")
                         if mode == "auto" else mode)
    self.lam_op = float(cfg["lam"])
    self.lam_edge = float(cfg["lam"] if cfg["lam_edge"] is None else cfg["lam_edge"])
    self._step_fn: Callable | None = None
    self._hess_fn: Callable | None = None

  @staticmethod
  def _check(cfg: dict[str, Any]) -> None:
    for name in ("lam", "switch_lr", "prune_threshold"):
      if not darts_lib._is_number(cfg[name]) or cfg[name] <= 0:  # pylint: disable=protected-access
        raise ValueError(f"bayesnas {name} must be a finite number > 0, got {cfg[name]!r}")
    if cfg["lam_edge"] is not None and (not darts_lib._is_number(cfg["lam_edge"]) or cfg["lam_edge"] <= 0):  # pylint: disable=protected-access
      raise ValueError(f"bayesnas lam_edge must be a finite number > 0 or None, got {cfg['lam_edge']!r}")
    for name in ("switch_init", "gamma_init", "omega_init"):
      if not darts_lib._is_number(cfg[name]) or cfg[name] <= 0:  # pylint: disable=protected-access
        raise ValueError(f"bayesnas {name} must be a finite number > 0, got {cfg[name]!r}")
    if not darts_lib._is_number(cfg["switch_momentum"]) or not 0 <= cfg["switch_momentum"] < 1:  # pylint: disable=protected-access
      raise ValueError(f"bayesnas switch_momentum must be in [0, 1), got {cfg['switch_momentum']!r}")
    for name in ("weight_epochs", "switch_epochs", "hessian_batches", "exact_max_switches"):
      v = cfg[name]
      if not darts_lib._is_int(v) or v < (0 if name == "weight_epochs" else 1):  # pylint: disable=protected-access
        raise ValueError(f"bayesnas {name} must be an integer >= {0 if name == 'weight_epochs' else 1}, got {v!r}")
    if cfg["hessian"] not in ("auto", "exact", "hutchinson"):
      raise ValueError(f"bayesnas hessian must be 'auto', 'exact' or 'hutchinson', got {cfg['hessian']!r}")

  # --- schedule --------------------------------------------------------------------------
  def steps_per_epoch(self) -> int:
    """One pass over the train split, capped by config ``steps_per_epoch``."""
    return self._darts.steps_per_epoch()

  def phase(self, step: int) -> tuple[bool, bool]:
    """``(switches train at search step step, the prior update follows it)``."""
    spe = self.steps_per_epoch()
    period = self.config["weight_epochs"] + self.config["switch_epochs"]
    epoch, within = divmod(int(step), spe)
    pos = epoch % period
    switching = pos >= self.config["weight_epochs"]
    return switching, switching and pos == period - 1 and within == spe - 1

  # --- state -------------------------------------------------------------------------------
  def init(self, key: jax.Array) -> State:
    """Network weights, switches at ``switch_init``, the prior at its initial values, data seeds."""
    cfg = self.config
    k_net, k_data = jax.random.split(key)
    params, batch_stats = self.continuous.init(k_net, self.net_config, tuple(self.data.image_shape))
    seeds = np.asarray(jax.random.randint(k_data, (2,), 0, 2**31 - 1), np.int64)
    shape, edge_shape = self.weights_shape, self.weights_shape[:-1]
    zeros = lambda t: jax.tree.map(jnp.zeros_like, t)  # noqa: E731
    switches = {"edge": jnp.full(edge_shape, cfg["switch_init"], jnp.float32),
                "op": jnp.asarray(cfg["switch_init"] * self.op_mask, jnp.float32)}
    f32 = lambda v, s: np.full(s, v, np.float32)  # noqa: E731
    prior = {"gamma_edge": f32(cfg["gamma_init"], edge_shape), "gamma_op": f32(cfg["gamma_init"], shape) * self.op_mask,
             "omega_edge": f32(cfg["omega_init"], edge_shape), "omega_op": f32(cfg["omega_init"], shape),
             "cov_edge": f32(0, edge_shape), "cov_op": f32(0, shape),
             "hess_edge": f32(0, edge_shape), "hess_op": f32(0, shape)}
    return {"params": params, "batch_stats": batch_stats, "momentum": zeros(params),
            "switches": switches, "switch_momentum": zeros(switches), "prior": prior,
            "step": np.int64(0), "iteration": np.int64(0),
            "data": {"train_seed": np.int64(seeds[0]), "train_epoch": np.int64(0), "train_step": np.int64(0),
                     "hessian_seed": np.int64(seeds[1])}}

  def op_weights(self, switches: dict[str, Any]) -> Any:
    """The relaxation's raw weights ``s_edge * s_op`` (``none`` masked to 0)."""
    return switches["edge"][..., None] * switches["op"] * self.op_mask

  # --- the jitted search step ------------------------------------------------------------
  def _loss(self, params, batch_stats, switches, x, y):
    logits, new_stats = self.continuous.apply(params, batch_stats, self.op_weights(switches), x,
                                              config=self.net_config, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, new_stats)

  def _build_step(self) -> Callable:
    cfg, hp = self.config, self.hparams
    mu, wd, clip = float(cfg["momentum"]), float(hp["weight_decay"]), float(cfg["grad_clip"])
    nesterov = bool(hp["nesterov"])
    s_lr, s_mu = float(cfg["switch_lr"]), float(cfg["switch_momentum"])
    lam_e, lam_o, mask = self.lam_edge, self.lam_op, jnp.asarray(self.op_mask)

    def step(net, x, y, lr, on, omega_edge, omega_op):
      params, stats, sw = net["params"], net["batch_stats"], net["switches"]

      def total(p, s):
        ce, aux = self._loss(p, stats, s, x, y)
        pen = penalty(s, omega_edge, omega_op, lam_edge=lam_e, lam_op=lam_o, op_mask=mask)
        return ce + on * pen, (ce, pen, aux)

      (_, (ce, pen, (logits, new_stats))), (g_w, g_s) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
          params, sw)
      scale = jnp.minimum(1.0, clip / (darts_lib._global_norm(g_w) + 1e-6)) if clip > 0 else 1.0  # pylint: disable=protected-access
      d = jax.tree.map(lambda g, w: g * scale + wd * w, g_w, params)
      buf = jax.tree.map(lambda b, d: mu * b + d, net["momentum"], d)
      upd = jax.tree.map(lambda d, b: d + mu * b, d, buf) if nesterov else buf
      params = jax.tree.map(lambda w, u: w - lr * u, params, upd)
      # switches: SGD with momentum, only in the switch phase (on = 1)
      s_buf = jax.tree.map(lambda b, g: on * (s_mu * b + g) + (1 - on) * b, net["switch_momentum"], g_s)
      sw = jax.tree.map(lambda s, b: s - on * s_lr * b, sw, s_buf)
      sw = {"edge": sw["edge"], "op": sw["op"] * mask}
      new = {"params": params, "batch_stats": new_stats, "momentum": buf, "switches": sw, "switch_momentum": s_buf}
      metrics = {"train_loss": ce, "train_acc": 100.0 * jnp.mean(jnp.argmax(logits, -1) == y), "penalty": pen}
      return new, metrics

    return jax.jit(step)

  def _build_hessian(self) -> Callable:
    mode = self.hessian_mode

    def hess(params, stats, switches, x, y, key):
      flat, unravel = ravel_pytree(switches)
      d = hessian_diagonal(lambda v: self._loss(params, stats, unravel(v), x, y)[0], flat, mode=mode, key=key)
      return unravel(d)

    return jax.jit(hess)

  def switch_hessian(self, state: State, batch: tuple[Any, Any], key: jax.Array | None = None) -> dict[str, Any]:
    """The Hessian diagonal of the training loss w.r.t. ``{"edge", "op"}`` switches on one batch (jitted once).

    ``key`` draws the Hutchinson probe (default: a fixed key).
    """
    if self._hess_fn is None:
      self._hess_fn = self._build_hessian()
    key = jax.random.key(0) if key is None else key
    return self._hess_fn(state["params"], state["batch_stats"], state["switches"], *batch, key)

  def _update_prior(self, state: State) -> dict[str, np.ndarray]:
    """The prior update at the end of an outer iteration (Hessian over ``hessian_batches`` batches)."""
    cfg = self.config
    it, seed = int(state["iteration"]), int(state["data"]["hessian_seed"])
    batches = data_lib.epoch_batches(self.data, "train", cfg["batch_size"], seed=seed, epoch=it)
    total = None
    base = jax.random.fold_in(jax.random.key(seed), it)
    n = min(cfg["hessian_batches"], data_lib.num_batches(self.data, "train", cfg["batch_size"]))
    for k, b in zip(range(n), batches):
      h = jax.device_get(self.switch_hessian(state, (b["image"], b["label"]), jax.random.fold_in(base, k)))
      h = jax.tree.map(lambda a: np.asarray(a, np.float64), h)
      total = h if total is None else jax.tree.map(np.add, total, h)
    h = jax.tree.map(lambda a: a / n, total)
    sw = jax.tree.map(lambda a: np.asarray(a, np.float64), jax.device_get(state["switches"]))
    prior = state["prior"]
    out = ard_update(sw["edge"], sw["op"], h["edge"], h["op"] * self.op_mask, prior["gamma_edge"], prior["gamma_op"],
                     lam_edge=self.lam_edge, lam_op=self.lam_op, op_mask=self.op_mask)
    out["hess_edge"], out["hess_op"] = h["edge"], h["op"] * self.op_mask
    return {k: np.asarray(v, np.float32) for k, v in out.items()}

  def step(self, state: State, key: jax.Array) -> tuple[State, dict[str, float]]:
    """One search step: weights (weight phase) or weights and switches (switch phase); the prior update after
    the last step of an outer iteration.

    ``key`` is unused: batches and probes are functions of the state.

    Returns:
      ``(state, metrics)``: ``train_loss`` (cross-entropy), ``train_acc`` (%),
      ``penalty`` (the group penalty), ``switch_phase`` (0 or 1), ``lr``.
    """
    del key
    if self._step_fn is None:
      self._step_fn = self._build_step()
    pos = {k: int(v) for k, v in state["data"].items()}
    tb, t_epoch, t_step = self._darts._batch("train", pos["train_seed"], pos["train_epoch"], pos["train_step"])  # pylint: disable=protected-access
    step = int(state["step"])
    lr = self._darts.learning_rate(step)
    switching, update = self.phase(step)
    net = {k: state[k] for k in ("params", "batch_stats", "momentum", "switches", "switch_momentum")}
    prior = state["prior"]
    net, metrics = self._step_fn(net, tb["image"], tb["label"], np.float32(lr), np.float32(switching),
                                 prior["omega_edge"], prior["omega_op"])
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    metrics.update(lr=lr, switch_phase=float(switching))
    new_state = {**net, "prior": prior, "step": np.int64(step + 1), "iteration": state["iteration"],
                 "data": {**state["data"], "train_epoch": np.int64(t_epoch), "train_step": np.int64(t_step)}}
    if update:
      new_state["prior"] = self._update_prior(new_state)
      new_state["iteration"] = np.int64(int(state["iteration"]) + 1)
    return new_state, metrics

  # --- reading the architecture off the switches ------------------------------------------
  def _relevance(self, state: State) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(gamma_op, gamma_edge, |w|)`` as float64 ``[T, E, O]``, ``[T, E]``, ``[T, E, O]``."""
    g_op = np.asarray(state["prior"]["gamma_op"], np.float64)
    g_edge = np.asarray(state["prior"]["gamma_edge"], np.float64)
    w = np.abs(np.asarray(jax.device_get(self.op_weights(state["switches"])), np.float64))
    if g_op.ndim == 2:
      g_op, g_edge, w = g_op[None], g_edge[None], w[None]
    return g_op, g_edge, w

  def derive(self, state: State) -> np.ndarray:
    """The pruned discrete architecture (see the module docstring), validated by the space."""
    arch, _ = self._derive(state)
    return self.space.validate(np.asarray(arch, np.int32))

  def _best_ops(self, g_op, w):
    """Per edge: the most relevant real op (ties by |w|) and its gamma."""
    best = np.zeros(g_op.shape[:-1], np.int64)
    for idx in np.ndindex(*g_op.shape[:-1]):
      cands = [o for o in range(g_op.shape[-1]) if self._real[idx[-1], o]]
      best[idx] = max(cands, key=lambda o: (g_op[idx + (o,)], w[idx + (o,)], -o))
    strength = np.take_along_axis(g_op, best[..., None], -1)[..., 0]
    return best, strength

  def _derive(self, state: State) -> tuple[np.ndarray, dict[str, Any]]:
    thr = float(self.config["prune_threshold"])
    g_op, g_edge, w = self._relevance(state)
    best, strength = self._best_ops(g_op, w)
    mag = np.take_along_axis(w, best[..., None], -1)[..., 0]
    alive = (strength >= thr) & (g_edge >= thr)
    if self.space.name == "darts":
      from nas_jax.networks import darts as net_lib  # pylint: disable=import-outside-toplevel
      arch = np.zeros((2, net_lib.NUM_NODES, 4), np.int32)
      forced = 0
      for c in range(2):
        for n in range(net_lib.NUM_NODES):
          rows = [net_lib.edge_index(n, i) for i in range(n + 2)]
          order = sorted(range(n + 2), key=lambda i: (not alive[c, rows[i]], -strength[c, rows[i]], -mag[c, rows[i]],
                                                      i))[:2]
          forced += sum(not alive[c, rows[i]] for i in order)
          # the darts space counts ops without 'none' (relaxation op o+1 is space op o)
          arch[c, n] = [order[0], best[c, rows[order[0]]] - 1, order[1], best[c, rows[order[1]]] - 1]
      return arch, {"forced": forced}
    # nb201: one op per edge, edges (dst, src) in the space's order
    from nas_jax.spaces import nb201 as nb_space  # pylint: disable=import-outside-toplevel
    edges = tuple((int(d), int(s)) for d, s in nb_space.EDGES)
    num_nodes = 1 + max(d for d, _ in edges)
    a, st = alive[0].copy(), strength[0]
    forced = 0
    fwd, bwd = _path_nodes(edges, a, num_nodes)
    if num_nodes - 1 not in fwd:  # every path cut: restore the path whose weakest edge is strongest
      best_path, best_val = None, -np.inf
      for path in _paths(edges, 0, num_nodes - 1):
        val = min(st[k] for k in path)
        if val > best_val:
          best_path, best_val = path, val
      for k in best_path:
        forced += int(not a[k])
        a[k] = True
      fwd, bwd = _path_nodes(edges, a, num_nodes)
    kept = fwd & bwd
    arch = np.zeros(len(edges), np.int32)  # 0 = none
    for k, (dst, src) in enumerate(edges):
      if a[k] and src in kept and dst in kept:
        arch[k] = best[0, k]
    return arch, {"forced": forced, "kept_nodes": sorted(kept)}

  # --- scoring and summaries ---------------------------------------------------------------
  def score(self, state: State, arch: np.ndarray, key: jax.Array) -> dict[str, Any]:
    """Validation accuracy (%) of the pruned supernet of ``arch`` and of the whole switch mixture.

    The pruned supernet keeps the trained switch products ``s_edge * s_op`` of
    ``arch``'s ops and zeroes the others (the network the paper's pruning
    leaves; one-hot weights, DARTS's choice, would rescale every edge, since
    the switches are not normalised). Batches as ``DARTS.score``.
    """
    w_mix = self.op_weights(state["switches"])
    w_arch = jnp.asarray(self._darts.one_hot_weights(arch)) * w_mix
    return self._darts.score_weights(state["params"], state["batch_stats"], w_arch, w_mix, key,
                                     seed=int(state["data"]["train_seed"]) + 1)

  def summary(self, state: State) -> dict[str, Any]:
    """Switches, relevance and survivors (JSON, for the history line and the plot).

    Returns:
      ``{"iteration"`` (prior updates done), ``"switches": {cell: [[|w| per op] per edge]}``
      (4 decimals; ``none`` omitted), ``"edge_switches": {cell: [s_edge]}``,
      ``"surviving": {cell: [number of ops with gamma >= threshold, per edge]}``,
      ``"surviving_total"``, ``"log10_gamma": {"min", "median", "max"}`` (real op
      switches), ``"forced"`` (derived branches kept against the threshold)``}``.
    """
    thr = float(self.config["prune_threshold"])
    g_op, g_edge, w = self._relevance(state)
    names = (("normal", "reduce") if g_op.shape[0] == 2 else ("cell",)) if g_op.shape[0] <= 2 else [
        f"cell_{i}" for i in range(g_op.shape[0])]
    real = self._real
    edge_sw = np.asarray(jax.device_get(state["switches"]["edge"]), np.float64).reshape(g_edge.shape)
    out = {"iteration": int(state["iteration"]), "switches": {}, "edge_switches": {}, "surviving": {}}
    total = 0
    for c, name in enumerate(names):
      out["switches"][name] = [[round(float(v), 4) for v, r in zip(w[c, e], real[e]) if r] for e in range(w.shape[1])]
      out["edge_switches"][name] = [round(float(v), 4) for v in edge_sw[c]]
      surv = [int(np.sum((g_op[c, e] >= thr) & real[e])) if g_edge[c, e] >= thr else 0 for e in range(w.shape[1])]
      out["surviving"][name] = surv
      total += sum(surv)
    gam = g_op[np.broadcast_to(real, g_op.shape)]
    lg = np.log10(np.maximum(gam, 1e-30))
    out["surviving_total"] = total
    out["log10_gamma"] = {"min": round(float(lg.min()), 3), "median": round(float(np.median(lg)), 3),
                          "max": round(float(lg.max()), 3)}
    out["forced"] = int(self._derive(state)[1]["forced"])
    return out

  def plot(self, records: list[dict[str, Any]], workdir: Any) -> None:
    """Draws ``switches.png``: every op's ``|s_edge * s_op|`` against the epoch, one panel per cell type."""
    import pathlib  # pylint: disable=import-outside-toplevel
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    lines = [r.get("arch_params") or {} for r in records]
    lines = [l for l in lines if "switches" in l]
    if not lines:
      return
    cells = list(lines[0]["switches"])
    ops = [o for o in self.continuous.op_names if o != "none"]
    colors = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 3.8), squeeze=False)
    x = np.arange(1, len(lines) + 1)
    for ax, cell in zip(axes[0], cells):
      vals = np.array([l["switches"][cell] for l in lines], np.float64)  # [epochs, edges, ops]
      for e in range(vals.shape[1]):
        for o in range(vals.shape[2]):
          ax.plot(x, vals[:, e, o], color=colors(o % 10), lw=0.8, alpha=0.7,
                  label=ops[o] if e == 0 else None)
      ax.set_yscale("symlog", linthresh=1e-3)
      ax.set_xlabel("epoch")
      ax.set_ylabel("|s_edge * s_op|")
      ax.set_title(f"{'' if cell == 'cell' else cell + ' '}cell: switches per (edge, op)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(pathlib.Path(workdir) / "switches.png", dpi=110)
    plt.close(fig)


def _paths(edges, src, dst):
  """All paths (lists of edge indices) from ``src`` to ``dst`` in a small DAG."""
  out = []

  def walk(node, acc):
    if node == dst:
      out.append(list(acc))
      return
    for k, (d, s) in enumerate(edges):
      if s == node:
        walk(d, acc + [k])

  walk(src, [])
  return out
