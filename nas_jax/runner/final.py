"""Final training of a found architecture, and retraining from an arch file.

``final_training`` trains the best architecture of a search from scratch with
the config's ``final`` settings on the experiment's data (any task), with a
progress bar and per-epoch checkpoints (``workdir/final``), so an interrupted
final training resumes. ``retrain`` does the same for a ``best_arch.json``
(``experiments/train.py``) with the key of the search's final training, so with
the same seed, data and ``final`` settings it reproduces the search's
``final_test_acc``.

Example:
    >>> import json
    >>> from nas_jax import runner
    >>> from nas_jax.spaces import get_space
    >>> with open("best_arch.json", "w") as f:  # what a search writes
    ...   json.dump({"space": "nb201", "genotype": get_space("nb201").to_genotype([3, 1, 2, 0, 4, 3])}, f)
    >>> space, arch, record = load_arch_file("best_arch.json")
    >>> space.name, arch
    ('nb201', array([3, 1, 2, 0, 4, 3], dtype=int32))

  Retraining it (not run here: it compiles and trains a network, about 30 s
  even this small)::

    config = runner.merge(runner.default_config(), {
        "space": "nb201", "data": {"train_size": 64},
        "final": {"epochs": 1, "batch_size": 32, "init_channels": 4, "layers": 1}})
    out = retrain("best_arch.json", config, "retrain", quiet=True)
    out["final_test_acc"]  # also in retrain/retrain.json, with final_curve.png
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np

from nas_jax import registry
from nas_jax import tasks as tasks_lib
from nas_jax.runner import config as config_lib
from nas_jax.runner import report
from nas_jax.runner import workdir as workdir_lib

log = logging.getLogger("nas_jax.experiment")


def experiment_keys(seed: int):
  """(strategy, evaluator, search, final) keys of an experiment's seed."""
  return tuple(jax.random.split(jax.random.key(seed), 4))


def load_data(cfg: dict[str, Any]) -> Any:
  """The experiment's data: ``cfg["dataset"]`` loaded by its task (one fixed split)."""
  task = tasks_lib.task_for_dataset(cfg["dataset"])
  return task.load(cfg["dataset"], data_dir=cfg["data_dir"], **dict(cfg["data"]))


def check_final_config(cfg: dict[str, Any]) -> dict[str, Any]:
  """The resolved training config of ``cfg["final"]`` for the dataset's task.

  ``epochs = 0`` (no final training) resolves as one epoch: the network sizes
  still describe the deployed network (costs).

  Raises:
    ValueError: an unknown key or a bad value (one line).
  """
  final = dict(cfg["final"])
  if final.get("epochs") == 0:
    final["epochs"] = 1
  return tasks_lib.task_for_dataset(cfg["dataset"]).resolve_train_config(final)


def metric_of(result: dict[str, Any]) -> tuple[str, Any]:
  """``("test_acc", value)`` (images) or ``("test_ppl", value)`` (language models)."""
  name = "test_" + str(result.get("metric", "valid_acc")).split("_", 1)[1]
  return name, result.get(name)


def final_training(space, arch, cfg: dict[str, Any], key, workdir: pathlib.Path, data_fn,
                   quiet: bool, desc: str = "final training") -> dict[str, Any]:
  """Trains ``arch`` from scratch with ``nas_jax.train.train_child`` and ``cfg["final"]``.

  ``desc`` names the run in the progress bar and the log (the found cell's
  final training, or a reference trained the same way).
  """
  from nas_jax import train  # pylint: disable=import-outside-toplevel
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  final_cfg = check_final_config(cfg)
  dataset = data_fn()
  task = tasks_lib.task_of(dataset)
  bar = tqdm(total=final_cfg["epochs"], desc=desc, unit="epoch",
             disable=quiet, dynamic_ncols=True)
  best = [None]
  metric = task.metric

  def progress(epoch: int, metrics: dict[str, Any]) -> None:
    value = metrics.get(metric)
    if value is not None and (best[0] is None or
                              (value > best[0] if task.higher_is_better else value < best[0])):
      best[0] = value
    bar.update(epoch - bar.n)
    train_key = "train_" + metric.split("_", 1)[1]
    bar.set_postfix({train_key: f"{metrics.get(train_key, float('nan')):.1f}",
                     f"best_{metric}": "-" if best[0] is None else f"{best[0]:.1f}"})
    log.info("%s epoch %d: %s", desc, epoch,
             {k: v for k, v in metrics.items() if k != "epoch"})

  try:
    out = train.train_child(space, arch, dataset, dict(cfg["final"]), key,
                            workdir=str(workdir), progress=progress)
  except RuntimeError as e:
    if "diverged" not in str(e):
      raise
    log.error("final training of %s: %s", space.arch_id(arch), e)
    raise ValueError(f"final training of {space.arch_id(arch)} stopped: {e}") from None
  finally:
    bar.close()
  if not isinstance(out, dict) or "test_acc" not in out and "test_ppl" not in out:
    raise ValueError("nas_jax.train.train_child must return a dict with 'test_acc' or 'test_ppl'")
  return out


def load_arch_file(path: str | os.PathLike) -> tuple[Any, np.ndarray, dict[str, Any]]:
  """Reads a ``best_arch.json`` (``{"space": ..., "space_options": ..., "genotype": ...}``).

  The space is rebuilt with the record's ``space_options`` (the search's
  constructor arguments, e.g. ``{"num_layers": 6}`` on ``macro``); a file
  without them (written before they existed) has the default space.

  Returns:
    ``(space, arch, record)``: the space instance, the validated int32
    architecture and the whole JSON record (``space_options`` filled in).

  Raises:
    ValueError: missing file, not JSON, missing fields, unknown space, bad
      space options or a genotype the space rejects; the message names the file.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"--arch file {path} does not exist; give a best_arch.json written by "
                     "experiments/run.py")
  try:
    record = json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"malformed --arch file {path}: not JSON ({e})") from None
  if not isinstance(record, dict) or not isinstance(record.get("space"), str) \
      or not isinstance(record.get("genotype"), dict):
    raise ValueError(f"malformed --arch file {path}: expected a JSON object with 'space' "
                     "(e.g. \"nasnet\") and 'genotype' (an object), as in best_arch.json")
  if record["space"] not in registry.SPACES:
    raise ValueError(f"malformed --arch file {path}: unknown space {record['space']!r}; "
                     f"known: {sorted(registry.SPACES)}")
  options = record.get("space_options")
  record = {**record, "space_options": {} if options is None else options}
  try:
    space = registry.get_space(record["space"], **record["space_options"])
  except (ValueError, TypeError) as e:  # TypeError: space_options not a dict
    raise ValueError(f"malformed --arch file {path}: bad space_options ({e})") from None
  try:
    arch = space.validate(space.from_genotype(record["genotype"]))
  except (ValueError, KeyError, TypeError, IndexError) as e:
    raise ValueError(f"malformed --arch file {path}: bad genotype ({e})") from None
  return space, arch, record


def _claim_retrain_workdir(workdir: pathlib.Path, what: dict[str, Any]) -> None:
  """Writes ``retrain_config.json``, or checks that the workdir holds this retraining.

  Raises:
    ValueError: the workdir is a file, holds another retraining (the message
      names the first differences), or is not empty and holds none.
  """
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f"--workdir {workdir} is a file; give a directory")
  marker = workdir / "retrain_config.json"
  if marker.is_file():
    try:
      saved = json.loads(marker.read_text())
    except ValueError:
      saved = None
    diffs = config_lib.diff(saved, what) if isinstance(saved, dict) else ["unreadable"]
    if diffs:
      raise ValueError(f"workdir {workdir} holds another retraining (differs in "
                       f"{'; '.join(diffs[:3])}); use another --workdir or the same settings")
    return
  if workdir.is_dir() and any(not p.name.startswith(".") for p in workdir.iterdir()):
    raise ValueError(f"workdir {workdir} is not empty and holds no retraining; use an empty or "
                     "new --workdir")
  workdir.mkdir(parents=True, exist_ok=True)
  workdir_lib.write_json(marker, what)


def retrain(arch_file: str | os.PathLike, config: dict[str, Any], workdir: str | os.PathLike,
            *, quiet: bool = False) -> dict[str, Any]:
  """Trains the architecture of ``arch_file`` from scratch with ``config["final"]``.

  Uses the same key as ``run_experiment``'s final training, so with the same
  seed, dataset and ``final`` settings it reproduces that run's
  ``final_test_acc``. Rerunning with the same workdir resumes (per epoch).

  Args:
    arch_file: a ``best_arch.json``.
    config: experiment config (``seed``, ``dataset``, ``data_dir``, ``data``,
      ``final``); the space and its options are the arch file's.
    workdir: output directory (``retrain.json``, ``final_curve.png``,
      checkpoints).
    quiet: no progress bar.

  Returns:
    dict with ``arch_id``, ``genotype``, ``final_test_acc`` (or
    ``final_test_ppl``), ``final_curve``, ``final_seconds`` (also written to
    ``workdir/retrain.json``).
  """
  cfg = config_lib.validate_config(config, search=False)
  if cfg["final"].get("epochs", 0) < 1:
    raise ValueError("final.epochs must be >= 1 to retrain (use --epochs N)")
  space, arch, record = load_arch_file(arch_file)  # the space as searched (its space_options)
  config_lib.check_task(space.name, cfg["dataset"])
  options = record["space_options"]
  if cfg["space_options"] not in ({}, options):
    raise ValueError(f"space_options {cfg['space_options']} differ from those of the arch file's space, "
                     f"{config_lib.space_label(record)}: the architecture is retrained in the space it "
                     "was found in; drop them")
  final_cfg = check_final_config(cfg)
  data = load_data(cfg)  # bad data fails before anything is written
  task = tasks_lib.task_of(data)
  if task.num_train_steps(data, final_cfg) < 1:
    raise ValueError(f"dataset {cfg['dataset']!r} holds fewer training examples than "
                     f"final.batch_size {final_cfg['batch_size']}; lower it")
  workdir = pathlib.Path(workdir).resolve()
  _claim_retrain_workdir(workdir, {"arch_id": space.arch_id(arch), "space": space.name,
                                   **({"space_options": options} if options else {}),
                                   **{k: cfg[k] for k in ("seed", "dataset", "data", "final")}})
  t0 = time.perf_counter()
  final = final_training(space, arch, cfg, experiment_keys(cfg["seed"])[3], workdir,
                         lambda: data, quiet)
  curve = report.clean_curve(final.get("curve"))
  name, value = metric_of(final)
  out = {"arch_file": str(pathlib.Path(arch_file).resolve()), "space": space.name,
         "space_options": options, "arch_id": space.arch_id(arch), "genotype": space.to_genotype(arch),
         "search_score": record.get("search_score"), "dataset": cfg["dataset"],
         "seed": cfg["seed"], "final": cfg["final"],
         f"final_{name}": None if value is None else float(value), "final_curve": curve,
         "final_nonfinite_steps": int(final.get("nonfinite_steps", 0)),
         "final_seconds": round(time.perf_counter() - t0, 3)}
  if curve:
    report.plot_curve(curve, workdir / "final_curve.png",
                      f"retraining: {name.replace('_', ' ')} {value:.2f}" if value is not None
                      else "retraining")
  workdir_lib.write_json(workdir / "retrain.json", out)
  return out
