"""Training a child network from scratch, with a learning curve and resume.

``train_child(space, arch, dataset, config, key)`` builds the fixed child
network of ``arch`` (``nas_jax.networks.build_child``), trains it with
Nesterov-momentum SGD under a cosine learning rate, and returns the per-epoch
learning curve (train/valid loss and accuracy) and the final test accuracy.

One jitted train step and one jitted eval step are built per call; the
learning rate and the drop-path probability are traced arguments, so neither
recompiles as they change across epochs. A step whose loss or gradients are
not finite is skipped (parameters, BN statistics and optimizer state unchanged)
and counted; past ``max_nonfinite`` such steps the run stops with a
``RuntimeError``.

With ``workdir``, the state (parameters, BN statistics, optimizer state, RNG
key, epoch, curve so far, skipped-step count) is checkpointed atomically with
orbax after every epoch, and a second call with the same arguments resumes
from the last complete epoch. Batches and per-step RNG keys are functions of
``(seed, epoch, step)``, so a resumed run reproduces the uninterrupted run's
curve and test accuracy exactly (on CPU bit for bit).

Defaults (``DEFAULT_CONFIG``): the optimiser settings are those of DARTS'
final CIFAR-10 training (Liu et al. 2019, also used by NAO, Luo et al. 2018):
lr 0.025 cosine-annealed to 0, momentum 0.9, weight decay 3e-4, gradient
clipping at norm 5, auxiliary head weight 0.4. The sizes are small CPU
defaults; ``PAPER_CONFIG`` holds the papers' final-training sizes (600 epochs,
batch 96, C=36, 20 layers, auxiliary, drop-path 0.2, cutout 16).

Example:
    >>> ds = load_dataset("digits")
    >>> result = train_child(space, arch, ds, {"epochs": 5}, jax.random.key(0))
    >>> result["curve"][-1]["valid_acc"], result["test_acc"]
"""
from __future__ import annotations

import collections
import functools
import hashlib
import json
import math
import os
import pathlib
import time
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax.data import images as data_lib

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


def resolve_config(config: dict[str, Any] | None) -> dict[str, Any]:
  """``DEFAULT_CONFIG`` updated by ``config``, checked.

  Raises:
    ValueError: an unknown key or a value out of range (one line naming it).
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

  def is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

  def is_num(v):
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) \
        and math.isfinite(v)

  for name in ("epochs", "batch_size", "eval_batch_size", "init_channels",
               "layers", "prefetch"):
    check(name, is_int(cfg[name]) and cfg[name] >= 1, "an int >= 1")
  check("max_nonfinite", is_int(cfg["max_nonfinite"]) and
        cfg["max_nonfinite"] >= 0, "an int >= 0")
  for name in ("lr", "lr_min", "weight_decay", "auxiliary_weight"):
    check(name, is_num(cfg[name]) and cfg[name] >= 0, "a finite number >= 0")
  check("lr", cfg["lr"] > 0, "> 0")
  check("lr_min", cfg["lr_min"] <= cfg["lr"], "<= lr")
  check("momentum", is_num(cfg["momentum"]) and 0 <= cfg["momentum"] < 1,
        "in [0, 1)")
  check("drop_path_prob", is_num(cfg["drop_path_prob"]) and
        0 <= cfg["drop_path_prob"] < 1, "in [0, 1)")
  check("grad_clip", cfg["grad_clip"] is None or
        (is_num(cfg["grad_clip"]) and cfg["grad_clip"] >= 0), "None or >= 0")
  check("cutout", cfg["cutout"] is None or (is_int(cfg["cutout"]) and
                                            cfg["cutout"] >= 0),
        "None or an int >= 0")
  for name in ("nesterov", "auxiliary", "augment", "eval_test"):
    check(name, isinstance(cfg[name], bool), "True or False")
  check("data_seed", cfg["data_seed"] is None or is_int(cfg["data_seed"]),
        "None or an int")
  check("train_split", isinstance(cfg["train_split"], str), "a split name")
  check("valid_split", cfg["valid_split"] is None or
        isinstance(cfg["valid_split"], str), "None or a split name")
  return cfg


def cosine_lr(epoch: int, cfg: dict[str, Any]) -> float:
  """Learning rate of ``epoch`` (0-based): cosine from lr to lr_min, per epoch
  as in DARTS/NAO (``CosineAnnealingLR(T_max=epochs)``)."""
  return cfg["lr_min"] + 0.5 * (cfg["lr"] - cfg["lr_min"]) * (
      1.0 + math.cos(math.pi * epoch / cfg["epochs"]))


def drop_prob_at(epoch: int, cfg: dict[str, Any]) -> float:
  """Drop-path probability of ``epoch`` (0-based), ramped linearly (DARTS)."""
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

  return jax.jit(train_step, donate_argnums=(0,)), jax.jit(eval_step)


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
    key = (model, tuple(cfg[k] for k in _STEP_KEYS), cfg["drop_path_prob"] > 0)
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
    model: a flax module with the ``build_child`` contract.
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


def _seed_from_key(key) -> int:
  data = np.asarray(jax.random.key_data(key)).ravel()
  return int(np.uint64(data[-1]) | (np.uint64(data[0]) << np.uint64(32))) % (2**63)


def _fingerprint(space, arch, dataset, cfg, key, model) -> str:
  record = {
      "space": getattr(space, "name", None),
      "arch": None if arch is None else np.asarray(arch).tolist(),
      "model": None if model is None else repr(model)[:2000],
      "dataset": [dataset.name, list(dataset.image_shape), dataset.num_classes,
                  {s: hashlib.sha256(np.ascontiguousarray(y).tobytes())
                   .hexdigest()[:12] for s, y in dataset.labels.items()},
                  np.asarray(dataset.mean).tolist()],
      "config": {k: v for k, v in cfg.items() if k not in ("prefetch",
                                                           "max_nonfinite")},
      "key": np.asarray(jax.random.key_data(key)).tolist(),
  }
  text = json.dumps(record, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _as_key(key):
  if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype,
                                                   jax.dtypes.prng_key):
    return key
  if isinstance(key, (int, np.integer)):
    return jax.random.key(int(key))
  if (isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32
      and key.shape == (2,)):  # a legacy jax.random.PRNGKey
    return jax.random.wrap_key_data(jnp.asarray(key))
  raise ValueError(f"key must be a jax.random.key(...) or an int seed, got "
                   f"{type(key).__name__}")


def train_child(space, arch, dataset: data_lib.ImageDataset,
                config: dict[str, Any] | None, key, *,
                workdir: str | os.PathLike | None = None,
                progress: Callable[[int, dict[str, Any]], None] | None = None,
                model=None) -> dict[str, Any]:
  """Trains the child network of ``arch`` from scratch.

  Args:
    space: the ``SearchSpace`` of ``arch`` (may be None when ``model`` is given).
    arch: int32 architecture array (may be None when ``model`` is given).
    dataset: an ``ImageDataset`` (``nas_jax.data.load_dataset``).
    config: overrides of ``DEFAULT_CONFIG`` (see there).
    key: ``jax.random.key`` (or an int seed): initialisation, drop-path and,
      unless ``config["data_seed"]`` is set, the data order.
    workdir: checkpoint directory; a second call with the same arguments
      resumes from the last complete epoch. A checkpoint of another run
      (different arch, config, dataset or key) raises ``ValueError``.
    progress: ``callable(epoch, metrics)`` called after each epoch (1-based
      epoch, the curve entry); for progress bars.
    model: a flax module with the ``build_child`` contract to train instead
      of ``build_child(space, arch, ...)`` (tests, custom networks).

  Returns:
    dict with ``curve`` (per epoch: ``epoch``, ``lr``, ``drop_prob``,
    ``train_loss``, ``train_acc``, ``valid_loss``, ``valid_acc``, ``seconds``;
    accuracies in %), ``test_acc`` (%; None when ``eval_test`` is False),
    ``test_loss``, ``params`` (parameter count), ``nonfinite_steps``,
    ``steps_per_epoch``, ``step_s`` (median train-step time of this call,
    compile excluded), ``first_step_s`` (first step of this call, compile
    included), ``seconds`` (this call's wall time).

  Raises:
    ValueError: bad config, dataset too small for the batch size, foreign or
      unreadable checkpoint.
    RuntimeError: more than ``max_nonfinite`` non-finite training steps.
  """
  t_call = time.perf_counter()
  cfg = resolve_config(config)
  if not isinstance(dataset, data_lib.ImageDataset):
    raise ValueError(f"dataset must be an ImageDataset (nas_jax.data."
                     f"load_dataset), got {type(dataset).__name__}")
  key = _as_key(key)
  if model is None:
    if space is None or arch is None:
      raise ValueError("train_child needs (space, arch) or model=")
    from nas_jax import networks  # pylint: disable=g-import-not-at-top
    arch = space.validate(arch)
    model = networks.build_child(
        space, arch, num_classes=dataset.num_classes,
        init_channels=cfg["init_channels"], layers=cfg["layers"],
        auxiliary=cfg["auxiliary"])
  steps_per_epoch = data_lib.num_batches(dataset, cfg["train_split"],
                                         cfg["batch_size"])
  if steps_per_epoch == 0:
    raise ValueError(f"split {cfg['train_split']!r} of {dataset.name!r} has "
                     f"{dataset.size(cfg['train_split'])} examples, fewer than "
                     f"batch_size {cfg['batch_size']}; lower batch_size")
  valid_split = cfg["valid_split"]
  if valid_split is not None and dataset.size(valid_split) == 0:
    valid_split = None
  data_seed = (_seed_from_key(jax.random.fold_in(key, 2))
               if cfg["data_seed"] is None else int(cfg["data_seed"]))
  augment = None
  if cfg["augment"]:
    augment = data_lib.default_augment(dataset, cutout=cfg["cutout"])
  elif cfg["cutout"]:
    augment = data_lib.Augment(cutout=int(cfg["cutout"]))

  init_key, step_key = jax.random.split(key)
  dummy = jnp.zeros((1,) + tuple(dataset.image_shape), jnp.float32)
  variables = init_variables(model, init_key, dummy)
  tx, train_step, eval_step = get_steps(model, cfg)
  params = variables["params"]
  state = {"params": params, "batch_stats": variables.get("batch_stats", {}),
           "opt_state": tx.init(params)}
  num_params = int(sum(np.size(p) for p in jax.tree.leaves(params)))
  curve: list[dict[str, Any]] = []
  nonfinite = 0
  start_epoch = 0

  ckpt = None
  if workdir is not None:
    from nas_jax.checkpoint import SearchCheckpointer  # pylint: disable=g-import-not-at-top
    fingerprint = _fingerprint(space, arch, dataset, cfg, key,
                               model if arch is None else None)
    ckpt = SearchCheckpointer(pathlib.Path(workdir) / "checkpoints",
                              fingerprint=fingerprint, keep=2)
    restored = ckpt.restore({"train": state})
    if restored is not None:
      trees, meta = restored
      state = jax.tree.map(jnp.asarray, trees["train"])
      start_epoch = int(meta["epoch"])
      curve = list(meta["curve"])
      nonfinite = int(meta["nonfinite"])

  step_times: list[float] = []
  first_step_s = None
  for epoch in range(start_epoch, cfg["epochs"]):
    t_epoch = time.perf_counter()
    lr = jnp.float32(cosine_lr(epoch, cfg))
    drop = jnp.float32(drop_prob_at(epoch, cfg))
    loss_sum = correct_sum = 0.0
    seen = 0
    batches = data_lib.epoch_batches(dataset, cfg["train_split"],
                                     cfg["batch_size"], seed=data_seed,
                                     epoch=epoch, augment=augment)
    with data_lib.prefetch(batches, size=cfg["prefetch"]) as it:
      for step, batch in enumerate(it):
        t0 = time.perf_counter()
        global_step = epoch * steps_per_epoch + step
        state, m = train_step(state, batch,
                              jax.random.fold_in(step_key, global_step),
                              lr, drop)
        m = jax.device_get(m)
        dt = time.perf_counter() - t0
        if first_step_s is None:
          first_step_s = dt
        else:
          step_times.append(dt)
        if not bool(m["finite"]):
          nonfinite += 1
          if nonfinite > cfg["max_nonfinite"]:
            raise RuntimeError(
                f"training diverged: {nonfinite} steps with a non-finite loss "
                f"or gradient (max_nonfinite={cfg['max_nonfinite']}), last at "
                f"epoch {epoch + 1} step {step}; lower lr (now "
                f"{float(lr):.4g}) or raise grad clipping")
          continue
        loss_sum += float(m["loss"]) * cfg["batch_size"]
        correct_sum += float(m["correct"])
        seen += cfg["batch_size"]
    entry = {
        "epoch": epoch + 1,
        "lr": float(lr),
        "drop_prob": float(drop),
        "train_loss": loss_sum / seen if seen else float("nan"),
        "train_acc": 100.0 * correct_sum / seen if seen else float("nan"),
        "valid_loss": None,
        "valid_acc": None,
    }
    if valid_split is not None:
      entry["valid_loss"], entry["valid_acc"] = evaluate(
          eval_step, state, dataset, valid_split, cfg["eval_batch_size"],
          cfg["prefetch"])
    entry["seconds"] = time.perf_counter() - t_epoch
    curve.append(entry)
    if ckpt is not None:
      ckpt.save(epoch + 1, {"train": state},
                {"epoch": epoch + 1, "curve": _json_safe(curve),
                 "nonfinite": nonfinite})
    if progress is not None:
      progress(epoch + 1, dict(entry))

  test_loss = test_acc = None
  if cfg["eval_test"] and dataset.size("test") > 0:
    test_loss, test_acc = evaluate(eval_step, state, dataset, "test",
                                   cfg["eval_batch_size"], cfg["prefetch"])
  return {
      "curve": _json_safe(curve),
      "test_acc": test_acc,
      "test_loss": test_loss,
      "params": num_params,
      "nonfinite_steps": nonfinite,
      "steps_per_epoch": steps_per_epoch,
      "step_s": float(np.median(step_times)) if step_times else None,
      "first_step_s": first_step_s,
      "seconds": time.perf_counter() - t_call,
  }


def _json_safe(curve):
  """NaN -> None so the curve is valid JSON."""
  return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
           for k, v in e.items()} for e in curve]
