"""The one generic search loop: space + strategy + evaluator -> history -> result.

``run_experiment(config, workdir)`` looks the space, strategy and evaluator up
in ``nas_jax.registry`` by name and runs::

    repeat until `budget` architectures are evaluated:
      archs  = strategy.ask(state, key_r)          # key_r = fold_in(key, round)
      scores = evaluator.evaluate(ev_state, archs)  # search scores only
      state  = strategy.tell(state, archs, scores)
      append one history line per arch; checkpoint
    best = argmax search_score
    final_test_acc = evaluator.report(best) (tabular)  or  train_child(best) (from scratch)

Workdir outputs:

=================  ==========================================================
config.json        the resolved config (names the experiment; a rerun with
                   another config is refused)
history.jsonl      one line per evaluated architecture: index, round, arch_id,
                   genotype, search_score, cost_s, wall_time_s
checkpoints/       orbax checkpoints of the whole search state (last 2)
best_arch.json     space + genotype of the best architecture (for
                   ``experiments/train.py --arch``)
result.json        best_genotype, best_search_score, final_test_acc,
                   final_curve, timings, non-finite counts
search.png         best search score vs evaluations
final_curve.png    final training curve (when trained from scratch)
run.log            the log
=================  ==========================================================

Resume: rerunning with the same workdir restores the newest checkpoint, cuts
``history.jsonl`` back to the lines that checkpoint covers and goes on; the
round keys are ``fold_in(key, round)``, so a run killed at any point (SIGKILL
included) and resumed writes the same history and result as an uninterrupted
one. Only the wall-clock fields (``WALL_CLOCK_FIELDS``) differ. Search-time
scores are called ``search_score`` everywhere; accuracies after final training
(or the benchmark's test accuracy) ``final_test_acc``.

Example:
    >>> from nas_jax.experiment import run_experiment, default_config
    >>> config = default_config()
    >>> config["strategy"] = {"name": "random"}
    >>> result = run_experiment(config, "runs/demo", quiet=True)
    >>> result["best_search_score"], result["final_test_acc"]
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np

from nas_jax import registry
from nas_jax.checkpoint import SearchCheckpointer

log = logging.getLogger("nas_jax.experiment")

#: Fields of history lines and result.json that hold wall-clock measurements
#: (``cost_s`` is one for evaluators that train; the tabular one simulates it)
#: or session counts; everything else is a deterministic function of the config.
WALL_CLOCK_FIELDS = ("wall_time_s", "cost_s", "search_cost_s", "setup_seconds",
                     "search_seconds", "final_seconds", "total_seconds", "seconds", "step_s",
                     "first_step_s", "resumed_sessions")
#: Top-level keys that do not change the results (left out of the fingerprint).
_NOT_FINGERPRINTED = ("data_dir", "checkpoint")
#: Spaces with a tabular benchmark: evaluator "auto" means "tabular" there;
#: elsewhere "auto" means the weight-sharing "supernet" (one compilation serves
#: every architecture; "scratch" compiles and trains a network per architecture,
#: minutes each on a CPU).
TABULAR_SPACES = ("nb201",)


def default_config() -> dict[str, Any]:
  """The library's built-in defaults (``experiments/configs/default.py`` refines them).

  Returns:
    A nested dict; see the module docstring of ``experiments/configs/default.py``
    for every field.
  """
  return {
      "seed": 0,
      "space": "nasnet",
      "dataset": "digits",
      "data_dir": None,
      "data": {},           # extra load_dataset arguments (valid_fraction, ...)
      "budget": 8,          # architectures evaluated during the search
      "strategy": {"name": "random"},
      # "auto": tabular on spaces with a table, else supernet. Per-evaluator
      # settings live under the evaluator's name.
      "evaluator": {"name": "auto"},
      "final": {"epochs": 10},
      "checkpoint": {"interval_s": 30.0, "keep": 2},
  }


def _is_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def resolve_evaluator_name(config: dict[str, Any]) -> str:
  """The evaluator ``config["evaluator"]["name"]`` stands for ("auto" resolved)."""
  name = config["evaluator"]["name"]
  if name != "auto":
    return name
  if config["space"] in TABULAR_SPACES:
    return "tabular"
  return "supernet"


def validate_config(config: Any) -> dict[str, Any]:
  """Checks a config and returns a resolved deep copy.

  The evaluator name "auto" is resolved (``resolve_evaluator_name``) and the
  names are checked against the registry; settings of the chosen strategy and
  evaluator are checked when they are constructed.

  Args:
    config: nested dict as returned by ``get_config()`` of a config file.

  Returns:
    A resolved deep copy.

  Raises:
    ValueError: a missing, unknown or malformed field; the message names it.

  Example:
    >>> cfg = validate_config(default_config())
    >>> cfg["evaluator"]["name"]
    'supernet'
  """
  if not isinstance(config, dict):
    raise ValueError(f"config must be a dict, got {type(config).__name__}")
  cfg = copy.deepcopy(config)
  allowed = set(default_config())
  unknown = sorted(set(cfg) - allowed)
  if unknown:
    raise ValueError(f"unknown config field(s) {unknown}; allowed: {sorted(allowed)}")
  for k, v in default_config().items():
    cfg.setdefault(k, copy.deepcopy(v))
  if not _is_int(cfg["seed"]) or cfg["seed"] < 0:
    raise ValueError(f"seed must be a non-negative integer, got {cfg['seed']!r}")
  if not _is_int(cfg["budget"]) or cfg["budget"] < 1:
    raise ValueError(f"budget must be a positive integer (architectures to evaluate), "
                     f"got {cfg['budget']!r}")
  cfg["seed"], cfg["budget"] = int(cfg["seed"]), int(cfg["budget"])
  for k in ("space", "dataset"):
    if not isinstance(cfg[k], str) or not cfg[k]:
      raise ValueError(f"{k} must be a non-empty string, got {cfg[k]!r}")
  if cfg["data_dir"] is not None and not isinstance(cfg["data_dir"], str):
    raise ValueError(f"data_dir must be a path string or None, got {cfg['data_dir']!r}")
  for k in ("data", "strategy", "evaluator", "final", "checkpoint"):
    if not isinstance(cfg[k], dict):
      raise ValueError(f"{k} must be a dict of settings, got {cfg[k]!r}")
  for k in ("strategy", "evaluator"):
    name = cfg[k].get("name")
    if not isinstance(name, str) or not name:
      raise ValueError(f"{k}.name must be a non-empty string, got {name!r}")
  if cfg["space"] not in registry.SPACES:
    raise ValueError(f"unknown space {cfg['space']!r}; choose one of {sorted(registry.SPACES)}")
  if cfg["strategy"]["name"] not in registry.STRATEGIES:
    raise ValueError(f"unknown strategy {cfg['strategy']['name']!r}; "
                     f"choose one of {sorted(registry.STRATEGIES)}")
  ev = cfg["evaluator"]["name"]
  if ev != "auto" and ev not in registry.EVALUATORS:
    raise ValueError(f"unknown evaluator {ev!r}; choose 'auto' or one of "
                     f"{sorted(registry.EVALUATORS)}")
  for name, sub in cfg["evaluator"].items():
    if name != "name" and not isinstance(sub, dict):
      raise ValueError(f"evaluator.{name} must be a dict of {name} settings, got {sub!r}")
  cfg["evaluator"]["name"] = resolve_evaluator_name(cfg)
  epochs = cfg["final"].get("epochs", 0)
  if not _is_int(epochs) or epochs < 0:
    raise ValueError(f"final.epochs must be a non-negative integer (0 skips final "
                     f"training), got {epochs!r}")
  ck = {**default_config()["checkpoint"], **cfg["checkpoint"]}
  if set(ck) - {"interval_s", "keep"}:
    raise ValueError(f"unknown checkpoint setting(s) {sorted(set(ck) - {'interval_s', 'keep'})}; "
                     "allowed: ['interval_s', 'keep']")
  if not _is_number(ck["interval_s"]) or ck["interval_s"] < 0:
    raise ValueError(f"checkpoint.interval_s must be a number >= 0, got {ck['interval_s']!r}")
  if not _is_int(ck["keep"]) or ck["keep"] < 1:
    raise ValueError(f"checkpoint.keep must be an integer >= 1, got {ck['keep']!r}")
  cfg["checkpoint"] = ck
  try:
    json.dumps(cfg, allow_nan=False)
  except (TypeError, ValueError) as e:
    raise ValueError(f"config must hold only JSON values (str, numbers, bool, None, "
                     f"lists, dicts): {e}") from None
  return cfg


def fingerprint(config: dict[str, Any]) -> str:
  """A short hash of the result-relevant part of a resolved config."""
  relevant = {k: v for k, v in config.items() if k not in _NOT_FINGERPRINTED}
  text = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
  """Dotted paths where two JSON trees differ."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b), key=str):
      out += _diff(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{prefix}{k}.")
    return out
  return [] if a == b else [f"{prefix[:-1]}: {a!r} there, {b!r} now"]


def _write_json(path: pathlib.Path, obj: Any) -> None:
  """Writes JSON atomically (temporary file + rename)."""
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _claim_workdir(workdir: pathlib.Path, cfg: dict[str, Any]) -> None:
  """Writes config.json, or checks that the workdir holds this experiment."""
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "config.json"
  if path.exists():
    try:
      saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
      raise ValueError(f"{path} is unreadable ({e}); use a fresh --workdir") from None
    if not isinstance(saved, dict):
      raise ValueError(f"{path} does not hold an experiment config; use a fresh --workdir")
    strip = lambda c: {k: v for k, v in c.items() if k not in _NOT_FINGERPRINTED}
    diffs = _diff(strip(saved), strip(cfg))
    if diffs:
      raise ValueError(f"workdir {workdir} holds another experiment (differs in "
                       f"{'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); "
                       "use another --workdir or the same settings to resume")
    if saved != cfg:
      _write_json(path, cfg)  # e.g. a new data_dir
    return
  leftovers = [p.name for p in workdir.iterdir()
               if not p.name.startswith(".") and p.name != "config.json.tmp"]
  if leftovers:
    raise ValueError(f"workdir {workdir} is not empty and holds no config.json "
                     f"(found {sorted(leftovers)[:3]}); use an empty or new --workdir")
  _write_json(path, cfg)


class _History:
  """history.jsonl: appended with fsync, reconciled with the checkpoint."""

  def __init__(self, path: pathlib.Path):
    self.path = path

  def reconcile(self, n: int) -> list[dict[str, Any]]:
    """Keeps the first ``n`` lines (those the checkpoint covers) and returns them."""
    data = self.path.read_bytes() if self.path.exists() else b""
    keep = 0
    for _ in range(n):
      end = data.find(b"\n", keep)
      if end < 0:
        raise ValueError(f"{self.path} has {data.count(10)} complete line(s) but the "
                         f"checkpoint covers {n}; the workdir is damaged, use a fresh --workdir")
      keep = end + 1
    if keep != len(data):
      log.info("history: dropping %d byte(s) written after the last checkpoint",
               len(data) - keep)
      with open(self.path, "r+b" if self.path.exists() else "wb") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    records = []
    for line_no, line in enumerate(data[:keep].splitlines(), start=1):
      try:
        records.append(json.loads(line))
      except ValueError:
        raise ValueError(f"{self.path}, line {line_no} is not JSON; the workdir is "
                         "damaged, use a fresh --workdir") from None
    return records

  def append(self, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    with open(self.path, "ab") as f:
      f.write(text.encode())
      f.flush()
      os.fsync(f.fileno())


#: Evaluators that train on the experiment's dataset; they get it injected.
DATA_EVALUATORS = ("scratch", "supernet")


def _make_evaluator(cls, space, cfg: dict[str, Any], workdir: pathlib.Path, dataset_fn):
  """Constructs the evaluator from ``cfg["evaluator"][name]``.

  Evaluators that train (``DATA_EVALUATORS``) get the experiment's loaded
  dataset as ``dataset`` unless their settings name one; ``scratch`` also gets
  ``workdir`` (per-architecture checkpoints, so an evaluation cut short by a
  crash resumes). Other evaluators get their settings unchanged.
  """
  name = cfg["evaluator"]["name"]
  settings = dict(cfg["evaluator"].get(name, {}))
  if name in DATA_EVALUATORS:
    if "dataset" not in settings:
      settings["dataset"] = dataset_fn()
    if name == "scratch":
      settings.setdefault("workdir", str(workdir / "evaluations"))
  return cls(space, settings)


def _load_data(cfg: dict[str, Any]):
  from nas_jax.data import load_dataset  # pylint: disable=import-outside-toplevel
  kwargs = dict(cfg["data"])
  kwargs.setdefault("seed", 0)  # one fixed train/valid split across search seeds
  return load_dataset(cfg["dataset"], data_dir=cfg["data_dir"], **kwargs)


def _best(records: list[dict[str, Any]]) -> dict[str, Any] | None:
  best = None
  for r in records:
    s = r["search_score"]
    if s is not None and math.isfinite(s) and (best is None or s > best["search_score"]):
      best = r
  return best


def _progress(total: int, initial: int, desc: str, disable: bool):
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, initial=initial, desc=desc, disable=disable, unit="arch",
              dynamic_ncols=True, leave=True)


def _plot_search(records: list[dict[str, Any]], path: pathlib.Path, title: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  scores = np.array([np.nan if r["search_score"] is None else r["search_score"]
                     for r in records], dtype=np.float64)
  best = np.fmax.accumulate(np.where(np.isfinite(scores), scores, -np.inf))
  x = np.arange(1, len(scores) + 1)
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(x, scores, ".", color="0.6", label="search_score")
  ax.step(x, best, where="post", color="C0", label="best search_score")
  ax.set_xlabel("evaluations")
  ax.set_ylabel("search score (validation acc, %)")
  ax.set_title(title, fontsize=9)
  ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _plot_curve(curve: list[dict[str, Any]], path: pathlib.Path, title: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(5, 3.5))
  epochs = [c.get("epoch", i + 1) for i, c in enumerate(curve)]
  keys = [k for k in curve[0] if k != "epoch" and k not in WALL_CLOCK_FIELDS
          and "acc" in k and all(_is_number(c.get(k)) for c in curve)]
  for k in keys:
    ax.plot(epochs, [c[k] for c in curve], marker=".", label=k)
  ax.set_xlabel("epoch")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title, fontsize=9)
  if keys:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _clean_curve(curve: Any) -> list[dict[str, Any]]:
  """A JSON-friendly learning curve: list of per-epoch dicts."""
  if curve is None:
    return []
  out = []
  for i, c in enumerate(curve):
    if isinstance(c, dict):
      out.append({k: (float(v) if _is_number(v) and not _is_int(v) else v)
                  for k, v in c.items()})
    else:
      out.append({"epoch": i + 1, "test_acc": float(c)})
  return out


def _experiment_keys(seed: int):
  """(strategy, evaluator, search, final) keys of an experiment's seed."""
  return tuple(jax.random.split(jax.random.key(seed), 4))


def _final_training(space, arch, cfg, key, workdir, dataset_fn, quiet):
  """Trains ``arch`` from scratch with ``nas_jax.train.train_child``."""
  from nas_jax import train  # pylint: disable=import-outside-toplevel
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  train.resolve_config(cfg["final"])
  dataset = dataset_fn()
  bar = tqdm(total=cfg["final"]["epochs"], desc="final training", unit="epoch",
             disable=quiet, dynamic_ncols=True)
  best = [None]

  def progress(epoch: int, metrics: dict[str, Any]) -> None:
    acc = metrics.get("valid_acc")
    if acc is not None and (best[0] is None or acc > best[0]):
      best[0] = acc
    bar.update(epoch - bar.n)
    bar.set_postfix(train_acc=f"{metrics.get('train_acc', float('nan')):.1f}",
                    best_valid_acc="-" if best[0] is None else f"{best[0]:.1f}")
    log.info("final training epoch %d: %s", epoch,
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
  if not isinstance(out, dict) or "test_acc" not in out:
    raise ValueError("nas_jax.train.train_child must return a dict with 'test_acc'")
  return out


def run_experiment(config: dict[str, Any], workdir: str | os.PathLike, *,
                   quiet: bool = False) -> dict[str, Any]:
  """Runs (or resumes) a search and the final training of its best architecture.

  Args:
    config: nested dict (see ``default_config`` and
      ``experiments/configs/default.py``).
    workdir: output directory; rerunning with the same one resumes.
    quiet: no progress bars.

  Returns:
    The result dict (also written to ``workdir/result.json``).

  Raises:
    ValueError: malformed config, unknown names, a workdir holding another
      experiment, an unreadable or foreign checkpoint.

  Example:
    >>> result = run_experiment({**default_config(), "budget": 4}, "runs/x", quiet=True)
  """
  t_start = time.perf_counter()
  cfg = validate_config(config)
  workdir = pathlib.Path(workdir).resolve()
  parts = _build(cfg, workdir)  # bad settings or data fail before the workdir is claimed
  _claim_workdir(workdir, cfg)
  handler = logging.FileHandler(workdir / "run.log")
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  root = logging.getLogger("nas_jax")
  root.addHandler(handler)
  old_level, old_propagate = root.level, root.propagate
  if root.level == logging.NOTSET or root.level > logging.INFO:
    root.setLevel(logging.INFO)
  root.propagate = False  # the log goes to run.log; the console shows progress bars
  try:
    return _run(cfg, workdir, quiet, t_start, *parts)
  finally:
    root.removeHandler(handler)
    root.setLevel(old_level)
    root.propagate = old_propagate
    handler.close()


def _build(cfg: dict[str, Any], workdir: pathlib.Path):
  """(space, strategy, evaluator, dataset_fn) of a resolved config."""
  space = registry.get_space(cfg["space"])
  strategy_cfg = {k: v for k, v in cfg["strategy"].items() if k != "name"}
  strategy = registry.get_strategy(cfg["strategy"]["name"])(space, strategy_cfg)
  dataset_cache: list[Any] = []

  def dataset_fn():
    if not dataset_cache:
      dataset_cache.append(_load_data(cfg))
    return dataset_cache[0]

  evaluator = _make_evaluator(registry.get_evaluator(cfg["evaluator"]["name"]), space, cfg,
                              workdir, dataset_fn)
  if cfg["final"].get("epochs", 0) > 0:
    from nas_jax import train  # pylint: disable=import-outside-toplevel
    train.resolve_config(cfg["final"])  # a typo fails now, not after the search
  return space, strategy, evaluator, dataset_fn


def _run(cfg: dict[str, Any], workdir: pathlib.Path, quiet: bool, t_start: float, space,
         strategy, evaluator, dataset_fn) -> dict[str, Any]:
  result_path = workdir / "result.json"
  if result_path.exists():
    log.info("experiment already complete; result.json kept")
    return json.loads(result_path.read_text())
  key = jax.random.key(cfg["seed"])
  k_strategy, k_evaluator, k_search, k_final = _experiment_keys(cfg["seed"])
  state = {"strategy": strategy.init(k_strategy), "evaluator": evaluator.init(k_evaluator),
           "key": key}
  ckpt = SearchCheckpointer(workdir / "checkpoints", fingerprint(cfg),
                            keep=cfg["checkpoint"]["keep"])
  restored = ckpt.restore(state)
  if restored is None:
    meta = {"round": 0, "history_len": 0, "search_seconds": 0.0, "sessions": 0,
            "nonfinite_scores": 0, "search_nonfinite_steps": 0}
    log.info("starting %s on %s/%s with evaluator %s, budget %d, seed %d in %s",
             cfg["strategy"]["name"], cfg["space"], cfg["dataset"], cfg["evaluator"]["name"],
             cfg["budget"], cfg["seed"], workdir)
  else:
    state, meta = restored
    log.info("resuming from checkpoint %d: %d evaluation(s) done", meta["round"],
             meta["history_len"])
  meta["sessions"] += 1
  history = _History(workdir / "history.jsonl")
  records = history.reconcile(meta["history_len"])
  budget = cfg["budget"]
  seconds0 = meta["search_seconds"]
  t0 = time.perf_counter()
  setup_seconds = round(t0 - t_start, 3)
  log.info("set-up (data, strategy and evaluator init, restore) took %.1f s", setup_seconds)
  last_save = t0
  best = _best(records)
  bar = _progress(budget, len(records), "search", quiet)
  try:
    if best is not None:
      bar.set_postfix(best_search_score=f"{best['search_score']:.2f}")
    while len(records) < budget:
      r = meta["round"]
      k_ask, k_eval = jax.random.split(jax.random.fold_in(k_search, r))
      archs, s_state = strategy.ask(state["strategy"], k_ask)
      archs = np.asarray(archs)
      if archs.ndim != 1 + len(space.arch_shape) or archs.shape[1:] != tuple(space.arch_shape) \
          or len(archs) == 0:
        raise ValueError(f"strategy {cfg['strategy']['name']!r} asked for archs of shape "
                         f"{archs.shape}; expected [K>0, {', '.join(map(str, space.arch_shape))}]")
      archs = np.stack([space.validate(a) for a in archs[:budget - len(records)]])
      evaluation, e_state = evaluator.evaluate(state["evaluator"], archs, k_eval)
      scores = np.asarray(evaluation.scores, dtype=np.float64).reshape(-1)
      costs = np.asarray(evaluation.costs, dtype=np.float64).reshape(-1)
      if scores.shape != (len(archs),) or costs.shape != (len(archs),):
        raise ValueError(f"evaluator {cfg['evaluator']['name']!r} returned {scores.shape} scores "
                         f"and {costs.shape} costs for {len(archs)} architectures")
      finite = np.isfinite(scores)
      if not finite.all():
        log.warning("round %d: %d non-finite search score(s), told as -inf (failed)", r,
                    int((~finite).sum()))
        meta["nonfinite_scores"] += int((~finite).sum())
      told = np.where(finite, scores, -np.inf)
      for info in evaluation.info or []:
        meta["search_nonfinite_steps"] += int((info or {}).get("nonfinite_steps", 0))
      s_state = strategy.tell(s_state, archs, told)
      now = time.perf_counter()
      new = []
      for i, arch in enumerate(archs):
        new.append({
            "index": len(records) + i, "round": r, "arch_id": space.arch_id(arch),
            "genotype": space.to_genotype(arch),
            "search_score": float(scores[i]) if finite[i] else None,
            "cost_s": round(float(costs[i]), 6),
            "wall_time_s": round(seconds0 + now - t0, 3)})
      history.append(new)
      records += new
      state = {"strategy": s_state, "evaluator": e_state, "key": state["key"]}
      meta["round"] = r + 1
      meta["history_len"] = len(records)
      b = _best(new)
      if b is not None and (best is None or b["search_score"] > best["search_score"]):
        best = b
      log.info("round %d: %d evaluated, best search_score in round %s, overall %s", r,
               len(records), None if b is None else round(b["search_score"], 4),
               None if best is None else round(best["search_score"], 4))
      bar.update(len(new))
      if best is not None:
        bar.set_postfix(best_search_score=f"{best['search_score']:.2f}")
      if now - last_save >= cfg["checkpoint"]["interval_s"] or len(records) >= budget:
        meta["search_seconds"] = round(seconds0 + time.perf_counter() - t0, 3)
        ckpt.save(meta["round"], state, meta)
        last_save = time.perf_counter()
  finally:
    bar.close()
  search_seconds = round(seconds0 + time.perf_counter() - t0, 3)
  if best is None:
    raise ValueError(f"no architecture got a finite search score in {budget} evaluations; "
                     "see run.log")
  dataset_name = getattr(evaluator, "dataset_name", cfg["dataset"])
  _plot_search(records, workdir / "search.png",
               f"{cfg['strategy']['name']} on {cfg['space']}/{dataset_name}")
  best_arch = space.from_genotype(best["genotype"])
  _write_json(workdir / "best_arch.json", {
      "space": cfg["space"], "genotype": best["genotype"], "arch_id": best["arch_id"],
      "arch": np.asarray(best_arch).tolist(), "search_score": best["search_score"],
      "dataset": dataset_name, "strategy": cfg["strategy"]["name"]})
  log.info("search done: best %s search_score %.4f (evaluation %d)", best["arch_id"],
           best["search_score"], best["index"])

  t_final = time.perf_counter()
  report = evaluator.report(best_arch)
  final: dict[str, Any] = {}
  if report is not None:
    final_source = f"{cfg['evaluator']['name']} evaluator report"
    final_test_acc = report.get("test_acc")
    final_curve = _clean_curve(report.get("curve"))
    final_extra = {k: v for k, v in report.items() if k not in ("test_acc", "curve")}
  elif cfg["final"].get("epochs", 0) > 0:
    final_source = "trained from scratch"
    final = _final_training(space, best_arch, cfg, k_final, workdir / "final", dataset_fn, quiet)
    final_test_acc = float(final["test_acc"])
    final_curve = _clean_curve(final.get("curve"))
    final_extra = {}
  else:
    final_source = "none (final.epochs = 0)"
    final_test_acc, final_curve, final_extra = None, [], {}
  final_seconds = round(time.perf_counter() - t_final, 3)
  if final_curve:
    _plot_curve(final_curve, workdir / "final_curve.png",
                f"best architecture, final training: test acc {final_test_acc:.2f}%"
                if final_test_acc is not None else "best architecture, final training")
  result = {
      "strategy": cfg["strategy"]["name"], "space": cfg["space"], "dataset": dataset_name,
      "evaluator": cfg["evaluator"]["name"], "seed": cfg["seed"], "budget": budget,
      "num_evaluations": len(records),
      "best_index": best["index"], "best_arch_id": best["arch_id"],
      "best_genotype": best["genotype"], "best_search_score": best["search_score"],
      "final_test_acc": final_test_acc, "final_source": final_source,
      "final_curve": final_curve, "final_report": final_extra,
      "search_cost_s": round(float(sum(r["cost_s"] for r in records)), 6),
      "nonfinite_search_scores": meta["nonfinite_scores"],
      "search_nonfinite_steps": meta["search_nonfinite_steps"],
      "final_nonfinite_steps": int(final.get("nonfinite_steps", 0)),
      "setup_seconds": setup_seconds, "search_seconds": search_seconds,
      "final_seconds": final_seconds,
      "total_seconds": round(setup_seconds + search_seconds + time.perf_counter() - t_final, 3),
      "resumed_sessions": meta["sessions"] - 1,
  }
  _write_json(result_path, result)
  log.info("done: best_search_score %.4f, final_test_acc %s, search %.1fs, final %.1fs",
           best["search_score"], final_test_acc, search_seconds, final_seconds)
  return result


def strip_wall_clock(obj: Any) -> Any:
  """``obj`` without ``WALL_CLOCK_FIELDS`` (recursively), for comparisons."""
  if isinstance(obj, dict):
    return {k: strip_wall_clock(v) for k, v in obj.items() if k not in WALL_CLOCK_FIELDS}
  if isinstance(obj, list):
    return [strip_wall_clock(v) for v in obj]
  return obj


# --------------------------------------------------------------------------
# Config files and command-line overrides (used by experiments/*.py)
# --------------------------------------------------------------------------

def enable_compile_cache() -> str | None:
  """Turns on JAX's persistent compilation cache for command-line runs.

  Networks take minutes to compile on a CPU; with the cache a second run (a
  resume, a retrain, the same command again) loads them in seconds. The
  directory is ``$NAS_JAX_COMPILE_CACHE`` or ``~/.cache/nas_jax/xla``; setting
  the variable to an empty string turns the cache off.

  Returns:
    The cache directory, or None when off.
  """
  path = os.environ.get("NAS_JAX_COMPILE_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "nas_jax", "xla"))
  if not path:
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  return path


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
  """Deep-merges ``override`` into a copy of ``base`` (dicts merge, rest replaces).

  Example:
    >>> merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
    {'a': {'b': 1, 'c': 3}}
  """
  out = copy.deepcopy(base)
  for k, v in override.items():
    if isinstance(v, dict) and isinstance(out.get(k), dict):
      out[k] = merge(out[k], v)
    else:
      out[k] = copy.deepcopy(v)
  return out


def load_config_file(path: str | os.PathLike, *args: Any) -> dict[str, Any]:
  """Runs a Python config file and returns its ``get_config(*args)``.

  Raises:
    ValueError: missing file, no ``get_config``, an error while running it, or
      a result that is not a dict.

  Example:
    >>> cfg = load_config_file("experiments/configs/default.py")
  """
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  if not path.is_file():
    raise ValueError(f"config file {path} does not exist; give a Python file with get_config()")
  spec = importlib.util.spec_from_file_location(f"_nas_jax_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # a user's file: report, don't crash
    raise ValueError(f"config file {path} failed to load ({type(e).__name__}: {e})") from None
  if not callable(getattr(module, "get_config", None)):
    raise ValueError(f"config file {path} defines no get_config() function")
  config = module.get_config(*args)
  if not isinstance(config, dict):
    raise ValueError(f"get_config() of {path} returned {type(config).__name__}, expected a dict")
  return config


def parse_value(text: str) -> Any:
  """A command-line value: a Python literal (``20``, ``0.1``, ``None``, ``[1, 2]``,
  ``{'a': 1}``, ``true``/``false``) or else the plain string."""
  import ast  # pylint: disable=import-outside-toplevel
  low = text.strip().lower()
  if low in ("true", "false"):
    return low == "true"
  if low in ("none", "null"):
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
  """Applies ``path.to.field=value`` assignments (``--set``) to a config copy.

  Raises:
    ValueError: an assignment without ``=``, an empty path, or a path through a
      non-dict value.

  Example:
    >>> apply_overrides({"strategy": {"name": "random"}}, ["strategy.batch_size=4"])
    {'strategy': {'name': 'random', 'batch_size': 4}}
  """
  out = copy.deepcopy(config)
  for a in assignments:
    path, sep, value = a.partition("=")
    keys = path.strip().split(".")
    if not sep or not all(keys):
      raise ValueError(f"malformed --set {a!r}; write FIELD=VALUE, e.g. --set budget=20 "
                       "or --set strategy.population=20")
    node = out
    for depth, k in enumerate(keys[:-1]):
      node = node.setdefault(k, {})
      if not isinstance(node, dict):
        raise ValueError(f"--set {a!r}: {'.'.join(keys[:depth + 1])} is not a group of "
                         "settings")
    node[keys[-1]] = parse_value(value)
  return out


# --------------------------------------------------------------------------
# Retraining a found architecture (experiments/train.py)
# --------------------------------------------------------------------------

def load_arch_file(path: str | os.PathLike) -> tuple[Any, np.ndarray, dict[str, Any]]:
  """Reads a ``best_arch.json`` (``{"space": ..., "genotype": ...}``).

  Returns:
    ``(space, arch, record)``: the space instance, the validated int32
    architecture and the whole JSON record.

  Raises:
    ValueError: missing file, not JSON, missing fields, unknown space or a
      genotype the space rejects; the message names the file.

  Example:
    >>> space, arch, record = load_arch_file("runs/x/best_arch.json")
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
  space = registry.get_space(record["space"])
  try:
    arch = space.validate(space.from_genotype(record["genotype"]))
  except (ValueError, KeyError, TypeError, IndexError) as e:
    raise ValueError(f"malformed --arch file {path}: bad genotype ({e})") from None
  return space, arch, record


def retrain(arch_file: str | os.PathLike, config: dict[str, Any], workdir: str | os.PathLike,
            *, quiet: bool = False) -> dict[str, Any]:
  """Trains the architecture of ``arch_file`` from scratch with ``config["final"]``.

  Uses the same key as ``run_experiment``'s final training, so with the same
  seed, dataset and ``final`` settings it reproduces that run's
  ``final_test_acc``. Rerunning with the same workdir resumes (per epoch).

  Args:
    arch_file: a ``best_arch.json``.
    config: experiment config (``seed``, ``dataset``, ``data_dir``, ``data``,
      ``final``).
    workdir: output directory (``retrain.json``, ``final_curve.png``,
      checkpoints).
    quiet: no progress bar.

  Returns:
    dict with ``arch_id``, ``genotype``, ``final_test_acc``, ``final_curve``,
    ``final_seconds`` (also written to ``workdir/retrain.json``).

  Example:
    >>> out = retrain("runs/x/best_arch.json", validate_config(cfg), "runs/x/retrain")
  """
  cfg = validate_config(config)
  if cfg["final"].get("epochs", 0) < 1:
    raise ValueError("final.epochs must be >= 1 to retrain (use --epochs N)")
  space, arch, record = load_arch_file(arch_file)
  workdir = pathlib.Path(workdir).resolve()
  workdir.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  final = _final_training(space, arch, cfg, _experiment_keys(cfg["seed"])[3], workdir,
                          lambda: _load_data(cfg), quiet)
  curve = _clean_curve(final.get("curve"))
  out = {"arch_file": str(pathlib.Path(arch_file).resolve()), "space": space.name,
         "arch_id": space.arch_id(arch), "genotype": space.to_genotype(arch),
         "search_score": record.get("search_score"), "dataset": cfg["dataset"],
         "seed": cfg["seed"], "final": cfg["final"],
         "final_test_acc": float(final["test_acc"]), "final_curve": curve,
         "final_nonfinite_steps": int(final.get("nonfinite_steps", 0)),
         "final_seconds": round(time.perf_counter() - t0, 3)}
  if curve:
    _plot_curve(curve, workdir / "final_curve.png",
                f"retraining: test acc {out['final_test_acc']:.2f}%")
  _write_json(workdir / "retrain.json", out)
  return out
