"""DARTS: differentiable architecture search (Liu, Simonyan & Yang, ICLR 2019).

Every edge of the space's cell runs all its candidate ops, mixed by
``softmax(alpha)``; the network weights ``w`` are trained on the ``train``
split and the architecture parameters ``alpha`` on the ``valid`` split (DARTS
holds out half of CIFAR-10's training set for it: ``valid_fraction=0.5``).
Each search step (``step``) first updates ``alpha`` on one validation batch,
then ``w`` on one training batch (the order of DARTS's ``train_search.py``).
At the end of each epoch the discrete architecture is read off
``softmax(alpha)`` (``derive``: the family's rule, e.g. DARTS's top-2 incoming
edges per node, or NAS-Bench-201's arg-max per edge).

The method codes against the space's continuous relaxation only
(``nas_jax.networks.family(space.name).continuous``, the
``ContinuousRelaxation`` protocol of ``nas_jax.networks.base``), so it runs on
every space whose family has one (``nb201``, ``darts``, ``nasnet``).

Architecture gradient (``order``)
---------------------------------
``"first"``: ``grad_alpha L_val(w, alpha)`` at the current weights (DARTS
first order, paper section 2.3 with xi = 0).

``"second"``: the gradient of the *unrolled* validation loss
``L_val(w'(alpha), alpha)`` with the virtual weight step of the authors' code
(``architect.py``), which repeats the next SGD step without clipping::

    w'(alpha) = w - xi * (momentum * buf + grad_w L_train(w, alpha) + weight_decay * w)

``buf`` is the weight optimizer's momentum buffer and ``xi`` the current weight
learning rate (DARTS; config ``xi`` overrides it). JAX differentiates this
expression w.r.t. ``alpha`` exactly, through the virtual step (reverse over
reverse), which is the paper's eq. 7::

    grad_alpha L_val(w', alpha) - xi * grad^2_{alpha, w} L_train(w, alpha) . grad_w' L_val(w', alpha)

(the momentum and weight-decay terms of ``w'`` do not depend on ``alpha``:
they move ``w'`` but add nothing to the derivative). The paper approximates
the second-order term by a central finite difference (eq. 8):
``(grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)) / (2 eps)``
with ``w+- = w +- eps * grad_w' L_val(w', alpha)``,
``eps = 0.01 / ||grad_w' L_val||``; here the Hessian-vector product is exact,
so the two agree up to that approximation's O(eps^2) error. With ``xi = 0`` the
second-order gradient equals the first-order one. (With Nesterov momentum,
the NAS-Bench-201 setting, the virtual step is still DARTS's formula above, as
in NAS-Bench-201's ``DARTS-V2.py``.)

Optimizers (written out, so that the state is plain arrays):

* weights: PyTorch's SGD as DARTS uses it: the loss gradient clipped to global
  norm ``grad_clip``, then ``d = g + weight_decay * w``,
  ``buf = momentum * buf + d``, ``w -= lr * buf`` (Nesterov:
  ``w -= lr * (d + momentum * buf)``). The learning rate is cosine-annealed per
  epoch from ``lr`` to ``lr_min`` over ``epochs`` epochs:
  ``lr_e = lr_min + (lr - lr_min) * (1 + cos(pi * e / epochs)) / 2`` for epoch
  ``e`` (NAS-Bench-201's scheduler; DARTS's PyTorch ``CosineAnnealingLR`` is
  stepped before each epoch, which shifts it by one epoch).
* architecture: PyTorch's Adam with L2 weight decay (added to the gradient):
  ``lr = arch_lr``, betas ``(arch_beta1, arch_beta2)``, eps 1e-8.

``epochs``, the length of that schedule, is the search length in epochs: the
runner sets it from its budget (which counts epochs, ``nas_jax.oneshot.base``),
i.e. ``strategy.epochs = budget``.

State (a pytree of arrays and scalars, checkpointed by the runner)::

    {"params", "batch_stats",        # the relaxed network (family's init)
     "alpha",                        # float32, continuous.weights_shape(config)
     "momentum",                     # SGD momentum buffers (like params)
     "adam": {"m", "v"},             # Adam moments (like alpha)
     "step": int64,                  # search steps done (schedule, Adam count)
     "data": {"train_seed", "train_epoch", "train_step",
              "valid_seed", "valid_epoch", "valid_step"}}   # int64 positions

Batches are pure functions of ``(seed, epoch, step)`` (``epoch_batches``), the
seeds drawn from ``init``'s key; the training and validation streams each
advance through their own epochs, so a run resumed from any saved state sees
exactly the batches an uninterrupted run would. (With ``steps_per_epoch``
capping the search epoch below a pass over the data, the streams simply
continue where they stopped: no image repeats before all were seen.) Both streams are augmented
(pad-crop and flip where the data allows it, no cutout): DARTS and
NAS-Bench-201 draw the architecture batches from CIFAR-10's training set with
the training transform. Batch norm runs with batch statistics during the
search; running statistics are updated by the weight step only.

Scoring (``score``): the derived architecture's accuracy under the trained
weights is the relaxed network evaluated with the architecture's one-hot op
weights (``continuous.one_hot_weights`` where the family has it; for one op
per edge, as in nb201, ``one_hot(arch)``), on ``score_batches`` validation
batches without augmentation; batch statistics by default (``eval_bn``;
running statistics are those of the mixture, not of one architecture). The
mixture's own accuracy is reported beside it (``supernet_valid_acc``). These
are search-time accuracies of shared weights, never a final accuracy.

Example:
    >>> import nas_jax.data
    >>> from nas_jax import registry
    >>> data = nas_jax.data.load_dataset("digits", train_size=64, valid_fraction=0.5)
    >>> method = DARTS(registry.get_space("nb201"), {"init_channels": 4, "layers": 1,
    ...                                              "epochs": 2}, data=data)
    >>> method.config["order"], method.steps_per_epoch()  # 64 images, batch 64
    ('first', 1)

  A search step (not run here: initialising and compiling the relaxed
  network's step takes tens of seconds on a 2-core CPU)::

    state = method.init(jax.random.key(0))
    state, metrics = method.step(state, jax.random.key(1))
    arch = method.derive(state)                    # int32[6]
    method.score(state, arch, jax.random.key(2))["search_score"]
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax import networks
from nas_jax.data import images as data_lib
from nas_jax.oneshot.base import OneShotMethod, State

# Settings that differ between the papers' setups. Sources: DARTS
# cnn/train_search.py (weight_decay 3e-4, plain momentum) and NAS-Bench-201's
# configs/nas-benchmark/algos/DARTS.config (decay 5e-4, nesterov 1). `layers`
# is the CPU-sized network depth in the family's own unit (nb201: cells per
# stage N, the benchmark's N = 5; darts / nasnet: total cells, DARTS search
# network 8).
_SPACE_DEFAULTS: dict[str, dict[str, Any]] = {
    "nb201": {"weight_decay": 5e-4, "nesterov": True, "layers": 1},
    "darts": {"weight_decay": 3e-4, "nesterov": False, "layers": 5},
    "nasnet": {"weight_decay": 3e-4, "nesterov": False, "layers": 5},
}
_OTHER_SPACES = {"weight_decay": 3e-4, "nesterov": False, "layers": None}  # DARTS; family's depth
_SKIP_NAMES = ("skip_connect", "identity")
_ADAM_EPS = 1e-8  # PyTorch Adam's default, used by DARTS and NAS-Bench-201


def _is_int(v: Any) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _check(cfg: dict[str, Any]) -> None:
  """Raises ValueError naming the first bad DARTS setting."""
  if cfg["order"] not in ("first", "second"):
    raise ValueError(f"darts order must be 'first' or 'second', got {cfg['order']!r}")
  for name in ("epochs", "batch_size", "init_channels", "eval_batch_size"):
    if not _is_int(cfg[name]) or cfg[name] < 1:
      raise ValueError(f"darts {name} must be a positive integer, got {cfg[name]!r}")
  for name in ("steps_per_epoch", "layers", "score_batches"):
    if cfg[name] is not None and (not _is_int(cfg[name]) or cfg[name] < 1):
      raise ValueError(f"darts {name} must be a positive integer or None, got {cfg[name]!r}")
  for name in ("lr", "lr_min", "momentum", "grad_clip", "arch_lr", "arch_weight_decay", "arch_init_scale"):
    if not _is_number(cfg[name]) or cfg[name] < 0:
      raise ValueError(f"darts {name} must be a finite number >= 0, got {cfg[name]!r}")
  for name in ("weight_decay", "xi"):
    if cfg[name] is not None and (not _is_number(cfg[name]) or cfg[name] < 0):
      raise ValueError(f"darts {name} must be a finite number >= 0 or None, got {cfg[name]!r}")
  for name in ("arch_beta1", "arch_beta2"):
    if not _is_number(cfg[name]) or not 0 <= cfg[name] < 1:
      raise ValueError(f"darts {name} must be in [0, 1), got {cfg[name]!r}")
  if cfg["lr_min"] > cfg["lr"]:
    raise ValueError(f"darts lr_min ({cfg['lr_min']}) must not exceed lr ({cfg['lr']})")
  if cfg["nesterov"] is not None and not isinstance(cfg["nesterov"], bool):
    raise ValueError(f"darts nesterov must be true, false or None, got {cfg['nesterov']!r}")
  if not isinstance(cfg["augment"], bool):
    raise ValueError(f"darts augment must be true or false, got {cfg['augment']!r}")
  if cfg["eval_bn"] not in ("batch", "running"):
    raise ValueError(f"darts eval_bn must be 'batch' or 'running', got {cfg['eval_bn']!r}")
  if not isinstance(cfg["network"], dict):
    raise ValueError(f"darts network must be a dict of network config fields, got {cfg['network']!r}")


def _is_shape(s: Any) -> bool:
  return isinstance(s, tuple) and all(_is_int(d) for d in s)


def _tree_of_shapes(shape: Any) -> Any:
  """Checks ``continuous.weights_shape``: one shape or a dict of shapes."""
  shape = tuple(shape) if isinstance(shape, list) else shape
  if _is_shape(shape):
    return tuple(int(d) for d in shape)
  if isinstance(shape, dict) and shape and all(_is_shape(tuple(s)) for s in shape.values()):
    return {k: tuple(int(d) for d in s) for k, s in shape.items()}
  raise ValueError(f"continuous.weights_shape must be a shape tuple or a dict of them, got {shape!r}")


def _softmax(alpha: Any) -> Any:
  return jax.tree.map(lambda a: jax.nn.softmax(a, axis=-1), alpha)


def _cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _global_norm(tree: Any) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


class DARTS(OneShotMethod):
  """DARTS over a space's continuous relaxation (see the module docstring).

  Args:
    space: the search space (its network family must have ``continuous``).
    config: settings (``default_config``); unknown keys raise ``ValueError``.
    data: an ``ImageDataset`` with ``train`` (weights) and ``valid``
      (architecture parameters) splits.
    continuous: a ``ContinuousRelaxation`` to use instead of the family's
      (tests, custom networks).

  Example (second order; compiles for tens of seconds, so not run here)::

      method = DARTS(space, {"order": "second", "epochs": 4}, data=data)
      state = method.init(jax.random.key(0))
      for t in range(method.steps_per_epoch()):
        state, metrics = method.step(state, jax.random.key(t))
      method.summary(state)["skip_argmax_edges"]
  """

  kind = "oneshot"
  name = "darts"
  needs = ("data",)
  supported_spaces = None  # any space whose family has a continuous relaxation

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    """DARTS's settings; sources in the comments (NB201 = NAS-Bench-201's DARTS runs)."""
    return {
        # DARTS paper 2.3 / train_search.py --unrolled: "first" (its default) or "second".
        "order": "first",
        # Search epochs = length of the lr schedule; the runner sets it from its budget.
        # DARTS train_search.py --epochs 50; NB201 DARTS.config epochs 50.
        "epochs": 50,
        # Steps per epoch: None = one pass over the train split (DARTS, NB201); an int caps it (CPU runs).
        "steps_per_epoch": None,
        "batch_size": 64,           # DARTS --batch_size 64; NB201 batch_size 64 (both streams)
        "lr": 0.025,                # DARTS --learning_rate; NB201 LR 0.025
        "lr_min": 0.001,            # DARTS --learning_rate_min; NB201 eta_min 0.001
        "momentum": 0.9,            # DARTS --momentum; NB201 momentum 0.9
        # None: per space, DARTS --weight_decay 3e-4; nb201: NB201 decay 5e-4.
        "weight_decay": None,
        # None: per space, DARTS plain momentum; nb201: NB201 nesterov 1.
        "nesterov": None,
        "grad_clip": 5.0,           # DARTS --grad_clip 5; NB201 clip_grad_norm_(..., 5)
        "arch_lr": 3e-4,            # DARTS --arch_learning_rate; NB201 --arch_learning_rate 0.0003
        "arch_beta1": 0.5,          # DARTS architect.py Adam betas=(0.5, 0.999); NB201 the same
        "arch_beta2": 0.999,
        "arch_weight_decay": 1e-3,  # DARTS --arch_weight_decay; NB201 --arch_weight_decay 0.001
        "arch_init_scale": 1e-3,    # DARTS model_search.py alphas = 1e-3 * randn; NB201 the same
        # Virtual step size of the second order; None = the current weight lr (DARTS architect.py eta).
        "xi": None,
        # Network size, CPU-sized: DARTS search C 16 (--init_channels), 8 cells (--layers);
        # NB201 C 16, N 5.
        "init_channels": 8,
        # None: per space (nb201 N 1, darts / nasnet 5 cells; see _SPACE_DEFAULTS).
        "layers": None,
        "network": {},              # further fields of the family's network config
        "augment": True,            # pad-crop + flip, no cutout (DARTS search transform)
        # Scoring after each epoch: batches of the valid split (None: all full batches,
        # like DARTS's infer() over its valid queue) and their size.
        "score_batches": None,
        "eval_batch_size": 256,
        "eval_bn": "batch",         # batch statistics when scoring (see the module docstring)
    }

  def __init__(self, space, config: dict[str, Any] | None = None, *, data: Any = None,
               continuous: Any = None):
    super().__init__(space, config, data=data)
    _check(self.config)
    if not isinstance(data, data_lib.ImageDataset):
      raise ValueError("darts needs data=ImageDataset with 'train' and 'valid' splits "
                       "(nas_jax.data.load_dataset(..., valid_fraction=0.5))")
    cfg = self.config
    for split in ("train", "valid"):
      if split not in data.labels or data.size(split) < cfg["batch_size"]:
        size = data.size(split) if split in data.labels else 0
        raise ValueError(f"darts needs at least batch_size={cfg['batch_size']} examples in split {split!r}, "
                         f"dataset {data.name!r} has {size}; lower batch_size or change valid_fraction")
    if continuous is None:
      continuous = getattr(networks.family(space.name), "continuous", None)
      if continuous is None:
        raise ValueError(f"space {space.name!r} has no continuous relaxation "
                         f"(networks.family({space.name!r}).continuous is None); darts runs on spaces "
                         "whose network family has one, e.g. nb201 or darts")
    self.continuous = continuous
    per_space = _SPACE_DEFAULTS.get(space.name, _OTHER_SPACES)
    self.hparams = {k: (per_space[k] if cfg[k] is None else cfg[k])
                    for k in ("weight_decay", "nesterov", "layers")}
    fields = {"num_classes": data.num_classes, "init_channels": cfg["init_channels"]}
    if self.hparams["layers"] is not None:
      fields["layers"] = self.hparams["layers"]
    self.net_config = continuous.config(**{**fields, **cfg["network"]})
    self.alpha_shape = _tree_of_shapes(continuous.weights_shape(self.net_config))
    one_op_per_edge = (_is_shape(self.alpha_shape) and len(self.alpha_shape) == 2
                       and tuple(space.arch_shape) == self.alpha_shape[:1])
    if not hasattr(continuous, "one_hot_weights") and not one_op_per_edge:  # fail before any compile
      raise ValueError(f"the continuous relaxation of space {space.name!r} has no one_hot_weights and its "
                       "architecture is not one op per edge, so score() cannot weigh a derived architecture; "
                       "add one_hot_weights(arch) to the family")
    self._search_step: Callable | None = None
    self._evaluate: Callable | None = None
    self._arch_gradient: Callable | None = None
    self._streams: dict[str, Any] = {}

  # --- schedule ------------------------------------------------------------
  def steps_per_epoch(self) -> int:
    """One pass over the train split, capped by config ``steps_per_epoch``."""
    n = data_lib.num_batches(self.data, "train", self.config["batch_size"])
    cap = self.config["steps_per_epoch"]
    return n if cap is None else min(n, cap)

  def learning_rate(self, step: int) -> float:
    """The weight learning rate at search step ``step`` (cosine per epoch)."""
    cfg = self.config
    epoch = min(int(step) // self.steps_per_epoch(), cfg["epochs"])
    return cfg["lr_min"] + 0.5 * (cfg["lr"] - cfg["lr_min"]) * (1.0 + math.cos(math.pi * epoch / cfg["epochs"]))

  # --- state ---------------------------------------------------------------
  def init(self, key: jax.Array) -> State:
    """Network weights, ``alpha = arch_init_scale * N(0, 1)``, zero optimizer states, data seeds."""
    k_net, k_alpha, k_data = jax.random.split(key, 3)
    params, batch_stats = self.continuous.init(k_net, self.net_config, tuple(self.data.image_shape))
    is_shape = lambda s: _is_shape(s)  # noqa: E731
    shapes, treedef = jax.tree.flatten(self.alpha_shape, is_leaf=is_shape)
    keys = jax.random.split(k_alpha, len(shapes))
    # Drawn flat and reshaped (the same numbers with the partitionable threefry;
    # XLA:CPU compiles some multi-dimensional draws for seconds, tests/conftest.py).
    alpha = jax.tree.unflatten(treedef, [
        self.config["arch_init_scale"] * jax.random.normal(k, (math.prod(s),), jnp.float32).reshape(s)
        for k, s in zip(keys, shapes)])
    seeds = np.asarray(jax.random.randint(k_data, (2,), 0, 2**31 - 1), np.int64)
    zeros = lambda t: jax.tree.map(jnp.zeros_like, t)  # noqa: E731
    return {
        "params": params, "batch_stats": batch_stats, "alpha": alpha,
        "momentum": zeros(params), "adam": {"m": zeros(alpha), "v": zeros(alpha)},
        "step": np.int64(0),
        "data": {"train_seed": np.int64(seeds[0]), "train_epoch": np.int64(0), "train_step": np.int64(0),
                 "valid_seed": np.int64(seeds[1]), "valid_epoch": np.int64(0), "valid_step": np.int64(0)},
    }

  # --- data ----------------------------------------------------------------
  def _batch(self, split: str, seed: int, epoch: int, step: int) -> tuple[dict[str, np.ndarray], int, int]:
    """Batch ``step`` of ``epoch`` of ``split`` and the position after it.

    A live generator is reused when it stands exactly at the requested
    position (the batches are pure functions of the position either way).
    """
    cfg = self.config
    if step >= data_lib.num_batches(self.data, split, cfg["batch_size"]):
      epoch, step = epoch + 1, 0
    cached = self._streams.get(split)
    if cached is None or cached[0] != (seed, epoch, step):
      aug = data_lib.default_augment(self.data, cutout=0) if cfg["augment"] else None
      gen = data_lib.epoch_batches(self.data, split, cfg["batch_size"], seed=seed, epoch=epoch,
                                   start_step=step, augment=aug)
    else:
      gen = cached[1]
    batch = next(gen)
    self._streams[split] = ((seed, epoch, step + 1), gen)
    return batch, epoch, step + 1

  # --- the jitted search step ----------------------------------------------
  def _loss(self, params, batch_stats, alpha, x, y):
    logits, new_stats = self.continuous.apply(params, batch_stats, _softmax(alpha), x,
                                              config=self.net_config, train=True)
    return _cross_entropy(logits, y), (logits, new_stats)

  def _arch_grad(self, params, batch_stats, alpha, momentum, xi, xv, yv, xt, yt):
    """``(grad_alpha, valid loss, valid logits)`` of the configured order (traceable)."""
    if self.config["order"] == "first":
      (loss, (logits, _)), g = jax.value_and_grad(self._loss, argnums=2, has_aux=True)(
          params, batch_stats, alpha, xv, yv)
      return g, loss, logits
    mu, wd = float(self.config["momentum"]), float(self.hparams["weight_decay"])

    def unrolled(a):  # L_val(w'(a), a), w' one virtual SGD step (DARTS architect.py)
      g_w = jax.grad(lambda p: self._loss(p, batch_stats, a, xt, yt)[0])(params)
      w2 = jax.tree.map(lambda w, m, g: w - xi * (mu * m + g + wd * w), params, momentum, g_w)
      return self._loss(w2, batch_stats, a, xv, yv)

    (loss, (logits, _)), g = jax.value_and_grad(unrolled, has_aux=True)(alpha)
    return g, loss, logits

  def arch_gradient(self, state: State, valid_batch: tuple[Any, Any], train_batch: tuple[Any, Any],
                    xi: float | None = None) -> tuple[Any, jax.Array]:
    """The architecture gradient that ``step`` would use (analysis and tests).

    Args:
      state: a search state.
      valid_batch, train_batch: ``(images, labels)``; the train batch only
        matters for the second order.
      xi: virtual step size (default: config ``xi``, else the current lr).

    Returns:
      ``(grad_alpha, valid_loss)`` (jitted once; any float dtype).
    """
    if xi is None:
      xi = self.config["xi"] if self.config["xi"] is not None else self.learning_rate(int(state["step"]))
    if self._arch_gradient is None:
      self._arch_gradient = jax.jit(self._arch_grad)
    g, loss, _ = self._arch_gradient(state["params"], state["batch_stats"], state["alpha"], state["momentum"], xi,
                                     *valid_batch, *train_batch)
    return g, loss

  def _build_search_step(self) -> Callable:
    cfg, hp = self.config, self.hparams
    mu, wd, clip = float(cfg["momentum"]), float(hp["weight_decay"]), float(cfg["grad_clip"])
    nesterov = bool(hp["nesterov"])
    b1, b2, a_lr, a_wd = (float(cfg["arch_beta1"]), float(cfg["arch_beta2"]), float(cfg["arch_lr"]),
                          float(cfg["arch_weight_decay"]))
    loss_fn, arch_grad = self._loss, self._arch_grad

    def search_step(net, xv, yv, xt, yt, lr, xi, count):
      params, stats, alpha = net["params"], net["batch_stats"], net["alpha"]
      # 1. architecture step on the validation batch (Adam, L2 weight decay as PyTorch).
      g_a, v_loss, v_logits = arch_grad(params, stats, alpha, net["momentum"], xi, xv, yv, xt, yt)
      g_a = jax.tree.map(lambda g, a: g + a_wd * a, g_a, alpha)
      m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, net["adam"]["m"], g_a)
      v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, net["adam"]["v"], g_a)
      bc1, bc2 = 1 - b1 ** count, 1 - b2 ** count
      alpha = jax.tree.map(lambda a, m, v: a - a_lr / bc1 * m / (jnp.sqrt(v / bc2) + _ADAM_EPS), alpha, m, v)
      # 2. weight step on the training batch with the new alpha (SGD as PyTorch).
      (t_loss, (t_logits, new_stats)), g_w = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, alpha, xt, yt)
      scale = jnp.minimum(1.0, clip / (_global_norm(g_w) + 1e-6)) if clip > 0 else 1.0
      d = jax.tree.map(lambda g, w: g * scale + wd * w, g_w, params)
      buf = jax.tree.map(lambda b, d: mu * b + d, net["momentum"], d)
      upd = jax.tree.map(lambda d, b: d + mu * b, d, buf) if nesterov else buf
      params = jax.tree.map(lambda w, u: w - lr * u, params, upd)
      new_net = {"params": params, "batch_stats": new_stats, "alpha": alpha, "momentum": buf,
                 "adam": {"m": m, "v": v}}
      metrics = {"train_loss": t_loss, "train_acc": 100.0 * jnp.mean(jnp.argmax(t_logits, -1) == yt),
                 "valid_loss": v_loss, "valid_acc": 100.0 * jnp.mean(jnp.argmax(v_logits, -1) == yv)}
      return new_net, metrics

    return jax.jit(search_step)

  def step(self, state: State, key: jax.Array) -> tuple[State, dict[str, float]]:
    """One architecture update (valid batch), then one weight update (train batch).

    ``key`` is unused: DARTS's step is deterministic given the batches, which
    are functions of the state's data position.

    Returns:
      ``(state, metrics)``: ``train_loss``, ``train_acc`` (%) of the weight
      step's batch, ``valid_loss``, ``valid_acc`` (%) of the architecture
      step's batch (at the virtual weights ``w'`` for the second order, as
      NAS-Bench-201's DARTS-V2 reports) and ``lr``.
    """
    del key
    if self._search_step is None:
      self._search_step = self._build_search_step()
    pos = {k: int(v) for k, v in state["data"].items()}
    vb, v_epoch, v_step = self._batch("valid", pos["valid_seed"], pos["valid_epoch"], pos["valid_step"])
    tb, t_epoch, t_step = self._batch("train", pos["train_seed"], pos["train_epoch"], pos["train_step"])
    step = int(state["step"])
    lr = self.learning_rate(step)
    xi = lr if self.config["xi"] is None else float(self.config["xi"])
    net = {k: state[k] for k in ("params", "batch_stats", "alpha", "momentum", "adam")}
    net, metrics = self._search_step(net, vb["image"], vb["label"], tb["image"], tb["label"],
                                     np.float32(lr), np.float32(xi), np.float32(step + 1))
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    metrics["lr"] = lr
    new_state = {**net, "step": np.int64(step + 1),
                 "data": {"train_seed": np.int64(pos["train_seed"]), "train_epoch": np.int64(t_epoch),
                          "train_step": np.int64(t_step), "valid_seed": np.int64(pos["valid_seed"]),
                          "valid_epoch": np.int64(v_epoch), "valid_step": np.int64(v_step)}}
    return new_state, metrics

  # --- reading the architecture off alpha -----------------------------------
  def op_weights(self, state: State) -> Any:
    """``softmax(alpha)`` over each edge's ops (numpy, the shape of ``alpha``)."""
    return jax.tree.map(np.asarray, jax.device_get(_softmax(state["alpha"])))

  def derive(self, state: State) -> np.ndarray:
    """``continuous.derive(softmax(alpha))``, validated by the space."""
    arch = self.continuous.derive(self.op_weights(state), self.net_config)
    return self.space.validate(np.asarray(arch, np.int32))

  def one_hot_weights(self, arch: np.ndarray) -> Any:
    """Op weights (the structure of ``alpha``) that select exactly ``arch``."""
    arch = self.space.validate(arch)
    if hasattr(self.continuous, "one_hot_weights"):
      w = self.continuous.one_hot_weights(arch, self.net_config)
    elif _is_shape(self.alpha_shape) and len(self.alpha_shape) == 2 and arch.shape == self.alpha_shape[:1]:
      w = np.eye(self.alpha_shape[1], dtype=np.float32)[arch]  # one op per edge (nb201)
    else:  # checked in __init__
      raise ValueError(f"the continuous relaxation of space {self.space.name!r} has no one_hot_weights")
    w = jax.tree.map(lambda a: np.asarray(a, np.float32), w)
    shapes = jax.tree.map(lambda a: a.shape, w)
    if shapes != self.alpha_shape:
      raise ValueError(f"one_hot_weights gave shapes {shapes}, expected {self.alpha_shape}")
    return w

  def _build_evaluate(self) -> Callable:
    train = self.config["eval_bn"] == "batch"

    def evaluate(params, batch_stats, w_arch, w_mix, x, y):
      out = []
      for w in (w_arch, w_mix):
        logits, _ = self.continuous.apply(params, batch_stats, w, x, config=self.net_config, train=train)
        out += [jnp.sum(jnp.argmax(logits, -1) == y),
                optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()]
      return out

    return jax.jit(evaluate)

  def score(self, state: State, arch: np.ndarray, key: jax.Array) -> dict[str, Any]:
    """Validation accuracy (%) of ``arch`` (one-hot op weights) and of the mixture.

    The batches (``score_batches`` of ``eval_batch_size``, unaugmented) come
    from a validation epoch drawn with ``key``.

    Returns:
      ``{"search_score", "valid_acc"`` (the same, %), ``"valid_loss"``,
      ``"supernet_valid_acc"`` (the softmax mixture, %), ``"supernet_valid_loss"}``.
    """
    return self.score_weights(state["params"], state["batch_stats"], self.one_hot_weights(arch),
                              _softmax(state["alpha"]), key, seed=int(state["data"]["valid_seed"]))

  def score_weights(self, params, batch_stats, w_arch, w_mix, key: jax.Array, *,
                    seed: int) -> dict[str, Any]:
    """Validation figures of the relaxed network under op weights ``w_arch`` and ``w_mix``.

    ``score``'s body, shared with methods built on DARTS's network (BayesNAS):
    ``score_batches`` batches of ``eval_batch_size`` from the validation epoch
    that ``key`` draws in the stream ``seed``.

    Returns:
      As ``score``: ``w_arch`` gives ``search_score`` / ``valid_*``, ``w_mix``
      the ``supernet_valid_*`` figures.
    """
    if self._evaluate is None:
      self._evaluate = self._build_evaluate()
    cfg = self.config
    n = min(cfg["eval_batch_size"], self.data.size("valid"))
    total = data_lib.num_batches(self.data, "valid", n)
    count = total if cfg["score_batches"] is None else min(total, cfg["score_batches"])
    epoch = int(jax.random.randint(key, (), 0, 2**30))
    sums = np.zeros(4)
    batches = data_lib.epoch_batches(self.data, "valid", n, seed=seed, epoch=epoch)
    for _, batch in zip(range(count), batches):
      sums += np.asarray(jax.device_get(self._evaluate(params, batch_stats, w_arch, w_mix,
                                                       batch["image"], batch["label"])), np.float64)
    seen = count * n
    acc, loss, mix_acc, mix_loss = 100.0 * sums[0] / seen, sums[1] / seen, 100.0 * sums[2] / seen, sums[3] / seen
    return {"search_score": float(acc), "valid_acc": float(acc), "valid_loss": float(loss),
            "supernet_valid_acc": float(mix_acc), "supernet_valid_loss": float(mix_loss)}

  def summary(self, state: State) -> dict[str, Any]:
    """``softmax(alpha)`` per cell type and edge (3 decimals, by op name), entropy, skip count.

    Returns:
      ``{"weights": {cell: [{op: p, ...} per edge]}, "entropy"`` (mean over
      edges, nats), ``"max_entropy"`` (log of the number of ops),
      ``"skip_argmax_edges"`` (edges whose most weighted op is
      ``skip_connect``: DARTS's known collapse), ``"num_edges"}``.
    """
    ops = tuple(self.continuous.op_names)
    weights = self.op_weights(state)
    if isinstance(weights, dict):
      cells = dict(weights)
    elif weights.ndim == 2:
      cells = {"cell": weights}
    elif weights.ndim == 3:
      names = ("normal", "reduce") if weights.shape[0] == 2 else [f"cell_{i}" for i in range(weights.shape[0])]
      cells = dict(zip(names, weights))
    else:
      raise ValueError(f"alpha of rank {weights.ndim}: expected [edges, ops] or [cells, edges, ops]")
    out, entropies, skips = {}, [], 0
    for name, w in cells.items():
      w = np.asarray(w, np.float64).reshape(-1, len(ops))
      out[name] = [{op: round(float(p), 3) for op, p in zip(ops, row)} for row in w]
      entropies += list(-(w * np.log(np.maximum(w, 1e-30))).sum(-1))
      skips += int(sum(ops[int(i)] in _SKIP_NAMES for i in w.argmax(-1)))
    return {"weights": out, "entropy": round(float(np.mean(entropies)), 4),
            "max_entropy": round(math.log(len(ops)), 4), "skip_argmax_edges": skips,
            "num_edges": len(entropies)}
