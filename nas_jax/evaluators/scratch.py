"""Evaluator that trains every architecture from scratch for a few epochs.

The search score of an architecture is its validation accuracy (%) after the
last epoch of a short training run (``nas_jax.train.train_child``); the cost
is the wall-clock time of that run. ``info`` carries the per-epoch learning
curve (``curve``: epoch, train/valid loss and accuracy, seconds), which the
learning-curve predictors (Baker et al. 2018) read to extrapolate or stop
early. The validation split is carved from the training split; the test split
is not touched (``eval_test`` is off unless asked for).

Config (flat dict): ``dataset`` (a name for ``nas_jax.data.load_dataset`` or
an ``ImageDataset``; default ``"digits"``), ``data_dir``, ``valid_fraction``,
``valid_size``, ``train_size``, ``test_size``, ``split_seed``, ``workdir``
(per-architecture checkpoints, so an interrupted evaluation resumes), and any
``nas_jax.train.DEFAULT_CONFIG`` key; the defaults below are small search-time
settings.

Example:
    >>> evaluator = ScratchEvaluator(space, {"dataset": "digits", "epochs": 3})
    >>> result, _ = evaluator.evaluate(evaluator.init(key), archs, key)
    >>> result.info[0]["curve"][-1]["valid_acc"] == result.scores[0]
    True
"""
from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import time
from typing import Any

import jax
import numpy as np

from nas_jax import train as train_lib
from nas_jax.data import images as data_lib
from nas_jax.evaluators.base import Evaluation, Evaluator

log = logging.getLogger(__name__)

# Short search-time training (ENAS/NAO-style proxies are a few epochs of a
# small network); overridable by any train_lib.DEFAULT_CONFIG key.
SEARCH_TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 4,
    "batch_size": 64,
    "init_channels": 8,
    "layers": 3,
    "lr": 0.05,
    "eval_test": False,
}

_DATA_KEYS = {"dataset": "digits", "data_dir": None, "valid_fraction": 0.1,
              "valid_size": None, "train_size": None, "test_size": None,
              "split_seed": 0}


class ScratchEvaluator(Evaluator):
  """Scores architectures by training each from scratch (learning curves).

  Args:
    space: the search space.
    config: see the module docstring.
  """

  name = "scratch"

  def __init__(self, space, config: dict[str, Any] | None = None):
    super().__init__(space, config)
    cfg = dict(self.config)
    unknown = sorted(set(cfg) - set(_DATA_KEYS) - {"workdir"} -
                     set(train_lib.DEFAULT_CONFIG))
    if unknown:
      raise ValueError(f"unknown scratch evaluator config keys {unknown}; "
                       f"known: {sorted(set(_DATA_KEYS) | {'workdir'} | set(train_lib.DEFAULT_CONFIG))}")
    self.data_config = {k: cfg.get(k, v) for k, v in _DATA_KEYS.items()}
    train_cfg = dict(SEARCH_TRAIN_DEFAULTS)
    train_cfg.update({k: v for k, v in cfg.items()
                      if k in train_lib.DEFAULT_CONFIG})
    self.train_config = train_lib.resolve_config(train_cfg)
    if self.train_config["valid_split"] is None:
      raise ValueError("the scratch evaluator scores on valid_split; it "
                       "cannot be None")
    self.workdir = cfg.get("workdir")
    self._dataset = None

  @property
  def dataset(self) -> data_lib.ImageDataset:
    """The dataset, loaded on first use."""
    if self._dataset is None:
      d = self.data_config
      self._dataset = data_lib.as_dataset(
          d["dataset"], data_dir=d["data_dir"],
          valid_fraction=d["valid_fraction"], valid_size=d["valid_size"],
          train_size=d["train_size"], test_size=d["test_size"],
          seed=d["split_seed"])
      if self._dataset.size(self.train_config["valid_split"]) == 0:
        raise ValueError(f"dataset {self._dataset.name!r} has an empty "
                         f"{self.train_config['valid_split']!r} split; the "
                         "scratch evaluator needs one (raise valid_fraction)")
    return self._dataset

  def _arch_workdir(self, arch, key) -> pathlib.Path | None:
    if self.workdir is None:
      return None
    ds = self.dataset
    text = json.dumps([self.space.arch_id(arch),
                       np.asarray(jax.random.key_data(key)).tolist(),
                       self.train_config, ds.name,
                       {s: len(y) for s, y in ds.labels.items()}],
                      sort_keys=True, default=str)
    return pathlib.Path(self.workdir) / hashlib.sha1(text.encode()).hexdigest()[:16]

  def evaluate(self, state: Any, archs: np.ndarray,
               key: jax.Array) -> tuple[Evaluation, Any]:
    """Trains each of ``archs`` (int32 ``[K, *arch_shape]``) from scratch.

    Architecture ``i`` is trained with ``fold_in(key, i)``. A run that
    diverges (``RuntimeError`` from ``train_child``) scores 0 and its
    ``info`` carries ``error``.

    Returns:
      ``(Evaluation, state)``: scores = last-epoch validation accuracy (%),
      costs = seconds of training, info = ``curve``, ``params``,
      ``arch_id``, ``step_s``.
    """
    archs = np.asarray(archs)
    if archs.shape[1:] != tuple(self.space.arch_shape):
      raise ValueError(f"archs must have shape [K, {self.space.arch_shape}], "
                       f"got {archs.shape}")
    dataset = self.dataset
    scores, costs, infos = [], [], []
    for i, arch in enumerate(archs):
      arch = self.space.validate(arch)
      arch_key = jax.random.fold_in(key, i)
      t0 = time.perf_counter()
      info: dict[str, Any] = {"arch_id": self.space.arch_id(arch)}
      try:
        result = train_lib.train_child(
            self.space, arch, dataset, self.train_config, arch_key,
            workdir=self._arch_workdir(arch, arch_key))
      except RuntimeError as e:
        log.warning("architecture %s diverged: %s", info["arch_id"], e)
        info["error"] = str(e)
        scores.append(0.0)
      else:
        scores.append(float(result["curve"][-1]["valid_acc"]))
        info.update(curve=result["curve"], params=result["params"],
                    step_s=result["step_s"],
                    nonfinite_steps=result["nonfinite_steps"])
        if result["test_acc"] is not None:
          info["short_run_test_acc"] = result["test_acc"]
      costs.append(time.perf_counter() - t0)
      infos.append(info)
    return Evaluation(scores=np.asarray(scores, np.float64),
                      costs=np.asarray(costs, np.float64), info=infos), state
