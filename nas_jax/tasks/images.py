"""Image classification: the ``images`` task.

Data: ``nas_jax.data.load_dataset`` (digits, tfds datasets, image folders).
Loss: softmax cross-entropy (plus the auxiliary head's, weighted). Metric:
accuracy in %; the search score *is* the validation accuracy.

Training (``train_epoch``): Nesterov-momentum SGD under a per-epoch cosine
learning rate, drop-path raised linearly over the epochs, pad-crop / flip /
cutout augmentation. One jitted train step and one jitted eval step per
(module, optimiser settings), memoised (``get_steps``); the learning rate and
the drop-path probability are traced arguments, so neither recompiles as they
change. A step whose loss or gradients are not finite is skipped (parameters,
BN statistics and optimizer state unchanged) and counted; past
``max_nonfinite`` such steps the run stops with a ``RuntimeError``.

Defaults (``DEFAULT_CONFIG``): the optimiser settings are those of DARTS'
final CIFAR-10 training (Liu et al. 2019, also used by NAO, Luo et al. 2018):
lr 0.025 cosine-annealed to 0, momentum 0.9, weight decay 3e-4, gradient
clipping at norm 5, auxiliary head weight 0.4. The sizes are small CPU
defaults; ``PAPER_CONFIG`` holds the papers' final-training sizes (600 epochs,
batch 96, C=36, 20 layers, auxiliary, drop-path 0.2, cutout 16).

Example:
    >>> task = ImageClassification()
    >>> data = task.load("digits", train_size=64)
    >>> cfg = task.resolve_train_config({"epochs": 2, "batch_size": 32})
    >>> cfg["lr"], task.metric, task.num_train_steps(data, cfg)
    (0.025, 'valid_acc', 2)
    >>> task.network_kwargs(data), task.dummy_input(data).shape
    ({'num_classes': 10}, (1, 8, 8, 1))
"""
from __future__ import annotations

import collections
import functools
import hashlib
import math
import time
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax import parallel
from nas_jax.data import images as data_lib
from nas_jax.tasks.base import Task

DEFAULT_CONFIG: dict[str, Any] = {
    # Schedule and batch. Papers: 600 epochs (DARTS, NAO), batch 96 (DARTS)
    # or 128 (NAO). CPU default: a short run.
    "epochs": 10,
    "batch_size": 64,
    "eval_batch_size": 256,
    # Optimiser: SGD, Nesterov momentum 0.9 (ENAS), lr 0.025 cosine-annealed
    # to lr_min 0 per epoch (DARTS, NAO), weight decay 3e-4 (DARTS, NAO),
    # gradient clipping by global norm 5 (DARTS; None or 0 disables it).
    "lr": 0.025,
    "lr_min": 0.0,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 3e-4,
    "grad_clip": 5.0,
    # Regularisation: auxiliary head at 2/3 depth with loss weight 0.4
    # (NASNet, DARTS, NAO); drop-path probability increased linearly from 0 to
    # drop_path_prob over the epochs (NASNet "ScheduledDropPath", DARTS: 0.2);
    # cutout side (DARTS/NAO: 16 on 32x32; None: half the image side; 0: off);
    # pad-crop and (dataset permitting) flip when augment is True.
    "auxiliary": False,
    "auxiliary_weight": 0.4,
    "drop_path_prob": 0.0,
    "cutout": 0,
    "augment": True,
    # Random affine distortion (with augment): largest rotation in degrees and
    # relative zoom; 0 = off (the papers' CIFAR recipes use none; for 8x8
    # digits see experiments/configs/default.py).
    "rotate": 0.0,
    "scale": 0.0,
    # Network size. Papers: init_channels 36, layers 20 (DARTS, NAO).
    "init_channels": 16,
    "layers": 5,
    # Splits: train on train_split, report valid_split each epoch (None or an
    # empty split: skipped) and the test split at the end (eval_test).
    "train_split": "train",
    "valid_split": "valid",
    "eval_test": True,
    # Robustness and plumbing.
    "max_nonfinite": 10,
    "prefetch": 2,
    "data_seed": None,  # None: derived from the key
}

PAPER_CONFIG: dict[str, Any] = dict(
    DEFAULT_CONFIG, epochs=600, batch_size=96, init_channels=36, layers=20,
    auxiliary=True, drop_path_prob=0.2, cutout=16)


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
  return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)


def resolve_config(config: dict[str, Any] | None) -> dict[str, Any]:
  """``DEFAULT_CONFIG`` updated by ``config``, checked.

  Raises:
    ValueError: an unknown key or a value out of range (one line naming it).

  Example:
    >>> resolve_config({"epochs": 3})["epochs"]
    3
    >>> resolve_config({"epoch": 3})
    Traceback (most recent call last):
    ...
    ValueError: unknown training config keys ['epoch']; known: [...]
  """
  config = dict(config or {})
  unknown = sorted(set(config) - set(DEFAULT_CONFIG))
  if unknown:
    raise ValueError(f"unknown training config keys {unknown}; known: "
                     f"{sorted(DEFAULT_CONFIG)}")
  cfg = dict(DEFAULT_CONFIG, **config)

  def check(name, ok, what):
    if not ok:
      raise ValueError(f"training config {name}={cfg[name]!r}: must be {what}")

  for name in ("epochs", "batch_size", "eval_batch_size", "init_channels",
               "layers", "prefetch"):
    check(name, _is_int(cfg[name]) and cfg[name] >= 1, "an int >= 1")
  check("max_nonfinite", _is_int(cfg["max_nonfinite"]) and
        cfg["max_nonfinite"] >= 0, "an int >= 0")
  for name in ("lr", "lr_min", "weight_decay", "auxiliary_weight"):
    check(name, _is_num(cfg[name]) and cfg[name] >= 0, "a finite number >= 0")
  check("lr", cfg["lr"] > 0, "> 0")
  check("rotate", _is_num(cfg["rotate"]) and 0 <= cfg["rotate"] <= 180, "degrees in [0, 180]")
  check("scale", _is_num(cfg["scale"]) and 0 <= cfg["scale"] < 1, "in [0, 1)")
  check("lr_min", cfg["lr_min"] <= cfg["lr"], "<= lr")
  check("momentum", _is_num(cfg["momentum"]) and 0 <= cfg["momentum"] < 1,
        "in [0, 1)")
  check("drop_path_prob", _is_num(cfg["drop_path_prob"]) and
        0 <= cfg["drop_path_prob"] < 1, "in [0, 1)")
  check("grad_clip", cfg["grad_clip"] is None or
        (_is_num(cfg["grad_clip"]) and cfg["grad_clip"] >= 0), "None or >= 0")
  check("cutout", cfg["cutout"] is None or (_is_int(cfg["cutout"]) and
                                            cfg["cutout"] >= 0),
        "None or an int >= 0")
  for name in ("nesterov", "auxiliary", "augment", "eval_test"):
    check(name, isinstance(cfg[name], bool), "True or False")
  check("data_seed", cfg["data_seed"] is None or _is_int(cfg["data_seed"]),
        "None or an int")
  check("train_split", isinstance(cfg["train_split"], str), "a split name")
  check("valid_split", cfg["valid_split"] is None or
        isinstance(cfg["valid_split"], str), "None or a split name")
  return cfg


def cosine_lr(epoch: int, cfg: dict[str, Any]) -> float:
  """Learning rate of ``epoch`` (0-based): cosine from lr to lr_min, per epoch
  as in DARTS/NAO (``CosineAnnealingLR(T_max=epochs)``).

  Example:
    >>> cfg = {"lr": 0.1, "lr_min": 0.0, "epochs": 10}
    >>> cosine_lr(0, cfg), cosine_lr(5, cfg), cosine_lr(10, cfg)
    (0.1, 0.05, 0.0)
  """
  return cfg["lr_min"] + 0.5 * (cfg["lr"] - cfg["lr_min"]) * (
      1.0 + math.cos(math.pi * epoch / cfg["epochs"]))


def drop_prob_at(epoch: int, cfg: dict[str, Any]) -> float:
  """Drop-path probability of ``epoch`` (0-based), ramped linearly (DARTS).

  Example:
    >>> drop_prob_at(5, {"drop_path_prob": 0.2, "epochs": 10})
    0.1
  """
  return cfg["drop_path_prob"] * epoch / cfg["epochs"]


def make_optimizer(cfg: dict[str, Any]) -> optax.GradientTransformation:
  """Gradient clipping, L2 weight decay and (Nesterov) momentum.

  The learning rate is applied by the train step (a traced scalar), so the
  transformation's output is the descent direction; the order matches
  PyTorch's ``clip_grad_norm_`` + ``SGD(weight_decay, momentum, nesterov)``.
  """
  parts = []
  if cfg["grad_clip"]:
    parts.append(optax.clip_by_global_norm(cfg["grad_clip"]))
  if cfg["weight_decay"]:
    parts.append(optax.add_decayed_weights(cfg["weight_decay"]))
  parts.append(optax.trace(decay=cfg["momentum"], nesterov=cfg["nesterov"]))
  return optax.chain(*parts)


def _cross_entropy(logits, labels, mask):
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)
  return jnp.sum(losses * mask), losses


def make_steps(model, tx: optax.GradientTransformation, cfg: dict[str, Any]):
  """The jitted ``train_step`` and ``eval_step`` of ``model``.

  ``train_step(state, batch, key, lr, drop_prob) -> (state, metrics)`` where
  ``state`` is a dict of ``params``, ``batch_stats`` and ``opt_state``;
  ``metrics`` holds ``loss`` (mean over the batch), ``correct`` and
  ``finite`` (False: the step was skipped). ``eval_step(state, batch) ->
  (loss_sum, correct, count)`` over the batch's ``mask``.
  """
  use_drop = cfg["drop_path_prob"] > 0
  aux_weight = cfg["auxiliary_weight"] if cfg["auxiliary"] else 0.0

  def loss_fn(params, batch_stats, batch, key, drop_prob):
    chex.assert_rank(batch["image"], 4)
    chex.assert_equal_shape([batch["label"], batch["mask"]])
    variables = {"params": params, "batch_stats": batch_stats}
    kwargs = {"drop_prob": drop_prob} if use_drop else {}
    (logits, aux_logits), new_vars = model.apply(
        variables, batch["image"], train=True, rngs={"drop_path": key},
        mutable=["batch_stats"], **kwargs)
    n = batch["label"].shape[0]
    loss_sum, _ = _cross_entropy(logits, batch["label"], batch["mask"])
    loss = loss_sum / n
    if aux_weight and aux_logits is not None:
      aux_sum, _ = _cross_entropy(aux_logits, batch["label"], batch["mask"])
      total = loss + aux_weight * aux_sum / n
    else:
      total = loss
    correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * batch["mask"])
    return total, (loss, correct, new_vars.get("batch_stats", {}))

  def train_step(state, batch, key, lr, drop_prob):
    (_, (loss, correct, new_bs)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state["params"], state["batch_stats"], batch,
                               key, drop_prob)
    finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    updates, new_opt = tx.update(grads, state["opt_state"], state["params"])
    new_params = jax.tree.map(lambda p, u: p - lr * u, state["params"], updates)
    new_state = {"params": new_params, "batch_stats": new_bs,
                 "opt_state": new_opt}
    # Skip a non-finite step: keep every part of the old state.
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                             new_state, state)
    return new_state, {"loss": loss, "correct": correct, "finite": finite}

  def eval_step(state, batch):
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    logits, _ = model.apply(variables, batch["image"], train=False)
    loss_sum, _ = _cross_entropy(logits, batch["label"], batch["mask"])
    correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * batch["mask"])
    return loss_sum, correct, jnp.sum(batch["mask"])

  # Data-parallel over every device (nas_jax.parallel; plain jax.jit on one device).
  return (parallel.data_parallel_jit(train_step, batch_argnums=(1,), donate_argnums=(0,)),
          parallel.data_parallel_jit(eval_step, batch_argnums=(1,)))


_STEP_CACHE: "collections.OrderedDict[Any, tuple]" = collections.OrderedDict()
_STEP_CACHE_SIZE = 8
_STEP_KEYS = ("grad_clip", "weight_decay", "momentum", "nesterov", "auxiliary",
              "auxiliary_weight")


def get_steps(model, cfg: dict[str, Any]):
  """``make_steps(model, make_optimizer(cfg), cfg)``, memoised.

  Training the same (hashable) module again with the same optimiser settings
  (a re-evaluated architecture, a resumed run, tests) reuses the compiled
  steps instead of compiling them again. Keeps the last 8.

  Returns:
    ``(tx, train_step, eval_step)``.
  """
  try:
    key = (model, tuple(cfg[k] for k in _STEP_KEYS), cfg["drop_path_prob"] > 0, parallel.default_mesh())
    hash(key)
  except TypeError:  # an unhashable module: no memoisation
    tx = make_optimizer(cfg)
    return (tx,) + make_steps(model, tx, cfg)
  if key in _STEP_CACHE:
    _STEP_CACHE.move_to_end(key)
    return _STEP_CACHE[key]
  tx = make_optimizer(cfg)
  entry = (tx,) + make_steps(model, tx, cfg)
  _STEP_CACHE[key] = entry
  while len(_STEP_CACHE) > _STEP_CACHE_SIZE:
    _STEP_CACHE.popitem(last=False)
  return entry


def evaluate(eval_step, state, dataset, split: str, batch_size: int,
             prefetch_size: int = 2) -> tuple[float, float]:
  """Mean loss and accuracy (%) of ``state`` on ``split`` (every example)."""
  loss = correct = count = 0.0
  batches = data_lib.epoch_batches(dataset, split, batch_size, seed=0, epoch=0,
                                   shuffle=False, drop_remainder=False)
  with data_lib.prefetch(batches, size=prefetch_size) as it:
    sums = [eval_step(state, batch) for batch in it]
  for l, c, n in jax.device_get(sums):
    loss, correct, count = loss + float(l), correct + float(c), count + float(n)
  return loss / count, 100.0 * correct / count


# Compiling flax's init (which runs the forward pass) at XLA's lowest backend
# optimisation level: the init runs once, so compile time is all that counts.
# Measured on the nasnet child (C=16, 5 layers, 2 busy cores), CPU seconds:
# eager init 48.5, jit 32.7, jit at level 0 14.3.
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                          "xla_llvm_disable_expensive_passes": True}


def init_variables(model, key: jax.Array, x: jax.Array) -> dict[str, Any]:
  """``model.init`` (train=False) on ``x``, compiled once and cheaply.

  Args:
    model: a flax module with the image ``build_child`` contract.
    key: PRNG key for the ``params`` and ``drop_path`` streams.
    x: a dummy input batch.

  Returns:
    The variables (``params``, ``batch_stats``).
  """
  rngs = {"params": key, "drop_path": key}
  init = jax.jit(functools.partial(model.init, train=False))
  try:
    compiled = init.lower(rngs, x).compile(
        compiler_options=_INIT_COMPILER_OPTIONS)
  except Exception:  # pylint: disable=broad-except  # an XLA without the options
    return init(rngs, x)
  return compiled(rngs, x)


class ImageClassification(Task):
  """Image classification (see the module docstring).

  Example:
    >>> task = ImageClassification()
    >>> task.score(91.0), task.metric, task.higher_is_better
    (91.0, 'valid_acc', True)
  """

  name = "images"
  metric = "valid_acc"
  higher_is_better = True

  def load(self, spec: str, *, data_dir: str | None = None, **options: Any) -> data_lib.ImageDataset:
    return data_lib.load_dataset(spec, data_dir=data_dir, **options)

  def accepts(self, data: Any) -> bool:
    return isinstance(data, data_lib.ImageDataset)

  def describe(self, data: data_lib.ImageDataset) -> dict[str, Any]:
    return {"task": self.name, "name": data.name, "image_shape": list(data.image_shape),
            "num_classes": data.num_classes,
            "labels": {s: hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()[:12]
                       for s, y in data.labels.items()},
            "mean": np.asarray(data.mean).tolist()}

  def network_kwargs(self, data: data_lib.ImageDataset) -> dict[str, Any]:
    return {"num_classes": data.num_classes}

  def dummy_input(self, data: data_lib.ImageDataset) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((1,) + tuple(data.image_shape), jnp.float32)

  def score(self, metric: float) -> float:
    return float(metric)

  def default_train_config(self) -> dict[str, Any]:
    return dict(DEFAULT_CONFIG)

  def resolve_train_config(self, config: dict[str, Any] | None) -> dict[str, Any]:
    return resolve_config(config)

  def network_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
    return {"init_channels": cfg["init_channels"], "layers": cfg["layers"],
            "auxiliary": cfg["auxiliary"]}

  def init_variables(self, model: Any, key: jax.Array, data: data_lib.ImageDataset) -> dict[str, Any]:
    return init_variables(model, key, jnp.zeros((1,) + tuple(data.image_shape), jnp.float32))

  def init_state(self, model: Any, variables: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    tx, _, _ = get_steps(model, cfg)
    params = variables["params"]
    return {"params": params, "batch_stats": variables.get("batch_stats", {}),
            "opt_state": tx.init(params)}

  def num_train_steps(self, data: data_lib.ImageDataset, cfg: dict[str, Any]) -> int:
    return data_lib.num_batches(data, cfg["train_split"], cfg["batch_size"])

  def has_split(self, data: data_lib.ImageDataset, split: str | None) -> bool:
    return split is not None and data.size(split) > 0

  def _augment(self, data, cfg):
    if cfg["augment"]:
      return data_lib.default_augment(data, cutout=cfg["cutout"], rotate=cfg["rotate"],
                                      scale=cfg["scale"])
    if cfg["cutout"]:
      return data_lib.Augment(cutout=int(cfg["cutout"]))
    return None

  def train_epoch(self, model: Any, state: dict[str, Any], data: data_lib.ImageDataset,
                  cfg: dict[str, Any], epoch: int, key: jax.Array, data_seed: int, *,
                  nonfinite_before: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    _, train_step, _ = get_steps(model, cfg)
    steps_per_epoch = self.num_train_steps(data, cfg)
    lr = jnp.float32(cosine_lr(epoch, cfg))
    drop = jnp.float32(drop_prob_at(epoch, cfg))
    loss_sum = correct_sum = 0.0
    seen = nonfinite = 0
    step_times = []
    batches = data_lib.epoch_batches(data, cfg["train_split"], cfg["batch_size"], seed=data_seed,
                                     epoch=epoch, augment=self._augment(data, cfg))
    with data_lib.prefetch(batches, size=cfg["prefetch"]) as it:
      for step, batch in enumerate(it):
        t0 = time.perf_counter()
        global_step = epoch * steps_per_epoch + step
        state, m = train_step(state, batch, jax.random.fold_in(key, global_step), lr, drop)
        m = jax.device_get(m)
        step_times.append(time.perf_counter() - t0)
        if not bool(m["finite"]):
          nonfinite += 1
          if nonfinite_before + nonfinite > cfg["max_nonfinite"]:
            raise RuntimeError(
                f"training diverged: {nonfinite_before + nonfinite} steps with a non-finite loss "
                f"or gradient (max_nonfinite={cfg['max_nonfinite']}), last at "
                f"epoch {epoch + 1} step {step}; lower lr (now "
                f"{float(lr):.4g}) or raise grad clipping")
          continue
        loss_sum += float(m["loss"]) * cfg["batch_size"]
        correct_sum += float(m["correct"])
        seen += cfg["batch_size"]
    return state, {
        "lr": float(lr), "drop_prob": float(drop),
        "train_loss": loss_sum / seen if seen else float("nan"),
        "train_acc": 100.0 * correct_sum / seen if seen else float("nan"),
        "nonfinite": nonfinite, "step_times": step_times}

  def evaluate(self, model: Any, state: dict[str, Any], data: data_lib.ImageDataset, split: str,
               cfg: dict[str, Any]) -> dict[str, float]:
    _, _, eval_step = get_steps(model, cfg)
    loss, acc = evaluate(eval_step, state, data, split, cfg["eval_batch_size"], cfg["prefetch"])
    return {"loss": loss, "acc": acc}
