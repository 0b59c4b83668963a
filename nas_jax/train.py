"""Training a child network from scratch: learning curves, stopping, warm starts, resume.

``train_child(space, arch, data, config, key)`` builds the fixed child
network of ``arch`` (``nas_jax.networks.build_child``) and trains it for
``config["epochs"]`` epochs on the data of any task (``nas_jax.tasks``: image
classification, language modelling): the task runs each epoch and evaluates a
split; this module owns what is common to every task:

* the **learning curve**: one dict per epoch (the task's training metrics,
  the validation loss and metric, seconds);
* **callbacks** ``callback(epoch, entry) -> None | reason`` called after each
  epoch: a callback that returns a reason (a string) stops the run there, and
  the result records ``stopped = {"epoch": e, "reason": reason}`` (early
  stopping by learning-curve prediction, budgets);
* **warm starts**: ``warm_start=parent_variables`` starts from a parent's
  variables mapped into the child's by ``transfer(parent, child_init)``
  (default ``transfer_variables``: every leaf whose path exists in both is
  copied, shapes must match), e.g. a grown child that keeps its parent's
  function (``nas_jax.networks.nb201.grow_variables``);
* **resume**: with ``workdir``, the training state, the curve so far and the
  stop record are checkpointed atomically with orbax after every epoch, and a
  second call with the same arguments resumes from the last complete epoch.
  Batches and per-step keys are functions of ``(seed, epoch, step)``, so a
  resumed run reproduces the uninterrupted run's curve and test metric exactly
  (on CPU bit for bit).

The image task's training recipe (``DEFAULT_CONFIG``, ``resolve_config``,
``cosine_lr``, ``get_steps``, ...) lives in ``nas_jax.tasks.images`` and is
re-exported here.

Example:
    A two-node recurrent cell on a toy corpus (an image network trains the same
    way, e.g. ``train_child(get_space("nb201"), [3, 1, 2, 0, 4, 3],
    load_dataset("digits"), {"epochs": 1, "init_channels": 4, "layers": 1},
    key)``, but compiling its train step takes 15-30 s of CPU):

    >>> import os
    >>> os.makedirs("ptb")
    >>> for split in ("train", "valid", "test"):  # a toy corpus in Penn Treebank's layout
    ...   with open(f"ptb/ptb.{split}.txt", "w") as f:
    ...     _ = f.write(" the cat sat on the mat \\n the dog sat on the cat \\n" * 8)
    >>> from nas_jax.spaces.rnn import RNNSpace
    >>> from nas_jax.tasks import get_task
    >>> data = get_task("language_model").load("ptb", data_dir="ptb")
    >>> space = RNNSpace(num_nodes=2)
    >>> config = {"epochs": 3, "batch_size": 4, "eval_batch_size": 4, "bptt": 5, "emb_size": 8,
    ...           "hidden_size": 8}
    >>> stop_at_1 = lambda epoch, entry: "enough" if epoch >= 1 else None
    >>> result = train_child(space, [[0, 2], [0, 1]], data, config, jax.random.key(0),
    ...                      callbacks=[stop_at_1])
    >>> len(result["curve"]), result["stopped"], result["steps_per_epoch"]
    (1, {'epoch': 1, 'reason': 'enough'}, 5)
    >>> sorted(result["curve"][0])
    ['epoch', 'lr', 'seconds', 'train_loss', 'train_ppl', 'valid_loss', 'valid_ppl']
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import tasks as tasks_lib
from nas_jax.tasks.images import (  # noqa: F401  (the image recipe, re-exported)
    DEFAULT_CONFIG, PAPER_CONFIG, cosine_lr, drop_prob_at, evaluate, get_steps, init_variables,
    make_optimizer, make_steps, resolve_config)

Callback = Callable[[int, dict[str, Any]], "str | None"]


def _seed_from_key(key) -> int:
  data = np.asarray(jax.random.key_data(key)).ravel()
  return int(np.uint64(data[-1]) | (np.uint64(data[0]) << np.uint64(32))) % (2**63)


def _tree_digest(tree: Any) -> str:
  """A short hash of a pytree's structure, shapes, dtypes and values."""
  h = hashlib.sha256()
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  h.update(str(treedef).encode())
  for path, leaf in leaves:
    a = np.asarray(leaf)
    h.update(f"{jax.tree_util.keystr(path)}{a.dtype}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()[:16]


def _fingerprint(space, arch, description, cfg, key, model, warm) -> str:
  record = {
      "space": getattr(space, "name", None),
      "arch": None if arch is None else np.asarray(arch).tolist(),
      "model": None if model is None else repr(model)[:2000],
      "dataset": description,
      "config": {k: v for k, v in cfg.items() if k not in ("prefetch", "max_nonfinite")},
      "key": np.asarray(jax.random.key_data(key)).tolist(),
  }
  if warm is not None:
    record["warm_start"] = warm
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


def _paths(tree: Any) -> dict[str, Any]:
  return {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def transfer_variables(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
  """The default warm-start map: ``child`` with every leaf the parent also has copied.

  A leaf is copied when its path (collection, module names, parameter name)
  exists in both trees; leaves only in the child keep their initial values,
  leaves only in the parent are dropped.

  Args:
    parent: the parent's variables (``{"params": ..., "batch_stats": ...}``).
    child: the child's freshly initialised variables.

  Returns:
    Variables of the child's structure.

  Raises:
    ValueError: a shared path whose shapes differ (the message names the
      path and both shapes, and says to pass a ``transfer`` function).

  Example:
    >>> parent = {"params": {"w": np.ones((2, 2)), "old": np.ones(3)}}
    >>> child = {"params": {"w": np.zeros((2, 2)), "new": np.zeros(1)}}
    >>> out = transfer_variables(parent, child)
    >>> float(out["params"]["w"].sum()), float(out["params"]["new"].sum())
    (4.0, 0.0)
  """
  src = _paths(parent)

  def pick(path, leaf):
    name = jax.tree_util.keystr(path)
    if name not in src:
      return leaf
    value = src[name]
    if np.shape(value) != np.shape(leaf):
      raise ValueError(f"warm start: {name} has shape {tuple(np.shape(value))} in the parent and "
                       f"{tuple(np.shape(leaf))} in the child; pass train_child(transfer=fn) that "
                       "maps the parent's variables into the child's")
    return jnp.asarray(value, dtype=jnp.asarray(leaf).dtype)

  return jax.tree_util.tree_map_with_path(pick, child)


def _check_same_structure(got: Any, want: Any) -> None:
  """Raises ValueError naming the first path where ``got`` does not fit ``want``."""
  g, w = _paths(got), _paths(want)
  missing, extra = sorted(set(w) - set(g)), sorted(set(g) - set(w))
  if missing or extra:
    raise ValueError(f"warm start: the transferred variables do not fit the child "
                     f"(missing {missing[:3]}, unexpected {extra[:3]}); the transfer function must "
                     "return the child's variable structure")
  for name, leaf in w.items():
    if np.shape(g[name]) != np.shape(leaf):
      raise ValueError(f"warm start: {name} has shape {tuple(np.shape(g[name]))} after the transfer "
                       f"but the child needs {tuple(np.shape(leaf))}; fix the transfer function")


def train_child(space, arch, dataset: Any, config: dict[str, Any] | None, key, *,
                workdir: str | os.PathLike | None = None,
                progress: Callable[[int, dict[str, Any]], None] | None = None,
                model=None, callbacks: Sequence[Callback] = (),
                warm_start: dict[str, Any] | None = None,
                transfer: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None,
                return_variables: bool = False) -> dict[str, Any]:
  """Trains the child network of ``arch`` (from scratch or warm-started).

  Args:
    space: the ``SearchSpace`` of ``arch`` (may be None when ``model`` is given).
    arch: int32 architecture array (may be None when ``model`` is given).
    dataset: the task's data (``nas_jax.tasks``: an ``ImageDataset``, a
      language-model corpus); the task is the one that accepts it.
    config: overrides of the task's training defaults
      (``nas_jax.tasks.images.DEFAULT_CONFIG`` for images).
    key: ``jax.random.key`` (or an int seed): initialisation, drop-path and,
      unless ``config["data_seed"]`` is set, the data order.
    workdir: checkpoint directory; a second call with the same arguments
      resumes from the last complete epoch. A checkpoint of another run
      (different arch, config, dataset, key or warm start) raises ``ValueError``.
    progress: ``callable(epoch, metrics)`` called after each epoch (1-based
      epoch, the curve entry); for progress bars.
    model: a flax module with the task's ``build_child`` contract to train
      instead of ``build_child(space, arch, ...)`` (tests, custom networks).
    callbacks: ``callback(epoch, entry) -> None | str`` after each epoch; the
      first that returns a reason stops the run there (the decision is
      checkpointed with the epoch, then ``progress`` is called). A resumed
      run first replays its restored epochs to the callbacks (their answers
      are ignored: those decisions were checkpointed), so a stateful
      callback, e.g. an early stopper, sees the whole curve.
    warm_start: a parent's variables to start from instead of the
      initialisation (mapped by ``transfer``).
    transfer: ``transfer(parent_variables, child_init) -> child_variables``;
      default ``transfer_variables``. Its result must have the child's
      structure and shapes.
    return_variables: also return the trained ``variables``.

  Returns:
    dict with ``curve`` (per epoch: ``epoch``, the task's training entries
    such as ``lr``, ``train_loss``, ``train_acc``; ``valid_loss`` and the
    task's validation metric, e.g. ``valid_acc`` in %; ``seconds``),
    ``metric`` (the task's metric name), ``test_<metric>`` and ``test_loss``
    (None when ``eval_test`` is False or the run was stopped), ``stopped``
    (None or ``{"epoch", "reason"}``), ``params`` (parameter count),
    ``nonfinite_steps``, ``steps_per_epoch``, ``step_s`` (median train-step
    time of this call, compile excluded), ``first_step_s`` (first step of
    this call, compile included), ``seconds`` (this call's wall time), and
    ``variables`` when asked.

  Raises:
    ValueError: bad config, data too small for the batch size, a warm start
      that does not fit, foreign or unreadable checkpoint.
    RuntimeError: more than ``max_nonfinite`` non-finite training steps.
  """
  t_call = time.perf_counter()
  task = tasks_lib.task_of(dataset)
  cfg = task.resolve_train_config(config)
  key = _as_key(key)
  for cb in callbacks:
    if not callable(cb):
      raise ValueError(f"callbacks must be callables (epoch, entry) -> None | reason, got {cb!r}")
  if model is None:
    if space is None or arch is None:
      raise ValueError("train_child needs (space, arch) or model=")
    from nas_jax import networks  # pylint: disable=g-import-not-at-top
    arch = space.validate(arch)
    model = networks.build_child(space, arch, **task.network_kwargs(dataset),
                                 **task.network_config(cfg))
  steps_per_epoch = task.num_train_steps(dataset, cfg)
  if steps_per_epoch == 0:
    raise ValueError(f"split {cfg['train_split']!r} of {task.describe(dataset).get('name')!r} holds "
                     f"fewer than batch_size {cfg['batch_size']} examples; lower batch_size")
  valid_split = cfg["valid_split"] if task.has_split(dataset, cfg["valid_split"]) else None
  data_seed = (_seed_from_key(jax.random.fold_in(key, 2))
               if cfg["data_seed"] is None else int(cfg["data_seed"]))

  init_key, step_key = jax.random.split(key)
  variables = task.init_variables(model, init_key, dataset)
  warm = None
  if warm_start is not None:
    if not isinstance(warm_start, dict):
      raise ValueError(f"warm_start must be a dict of variable collections, got "
                       f"{type(warm_start).__name__}")
    moved = (transfer or transfer_variables)(warm_start, variables)
    _check_same_structure(moved, variables)
    # Own copies: the train step donates its state, which must not delete the parent's arrays.
    variables = jax.tree.map(lambda a, ref: jnp.array(a, dtype=jnp.asarray(ref).dtype, copy=True),
                             moved, variables)
    warm = {"parent": _tree_digest(warm_start),
            "transfer": getattr(transfer, "__qualname__", repr(transfer)) if transfer else "default"}
  state = task.init_state(model, variables, cfg)
  num_params = int(sum(np.size(p) for p in jax.tree.leaves(variables["params"])))
  curve: list[dict[str, Any]] = []
  nonfinite = 0
  start_epoch = 0
  stopped = None

  ckpt = None
  if workdir is not None:
    from nas_jax.checkpoint import SearchCheckpointer  # pylint: disable=g-import-not-at-top
    fingerprint = _fingerprint(space, arch, task.describe(dataset), cfg, key,
                               model if arch is None else None, warm)
    ckpt = SearchCheckpointer(pathlib.Path(workdir) / "checkpoints",
                              fingerprint=fingerprint, keep=2)
    restored = ckpt.restore({"train": state})
    if restored is not None:
      trees, meta = restored
      state = jax.tree.map(jnp.asarray, trees["train"])
      start_epoch = int(meta["epoch"])
      curve = list(meta["curve"])
      nonfinite = int(meta["nonfinite"])
      stopped = meta.get("stopped")
      for entry in curve:  # replay: the callbacks see the whole curve (answers already taken)
        for cb in callbacks:
          cb(int(entry["epoch"]), dict(entry))

  metric_key = task.metric.split("_", 1)[1]  # "valid_acc" -> "acc"
  step_times: list[float] = []
  for epoch in range(start_epoch, cfg["epochs"]):
    if stopped is not None:
      break
    t_epoch = time.perf_counter()
    state, m = task.train_epoch(model, state, dataset, cfg, epoch, step_key, data_seed,
                                nonfinite_before=nonfinite)
    nonfinite += int(m.pop("nonfinite"))
    step_times += list(m.pop("step_times"))
    entry = {"epoch": epoch + 1, **m, "valid_loss": None, task.metric: None}
    if valid_split is not None:
      v = task.evaluate(model, state, dataset, valid_split, cfg)
      entry["valid_loss"], entry[task.metric] = v["loss"], v[metric_key]
    entry["seconds"] = time.perf_counter() - t_epoch
    curve.append(entry)
    for cb in callbacks:
      reason = cb(epoch + 1, dict(entry))
      if reason is not None:
        stopped = {"epoch": epoch + 1, "reason": str(reason)}
        break
    if ckpt is not None:
      ckpt.save(epoch + 1, {"train": state},
                {"epoch": epoch + 1, "curve": _json_safe(curve),
                 "nonfinite": nonfinite, "stopped": stopped})
    if progress is not None:
      progress(epoch + 1, dict(entry))

  test_loss = test_metric = None
  if cfg["eval_test"] and stopped is None and task.has_split(dataset, "test"):
    t = task.evaluate(model, state, dataset, "test", cfg)
    test_loss, test_metric = t["loss"], t[metric_key]
  out = {
      "curve": _json_safe(curve),
      "metric": task.metric,
      f"test_{metric_key}": test_metric,
      "test_loss": test_loss,
      "stopped": stopped,
      "params": num_params,
      "nonfinite_steps": nonfinite,
      "steps_per_epoch": steps_per_epoch,
      "step_s": float(np.median(step_times[1:])) if len(step_times) > 1 else None,
      "first_step_s": step_times[0] if step_times else None,
      "seconds": time.perf_counter() - t_call,
  }
  if return_variables:
    out["variables"] = {k: state[k] for k in variables if k in state}
  return out


def _json_safe(curve):
  """NaN -> None so the curve is valid JSON."""
  return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
           for k, v in e.items()} for e in curve]
