"""Evaluator that trains every architecture from scratch for a few epochs.

The search score of an architecture is its task's score of the validation
metric after the last epoch of a short training run
(``nas_jax.train.train_child``): the validation accuracy (%) for images,
``80 / perplexity`` for language models (``nas_jax.tasks``); the raw metric is
kept in ``info["metrics"]`` and so in the history. The cost is the wall-clock
time of that run. ``info`` carries the per-epoch learning curve (``curve``:
epoch, training and validation loss and metric, seconds), which reaches
``history.jsonl`` and which the learning-curve predictors (Baker et al. 2018)
read to extrapolate or stop early: ``callbacks`` (``train_child``'s, built per
architecture by ``make_callbacks(arch_id)``) can stop a run, and the history
line then says why (``stopped``). The validation split is carved from the
training split; the test split is not touched (``eval_test`` is off).

Early stopping (Baker et al. 2018; ``nas_jax.predictors.learning_curves``):
``early_stop`` in the config (``True``, or a dict of ``EarlyStopper``
settings: ``delta``, ``min_curves``, ``refit_every``, ``min_epoch``,
``model``; the CLI's ``--early-stop``; ``early_stop_settings`` holds defaults
that apply once it is on) stops a run when its predicted final
validation metric will probably not beat the best completed run; with
``rule: "hyperband"`` (or ``"sha"``) runs are instead stopped at
successive-halving rungs when their predicted final value (or, with
``predict: false``, their value there; ``rank_by: "train"``: the epoch's
training value, e.g. ``train_acc``) is not in the top ``1 / eta`` of the
runs seen there (``nas_jax.predictors.hyperband``). A stopped
run's history line says so (``stopped``: epoch, reason and the ``predicted``
final value); its search score is that of its last trained epoch. On resume
the stopper re-learns from the history (``observe_history``) and a run
resumed mid-training replays its restored epochs, so decisions are those of
an uninterrupted search.

Config (flat dict): ``dataset`` (a dataset spec, e.g. ``"digits"`` or
``"ptb"``, or loaded data; default ``"digits"``), ``data_dir``, for images
``valid_fraction``, ``valid_size``, ``train_size``, ``test_size``,
``split_seed``; ``workdir`` (per-architecture checkpoints, so an interrupted
evaluation resumes), and any key of the task's training config (images:
``nas_jax.tasks.images.DEFAULT_CONFIG``); the defaults below are small
search-time settings. The runner passes its loaded data and a workdir.

Example:
    A two-node recurrent cell on a toy corpus (images work the same way, e.g.
    ``ScratchEvaluator(get_space("nb201"), {"dataset": "digits", "epochs": 1,
    "init_channels": 4, "layers": 1})``, but compiling an image network's train
    step takes 15-30 s of CPU):

    >>> import os
    >>> os.makedirs("ptb")
    >>> for split in ("train", "valid", "test"):  # a toy corpus in Penn Treebank's layout
    ...   with open(f"ptb/ptb.{split}.txt", "w") as f:
    ...     _ = f.write(" the cat sat on the mat \\n the dog sat on the cat \\n" * 8)
    >>> from nas_jax.spaces.rnn import RNNSpace
    >>> from nas_jax.tasks import get_task
    >>> data = get_task("language_model").load("ptb", data_dir="ptb")
    >>> evaluator = ScratchEvaluator(RNNSpace(num_nodes=2), {"epochs": 1, "batch_size": 4, "eval_batch_size": 4,
    ...                                                      "bptt": 5, "emb_size": 8, "hidden_size": 8},
    ...                              data=data)
    >>> result, _ = evaluator.evaluate(evaluator.init(jax.random.key(0)), np.array([[[0, 2], [0, 1]]]),
    ...                                jax.random.key(1))
    >>> curve = result.info[0]["curve"]  # one entry per epoch
    >>> len(curve), curve[-1]["valid_ppl"] == result.info[0]["metrics"]["valid_ppl"]
    (1, True)
    >>> bool(result.scores[0] == 80.0 / curve[-1]["valid_ppl"])  # the search score: 80 / perplexity
    True
"""
from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from nas_jax import tasks as tasks_lib
from nas_jax import train as train_lib
from nas_jax.evaluators.base import Evaluation, Evaluator

log = logging.getLogger(__name__)

# Short search-time training per task (ENAS/NAO-style proxies are a few
# epochs of a small network); overridable by any key of the task's config.
SEARCH_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "images": {"epochs": 4, "batch_size": 64, "init_channels": 8, "layers": 3, "lr": 0.05,
               "eval_test": False},
    "language_model": {"epochs": 1, "eval_test": False},
}

_DATA_KEYS = {"dataset": "digits", "data_dir": None}
_IMAGE_DATA_KEYS = {"valid_fraction": 0.1, "valid_size": None, "train_size": None,
                    "test_size": None, "split_seed": 0}


class ScratchEvaluator(Evaluator):
  """Scores architectures by training each from scratch (learning curves).

  Args:
    space: the search space.
    config: see the module docstring.
    data: the task's loaded data (overrides ``config["dataset"]``).
    workdir: directory for per-architecture checkpoints.
    make_callbacks: ``make_callbacks(arch_id) -> [callback, ...]`` for each
      training run (``train_child``'s ``callbacks``), e.g. early stopping.
  """

  name = "scratch"
  needs = ("data", "workdir")
  replayable = True  # state-free; a run is a function of (arch, key)

  def __init__(self, space, config: dict[str, Any] | None = None, *, data: Any = None,
               workdir: str | None = None,
               make_callbacks: Callable[[str], Sequence[Callable]] | None = None):
    config = dict(config or {})
    if data is not None:  # the runner's loaded data (overrides a dataset name)
      config["dataset"] = data
    if workdir is not None:
      config.setdefault("workdir", workdir)
    super().__init__(space, config)
    cfg = dict(self.config)
    dataset = cfg.get("dataset", _DATA_KEYS["dataset"])
    self.task = (tasks_lib.task_for_dataset(dataset) if isinstance(dataset, str)
                 else tasks_lib.task_of(dataset))
    data_keys = dict(_DATA_KEYS, **(_IMAGE_DATA_KEYS if self.task.name == "images" else {}))
    train_keys = set(self.task.default_train_config())
    early_stop = cfg.pop("early_stop", False)
    early_stop_settings = cfg.pop("early_stop_settings", None)
    unknown = sorted(set(cfg) - set(data_keys) - {"workdir"} - train_keys)
    if unknown:
      raise ValueError(f"unknown scratch evaluator config keys {unknown}; "
                       f"known: {sorted(set(data_keys) | {'workdir'} | train_keys)}")
    self.data_config = {k: cfg.get(k, v) for k, v in data_keys.items()}
    train_cfg = dict(SEARCH_TRAIN_DEFAULTS.get(self.task.name, {}))
    train_cfg.update({k: v for k, v in cfg.items() if k in train_keys})
    self.train_config = self.task.resolve_train_config(train_cfg)
    if self.train_config["valid_split"] is None:
      raise ValueError("the scratch evaluator scores on valid_split; it cannot be None")
    self.workdir = cfg.get("workdir")
    self.stopper = self._make_stopper(early_stop, early_stop_settings)
    if make_callbacks is None and self.stopper is not None:
      make_callbacks = self.stopper.make_callbacks()
    self.make_callbacks = make_callbacks
    self._dataset = None

  def _make_stopper(self, early_stop: Any, settings: Any = None):
    """The stopper of the ``early_stop`` setting (None when off).

    ``settings`` (``early_stop_settings``) are defaults under a dict
    ``early_stop``: a config file keeps them there, and ``--early-stop`` (which
    sets ``early_stop``) turns them on. ``rule`` picks the stopper:
    ``"baker"`` (default: ``EarlyStopper``, Baker et al.'s probability rule)
    or ``"hyperband"`` / ``"sha"`` (``nas_jax.predictors.hyperband``:
    successive-halving rungs ranked by predicted final values, or by the values
    there with ``predict: false``, the training values with ``rank_by: "train"``);
    ``hyperband.make_stopper`` builds it.
    """
    if settings is not None and not isinstance(settings, dict):
      raise ValueError(f"early_stop_settings must be a dict of stopper settings, got {settings!r}")
    if early_stop is False or early_stop is None:
      return None
    if early_stop is True:
      early_stop = {}
    if not isinstance(early_stop, dict):
      raise ValueError(f"early_stop must be true, false or a dict of EarlyStopper settings, "
                       f"got {early_stop!r}")
    early_stop = {**(settings or {}), **early_stop}
    if self.train_config["epochs"] < 2:
      raise ValueError(f"early_stop needs runs of at least 2 epochs; epochs is "
                       f"{self.train_config['epochs']}")
    from nas_jax.predictors import hyperband  # pylint: disable=import-outside-toplevel
    return hyperband.make_stopper(self.task, self.train_config["epochs"], early_stop)

  def observe_history(self, records: Sequence[dict[str, Any]]) -> None:
    """Feeds the completed runs of a resumed search's history to the early stopper.

    Args:
      records: history lines in order (their ``curve``; stopped or failed runs
        are skipped, as the stopper never observed them).
    """
    if self.stopper is None:
      return
    if hasattr(self.stopper, "replay"):  # successive halving: every run's curve rebuilds the rungs
      self.stopper.replay(records)
      return
    metric = self.stopper.metric
    for r in records:
      curve = r.get("curve") or []
      if r.get("stopped") or r.get("error") or len(curve) != self.stopper.epochs:
        continue
      values = [c.get(metric) for c in curve]
      self.stopper.observe([np.nan if v is None else float(v) for v in values])

  def prepare(self) -> None:
    """Loads and checks the data (split sizes against the batch size)."""
    _ = self.dataset

  @property
  def dataset(self) -> Any:
    """The data, loaded on first use."""
    if self._dataset is None:
      d = dict(self.data_config)
      spec, data_dir = d.pop("dataset"), d.pop("data_dir")
      if isinstance(spec, str):
        if "split_seed" in d:
          d["seed"] = d.pop("split_seed")
        self._dataset = self.task.load(spec, data_dir=data_dir, **d)
      else:
        self._dataset = spec
      split = self.train_config["valid_split"]
      if not self.task.has_split(self._dataset, split):
        raise ValueError(f"dataset {self.task.describe(self._dataset).get('name')!r} has an empty "
                         f"{split!r} split; the scratch evaluator needs one (raise valid_fraction)")
    return self._dataset

  def _arch_workdir(self, arch, key) -> pathlib.Path | None:
    if self.workdir is None:
      return None
    text = json.dumps([self.space.arch_id(arch),
                       np.asarray(jax.random.key_data(key)).tolist(),
                       self.train_config, self.task.describe(self.dataset)],
                      sort_keys=True, default=str)
    return pathlib.Path(self.workdir) / hashlib.sha1(text.encode()).hexdigest()[:16]

  def evaluate(self, state: Any, archs: np.ndarray,
               key: jax.Array) -> tuple[Evaluation, Any]:
    """Trains each of ``archs`` (int32 ``[K, *arch_shape]``) from scratch.

    Architecture ``i`` is trained with ``fold_in(key, i)``. A run that
    diverges (``RuntimeError`` from ``train_child``) scores 0 and its
    ``info`` carries ``error``.

    Returns:
      ``(Evaluation, state)``: scores = the task's score of the last
      epoch's validation metric, costs = seconds of training, info =
      ``curve``, ``metrics`` (the raw validation metric), ``stopped``,
      ``params``, ``arch_id``, ``step_s``.
    """
    archs = np.asarray(archs)
    if archs.shape[1:] != tuple(self.space.arch_shape):
      raise ValueError(f"archs must have shape [K, {self.space.arch_shape}], "
                       f"got {archs.shape}")
    dataset = self.dataset
    metric = self.task.metric
    scores, costs, infos = [], [], []
    for i, arch in enumerate(archs):
      arch = self.space.validate(arch)
      arch_key = jax.random.fold_in(key, i)
      t0 = time.perf_counter()
      info: dict[str, Any] = {"arch_id": self.space.arch_id(arch)}
      callbacks = list(self.make_callbacks(info["arch_id"])) if self.make_callbacks else []
      try:
        result = train_lib.train_child(
            self.space, arch, dataset, self.train_config, arch_key,
            workdir=self._arch_workdir(arch, arch_key), callbacks=callbacks)
      except RuntimeError as e:
        log.warning("architecture %s diverged: %s", info["arch_id"], e)
        info["error"] = str(e)
        scores.append(0.0)
      else:
        value = result["curve"][-1][metric]
        scores.append(float("nan") if value is None else self.task.score(value))
        info.update(curve=result["curve"], metrics={metric: value}, params=result["params"],
                    step_s=result["step_s"], nonfinite_steps=result["nonfinite_steps"])
        if result["stopped"] is not None:
          info["stopped"] = dict(result["stopped"])
          decision = self.stopper.records.get(info["arch_id"]) if self.stopper else None
          if decision is not None:
            extra = dict(predicted=decision.predicted, predicted_std=decision.std,
                         prob_beats_best=decision.prob)
            info["stopped"].update({k: v for k, v in extra.items() if v is not None})
      costs.append(time.perf_counter() - t0)
      infos.append(info)
    return Evaluation(scores=np.asarray(scores, np.float64),
                      costs=np.asarray(costs, np.float64), info=infos), state
