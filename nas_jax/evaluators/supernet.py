"""One-shot evaluator: a weight-sharing supernet trained between queries.

Each ``evaluate(state, archs, key)`` call first trains the supernet for
``steps_per_round`` steps, every step on an architecture drawn uniformly from
the asked ``archs`` (NAO-WS: "train the supernet with architectures drawn from
the pool"; ENAS and random search with weight sharing do the same with their own
samples), then scores every asked architecture on one validation batch in a
single compiled call (``make_eval_archs``). The search score is that batch's
accuracy in percent. The evaluator owns the supernet training, so the strategy
stays a pure chooser; its state (supernet parameters, batch statistics,
optimizer state, data position) is a pytree that the experiment loop
checkpoints, and the data order is a pure function of ``(seed, epoch, step)``,
so a resumed search continues exactly.

The supernet is the ``supernet`` of the space's network family
(``nas_jax.networks.family(space.name).supernet``, a
``networks.base.WeightSharing``: ``config``, ``init``, ``init_train_state``,
``default_optimizer``, ``make_train_step``, ``make_eval_archs``); the
``nasnet`` and ``nb201`` families have one.

Example:
    >>> from nas_jax.spaces import get_space
    >>> space = get_space("nb201")
    >>> evaluator = SupernetEvaluator(space, {"dataset": "digits", "train_size": 64, "batch_size": 32,
    ...                                       "init_channels": 4, "layers": 1, "steps_per_round": 20})
    >>> ev_state = evaluator.init(jax.random.key(0))
    >>> sorted(ev_state), sorted(ev_state["net"])
    (['data_epoch', 'data_step', 'net'], ['batch_stats', 'opt_state', 'params', 'step'])

  Then each round (not run here: compiling the supernet's train step takes
  about 20 s on a 2-core CPU)::

    archs = np.stack([space.sample(k) for k in jax.random.split(jax.random.key(1), 3)])
    result, ev_state = evaluator.evaluate(ev_state, archs, jax.random.key(2))
    result.scores  # validation-batch accuracy (%) of each arch under shared weights
"""
from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax import networks
from nas_jax.data import images as data_lib
from nas_jax.evaluators.base import Evaluation, Evaluator

# Defaults for a small CPU search; sources: NAO-WS (Luo et al. 2018, code
# `NAO_pytorch/NAO_V1`, weight-sharing search) uses SGD lr 0.1 cosine to 0,
# momentum 0.9, weight decay 3e-4, grad clip 5, batch 64 (here lr 0.05 and fewer
# cells/channels because the default data is the 8x8 digits set).
DEFAULT_CONFIG: dict[str, Any] = {
    "dataset": "digits",        # name for nas_jax.data.load_dataset or an ImageDataset
    "data_dir": None,
    "valid_fraction": 0.1,      # search/validation split carved from train (ENAS/NAO: 5k of 50k)
    "valid_size": None,
    "train_size": None,
    "split_seed": 0,
    "init_channels": 16,        # C (NAO-WS search: 20; ENAS micro search: 20)
    "layers": 5,                # total cells; NAO-WS search uses 3 stages
    "num_nodes": 5,             # B
    "batch_size": 64,           # NAO-WS / ENAS
    "eval_batch_size": 500,     # one validation batch scores every arch (NAO-WS)
    "steps_per_round": 100,     # supernet steps per evaluate() call
    "total_rounds": 10,         # length of the cosine schedule, in rounds
    "lr": 0.05,
    "lr_min": 0.0,
    # None: one cosine decay from lr to lr_min over steps_per_round * total_rounds
    # steps (NAO-WS). An int T_0: cosine with warm restarts (SGDR, Loshchilov &
    # Hutter 2017; ENAS --child_lr_cosine): the first period lasts T_0 rounds,
    # each next one lr_restart_mult times longer, and the rate is held for a
    # whole round (ENAS holds it per epoch: src/utils.py get_train_ops).
    # ENAS micro search: T_0 = 10, T_mul = 2 epochs, lr 0.05 -> 0.0005
    # (scripts/cifar10_micro_search.sh); enas_oneshot turns it on.
    "lr_restart_rounds": None,
    "lr_restart_mult": 2,
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "grad_clip": 5.0,
    # Drop-path of the sampled architecture's edges, raised linearly from 0 to
    # this over the schedule (NASNet ScheduledDropPath; NAO-WS search: keep
    # probability 0.9, i.e. 0.1). Off by default for the short CPU searches.
    "drop_path_prob": 0.0,
    "augment": True,            # pad-crop (+ flip where the dataset allows it)
    "eval_bn": "batch",         # batch statistics at evaluation (ENAS / NAO-WS)
    "seed": 0,                  # data order seed
}


def _check(cfg: dict[str, Any]) -> None:
  unknown = sorted(set(cfg) - set(DEFAULT_CONFIG))
  if unknown:
    raise ValueError(f"unknown supernet evaluator setting(s) {unknown}; "
                     f"allowed: {sorted(DEFAULT_CONFIG)}")
  for name in ("init_channels", "layers", "num_nodes", "batch_size", "eval_batch_size",
               "steps_per_round", "total_rounds"):
    value = cfg[name]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
      raise ValueError(f"supernet evaluator {name} must be a positive integer, got {value!r}")
  t0, mult = cfg["lr_restart_rounds"], cfg["lr_restart_mult"]
  if t0 is not None and (isinstance(t0, bool) or not isinstance(t0, (int, np.integer)) or t0 < 1):
    raise ValueError(f"supernet evaluator lr_restart_rounds must be None (one cosine) or a positive "
                     f"integer (the first restart period, in rounds), got {t0!r}")
  if isinstance(mult, bool) or not isinstance(mult, (int, np.integer)) or mult < 1:
    raise ValueError(f"supernet evaluator lr_restart_mult must be a positive integer, got {mult!r}")
  for name in ("lr", "lr_min", "momentum", "weight_decay", "grad_clip"):
    value = cfg[name]
    if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
      raise ValueError(f"supernet evaluator {name} must be a finite number >= 0, got {value!r}")
  p = cfg["drop_path_prob"]
  if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
    raise ValueError(f"supernet evaluator drop_path_prob must be in [0, 1), got {p!r}")
  if cfg["eval_bn"] not in ("batch", "running"):
    raise ValueError(f"supernet evaluator eval_bn must be 'batch' or 'running', got {cfg['eval_bn']!r}")


def cosine_restarts_schedule(lr_max: float, lr_min: float, period: int, mult: int,
                             unit_steps: int = 1, max_periods: int = 40):
  """Cosine annealing with warm restarts, held constant within each unit of steps.

  Unit ``u = step // unit_steps`` lies in restart period ``k`` (lengths
  ``period * mult**k`` units); with ``t`` units into a period of length
  ``T``, the rate is ``lr_min + (lr_max - lr_min) * (1 + cos(pi t / T)) / 2``
  (ENAS ``src/utils.py`` ``get_train_ops`` with ``lr_cosine``, its unit the
  epoch). Period starts are exact integers; past ``max_periods`` periods the
  last one continues.

  Returns:
    An optax schedule ``step -> rate`` (traceable).

  Example:
    >>> f = cosine_restarts_schedule(0.05, 0.0005, period=10, mult=2)
    >>> [round(float(f(u)), 5) for u in (0, 5, 9, 10, 20, 30)]
    [0.05, 0.02525, 0.00171, 0.05, 0.02525, 0.05]
  """
  starts = np.cumsum([0] + [period * mult**k for k in range(max_periods)])
  lengths = np.asarray([period * mult**k for k in range(max_periods)], np.float64)
  starts_j = jnp.asarray(starts[:-1], jnp.float32)
  lengths_j = jnp.asarray(lengths, jnp.float32)

  def schedule(step):
    u = (jnp.asarray(step, jnp.int32) // unit_steps).astype(jnp.float32)
    k = jnp.sum(u >= starts_j) - 1
    t = u - starts_j[k]
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + jnp.cos(jnp.pi * t / lengths_j[k]))

  return schedule


class SupernetEvaluator(Evaluator):
  """Scores architectures with a shared-weight supernet (ENAS / NAO-WS).

  Args:
    space: the search space (its network family must have a supernet).
    config: see ``DEFAULT_CONFIG``.
  """

  name = "supernet"
  needs = ("data",)

  def __init__(self, space, config: dict[str, Any] | None = None, *, data: Any = None):
    config = dict(config or {})
    if data is not None:  # the runner's loaded data (overrides a dataset name)
      config["dataset"] = data
    super().__init__(space, {**DEFAULT_CONFIG, **config})
    _check(self.config)
    self.family = networks.family(space.name)
    if self.family.supernet is None:
      raise ValueError(f"space {space.name!r} has no weight-sharing supernet "
                       f"(networks.family({space.name!r}).supernet is None); use another evaluator")
    self.supernet = self.family.supernet
    self._dataset = None
    self._compiled = None

  # --- data ---------------------------------------------------------------
  def prepare(self) -> None:
    """Loads and checks the data (split sizes against the batch size)."""
    _ = self.dataset

  @property
  def dataset(self) -> data_lib.ImageDataset:
    """The dataset, loaded on first use."""
    if self._dataset is None:
      cfg = self.config
      self._dataset = data_lib.as_dataset(
          cfg["dataset"], data_dir=cfg["data_dir"], valid_fraction=cfg["valid_fraction"],
          valid_size=cfg["valid_size"], train_size=cfg["train_size"], seed=cfg["split_seed"])
      for split, need in (("train", self.config["batch_size"]), ("valid", 1)):
        if self._dataset.size(split) < need:
          raise ValueError(
              f"dataset {self._dataset.name!r} split {split!r} has {self._dataset.size(split)} "
              f"examples; the supernet evaluator needs at least {need} (lower batch_size or "
              "raise valid_fraction)")
    return self._dataset

  def _steps_per_epoch(self) -> int:
    return data_lib.num_batches(self.dataset, "train", self.config["batch_size"])

  # --- network ------------------------------------------------------------
  @property
  def net_config(self):
    cfg = self.config
    space_fields = getattr(self.supernet, "space_fields", None)  # the space's size (macro: num_layers)
    return self.supernet.config(
        num_classes=self.dataset.num_classes, init_channels=cfg["init_channels"],
        layers=cfg["layers"], num_nodes=cfg["num_nodes"],
        **(space_fields(self.space) if space_fields is not None else {}))

  def _optimizer(self) -> optax.GradientTransformation:
    cfg = self.config
    total = cfg["steps_per_round"] * cfg["total_rounds"]
    if cfg["lr_restart_rounds"] is None:
      schedule = optax.cosine_decay_schedule(
          cfg["lr"], decay_steps=total, alpha=(cfg["lr_min"] / cfg["lr"]) if cfg["lr"] else 0.0)
    else:
      schedule = cosine_restarts_schedule(cfg["lr"], cfg["lr_min"], cfg["lr_restart_rounds"],
                                          cfg["lr_restart_mult"], unit_steps=cfg["steps_per_round"])
    return self.supernet.default_optimizer(
        learning_rate=schedule, momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
        clip_norm=cfg["grad_clip"])

  def _drop_path(self):
    """0.0 (off) or the linear schedule ``step -> probability`` up to ``drop_path_prob``."""
    cfg = self.config
    if not cfg["drop_path_prob"]:
      return 0.0
    return optax.linear_schedule(0.0, float(cfg["drop_path_prob"]), cfg["steps_per_round"] * cfg["total_rounds"])

  def _steps(self):
    """The jitted train step and batched eval, built once per evaluator."""
    if self._compiled is None:
      net_cfg = self.net_config
      self._compiled = (
          self.supernet.make_train_step(net_cfg, self._optimizer(), drop_path=self._drop_path()),
          self.supernet.make_eval_archs(net_cfg, bn=self.config["eval_bn"]))
    return self._compiled

  def init(self, key: jax.Array) -> dict[str, Any]:
    """Supernet parameters, optimizer state and the data position."""
    params, stats = self.supernet.init(key, self.net_config, self.dataset.image_shape)
    return {"net": self.supernet.init_train_state(params, stats, self._optimizer()),
            "data_epoch": np.int64(0), "data_step": np.int64(0)}

  # --- evaluation ---------------------------------------------------------
  def _train_batches(self, epoch: int, step: int):
    """Training batches from ``(epoch, step)`` on, across epoch boundaries."""
    cfg = self.config
    aug = data_lib.default_augment(self.dataset, cutout=0) if cfg["augment"] else None
    while True:
      for batch in data_lib.epoch_batches(self.dataset, "train", cfg["batch_size"], seed=cfg["seed"],
                                          epoch=epoch, start_step=step, augment=aug):
        step += 1
        yield batch, epoch, step
      epoch, step = epoch + 1, 0

  def train(self, state: dict[str, Any], archs: np.ndarray, key: jax.Array,
            steps: int | None = None, *, in_order: bool = False) -> tuple[dict[str, Any], dict[str, float]]:
    """Trains the supernet, each step on an arch drawn uniformly from ``archs``.

    With ``in_order=True`` step ``t`` trains ``archs[t]`` instead (ENAS: a
    fresh controller sample per minibatch); ``steps`` then defaults to, and
    must equal, ``len(archs)``.

    Returns:
      ``(state, metrics)`` with the mean training loss and accuracy (%).
    """
    train_step, _ = self._steps()
    archs = np.asarray(archs, np.int32)
    if in_order:
      steps = len(archs) if steps is None else steps
      if steps != len(archs):
        raise ValueError(f"in_order training takes one architecture per step: got {len(archs)} "
                         f"architectures for {steps} steps")
      picks = np.arange(steps)
    else:
      steps = self.config["steps_per_round"] if steps is None else steps
      picks = np.asarray(jax.random.randint(jax.random.fold_in(key, 0), (steps,), 0, len(archs)))
    step_keys = jax.random.split(jax.random.fold_in(key, 1), steps)
    net = state["net"]
    epoch, step = int(state["data_epoch"]), int(state["data_step"])
    if step >= self._steps_per_epoch():
      epoch, step = epoch + 1, 0
    losses, accs = [], []
    batches = data_lib.prefetch(self._train_batches(epoch, step), size=2)
    try:
      for t in range(steps):
        batch, epoch, step = next(batches)
        net, metrics = train_step(net, archs[picks[t]], (batch["image"], batch["label"]), step_keys[t])
        losses.append(metrics["loss"])
        accs.append(metrics["acc"])
    finally:
      batches.close()
    losses = np.asarray(jax.device_get(losses), np.float64)
    accs = np.asarray(jax.device_get(accs), np.float64)
    new_state = {"net": net, "data_epoch": np.int64(epoch), "data_step": np.int64(step)}
    return new_state, {"train_loss": float(losses.mean()) if steps else float("nan"),
                       "train_acc": 100.0 * float(accs.mean()) if steps else float("nan")}

  def score(self, state: dict[str, Any], archs: np.ndarray,
            key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy (%) and loss of each arch on one validation batch drawn with ``key``."""
    _, eval_archs = self._steps()
    x_val, y_val = self.dataset.arrays("valid")
    n = min(self.config["eval_batch_size"], len(y_val))
    epoch = int(jax.random.randint(key, (), 0, 2**30))
    batch = next(data_lib.epoch_batches(self.dataset, "valid", n, seed=self.config["seed"], epoch=epoch))
    acc, loss = eval_archs(state["net"]["params"], state["net"]["batch_stats"],
                           np.asarray(archs, np.int32), batch["image"], batch["label"])
    return 100.0 * np.asarray(acc, np.float64), np.asarray(loss, np.float64)

  def evaluate(self, state: dict[str, Any], archs: np.ndarray,
               key: jax.Array) -> tuple[Evaluation, dict[str, Any]]:
    """Trains the supernet on ``archs``, then scores each of them.

    Returns:
      ``(Evaluation, state)``; ``info`` holds the round's supernet training
      loss/accuracy and the validation loss of each arch.
    """
    archs = np.stack([self.space.validate(a) for a in np.asarray(archs)])
    k_train, k_score = jax.random.split(key)
    t0 = time.perf_counter()
    state, train_metrics = self.train(state, archs, k_train)
    t1 = time.perf_counter()
    scores, losses = self.score(state, archs, k_score)
    t2 = time.perf_counter()
    per_arch = (t1 - t0) / len(archs) + (t2 - t1) / len(archs)
    info = [{"supernet_valid_loss": float(l), **train_metrics} for l in losses]
    return Evaluation(scores=scores, costs=np.full(len(archs), per_arch), info=info), state
