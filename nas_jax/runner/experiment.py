"""``run_experiment``: one entry point for every kind of method.

``run_experiment(config, workdir)`` checks the config, builds the space, the
method (an ask/tell strategy or a one-shot method, by ``--strategy``) and, for
choosers, the evaluator, each from the registry; gives each what it declares
it ``needs`` (the task's loaded data, a workdir); claims the workdir; runs the
loop of the method's ``kind`` (``runner.search.run_search`` or
``runner.oneshot.run_oneshot``); then, for every kind alike, writes
``best_arch.json``, trains the best architecture from scratch (or reports the
benchmark table's figures), draws the plots and writes ``result.json``.

Workdir outputs:

=================  ==========================================================
config.json        the resolved config (names the experiment; a rerun with
                   another config is refused)
history.jsonl      ask/tell: one line per evaluated architecture (index,
                   round, arch_id, genotype, search_score, metrics, flops,
                   params, curve when trained, stopped, cost_s, wall_time_s);
                   one-shot: one line per epoch (the derived genotype, its
                   search score, training metrics, arch_params summary)
checkpoints/       orbax checkpoints of the whole search state (last 2)
best_arch.json     space, space_options + genotype of the best architecture
                   (for ``experiments/train.py --arch``)
result.json        best_genotype, best_search_score, final_test_acc,
                   final_curve, the Pareto frontier (search score vs FLOPs),
                   timings, non-finite counts
search.png         search score vs evaluations (or epochs)
pareto.png         search score vs FLOPs of everything evaluated, frontier marked
final_curve.png    final training curve (when trained from scratch)
run.log            the log
=================  ==========================================================

Resume: rerunning with the same workdir restores the newest checkpoint, cuts
``history.jsonl`` back to the lines that checkpoint covers and goes on; keys
are functions of the round (or epoch and step), so a run killed at any point
(SIGKILL included) and resumed writes the same history and result as an
uninterrupted one. Only the wall-clock fields (``WALL_CLOCK_FIELDS``) differ.
Search-time scores are called ``search_score`` everywhere; accuracies after
final training (or the benchmark's test accuracy) ``final_test_acc``.

Example:
    Random search over the NAS-Bench-201 table (a few seconds; the default
    ``nasnet`` space trains a supernet and then the best cell, which takes
    minutes):

    >>> import os
    >>> from nas_jax import runner
    >>> config = runner.merge(runner.default_config(), {"space": "nb201", "budget": 10})
    >>> result = runner.run_experiment(config, "runs/demo", quiet=True)
    >>> result["num_evaluations"], result["evaluator"], result["final_source"]
    (10, 'tabular', 'tabular evaluator report')
    >>> result["best_arch_id"], result["best_search_score"], result["final_test_acc"]
    ('nb201:2.2.3.3.3.1', 89.416, 93.07)
    >>> sorted(os.listdir("runs/demo"))
    ['best_arch.json', 'checkpoints', 'config.json', 'history.jsonl', 'pareto.png', 'result.json', 'run.log', 'search.png']
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import sys
import time
from typing import Any, Callable

import numpy as np

from nas_jax import registry
from nas_jax import tasks as tasks_lib
from nas_jax.checkpoint import SearchCheckpointer
from nas_jax.evaluators.base import Evaluator
from nas_jax.runner import config as config_lib
from nas_jax.runner import costs as costs_lib
from nas_jax.runner import final as final_lib
from nas_jax.runner import oneshot as oneshot_lib
from nas_jax.runner import references as references_lib
from nas_jax.runner import report
from nas_jax.runner import search as search_lib
from nas_jax.runner import workdir as workdir_lib

log = logging.getLogger("nas_jax.experiment")

#: The loop of each kind of method (``method.kind``).
LOOPS = {"ask_tell": "search", "oneshot": "oneshot", "growth": "growth"}


@dataclasses.dataclass
class Parts:
  """The constructed components of an experiment."""
  space: Any
  method: Any                # a Strategy or a OneShotMethod
  evaluator: Any             # None for one-shot methods
  data_fn: Callable[[], Any]
  kind: str


@dataclasses.dataclass
class RunContext:
  """What a loop needs from the runner (config, workdir, files, costs, progress)."""
  cfg: dict[str, Any]
  workdir: pathlib.Path
  space: Any
  ckpt: SearchCheckpointer
  history: workdir_lib.History
  cost_model: Any
  quiet: bool
  t_start: float
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)
  setup_seconds: float = 0.0
  search_seconds: float = 0.0

  def mark_setup_done(self, t: float) -> None:
    self.setup_seconds = round(t - self.t_start, 3)
    log.info("set-up (data, strategy and evaluator init, restore) took %.1f s", self.setup_seconds)

  def notice(self, message: str) -> None:
    """Logs ``message`` and prints it on the console (stderr), progress bars or not."""
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    log.warning("%s", message)
    tqdm.write(f"note: {message}", file=sys.stderr)

  def progress(self, total: int, initial: int, desc: str, unit: str):
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    return tqdm(total=total, initial=initial, desc=desc, disable=self.quiet, unit=unit,
                dynamic_ncols=True, leave=True)


def _construct(cls, space, settings: dict[str, Any], provided: dict[str, Callable[[], Any]], what: str):
  """``cls(space, settings, **{need: provided[need]() for need in cls.needs})``."""
  needs = tuple(getattr(cls, "needs", ()))
  unknown = [n for n in needs if n not in provided]
  if unknown:
    raise ValueError(f"{what} {getattr(cls, 'name', cls.__name__)!r} needs {unknown}, which the "
                     f"runner cannot provide (it provides {sorted(provided)})")
  return cls(space, settings, **{n: provided[n]() for n in needs})


def build(cfg: dict[str, Any], workdir: pathlib.Path) -> Parts:
  """Constructs the space, the method and (for choosers) the evaluator of a resolved config.

  Bad settings and unusable data fail here, before anything is written.
  """
  space = registry.get_space(cfg["space"], **cfg["space_options"])
  cache: list[Any] = []

  def data_fn():
    if not cache:
      cache.append(final_lib.load_data(cfg))
    return cache[0]

  provided = {"data": data_fn, "workdir": lambda: str(workdir / "evaluations")}
  cls = registry.get_strategy(cfg["strategy"]["name"])
  kind = getattr(cls, "kind", "ask_tell")
  if kind not in LOOPS:
    raise ValueError(f"strategy {cfg['strategy']['name']!r} is of kind {kind!r}, which no loop "
                     f"runs; known kinds: {sorted(LOOPS)}")
  settings = {k: v for k, v in cfg["strategy"].items() if k != "name"}
  if kind == "oneshot" and "epochs" in cls.default_config():
    # The budget counts epochs; the method's schedules run over exactly those.
    if settings.get("epochs", cfg["budget"]) != cfg["budget"]:
      raise ValueError(f"strategy.epochs={settings['epochs']!r} differs from budget={cfg['budget']}; "
                       "the budget is the number of epochs of a one-shot method: set --budget only")
    settings["epochs"] = cfg["budget"]
  method = _construct(cls, space, settings, provided, "strategy")
  evaluator = None
  if kind == "ask_tell":
    ev_cls = registry.get_evaluator(cfg["evaluator"]["name"])
    evaluator = _construct(ev_cls, space, dict(cfg["evaluator"].get(cfg["evaluator"]["name"], {})),
                           provided, "evaluator")
    evaluator.prepare()
  elif kind == "oneshot" and int(method.steps_per_epoch()) < 1:
    raise ValueError(f"strategy {cfg['strategy']['name']!r} gets no full batch per epoch from the "
                     "data; lower its batch_size or use more data")
  if cfg["final"].get("epochs", 0) > 0:
    final_lib.check_final_config(cfg)  # a typo fails now, not after the search
  return Parts(space, method, evaluator, data_fn, kind)


def _reporter(cfg: dict[str, Any], parts: Parts):
  """What reports final figures without training: the evaluator, or for a
  one-shot method the space's benchmark table (when its default evaluator is
  one that needs nothing); None otherwise."""
  if parts.evaluator is not None:
    return parts.evaluator
  name = getattr(parts.space, "default_evaluator", None)
  if name not in registry.EVALUATORS:
    return None
  cls = registry.get_evaluator(name)
  if getattr(cls, "needs", ()) or cls.report is Evaluator.report:
    return None
  return cls(parts.space, dict(cfg["evaluator"].get(name, {})))


def _cost_model(cfg: dict[str, Any], parts: Parts, reporter):
  """The ``CostModel`` of the run (the reporter's network, else the final one on the data)."""
  net = reporter.cost_network() if reporter is not None else None
  if net is not None:
    net = dict(net)
    shape = net.pop("input_shape")
    return costs_lib.CostModel(parts.space, net, shape)
  data = parts.data_fn()
  task = tasks_lib.task_of(data)
  final_cfg = final_lib.check_final_config(cfg)
  network = {**task.network_kwargs(data), **task.network_config(final_cfg)}
  return costs_lib.CostModel(parts.space, network, tuple(task.dummy_input(data).shape[1:]))


def run_experiment(config: dict[str, Any], workdir: str | os.PathLike, *,
                   quiet: bool = False) -> dict[str, Any]:
  """Runs (or resumes) a search and the final training of its best architecture.

  Args:
    config: nested dict (see ``runner.config.default_config`` and
      ``experiments/configs/default.py``).
    workdir: output directory; rerunning with the same one resumes.
    quiet: no progress bars.

  Returns:
    The result dict (also written to ``workdir/result.json``).

  Raises:
    ValueError: malformed config, unknown names, an impossible combination
      (task and space, method and space), a workdir holding another
      experiment, an unreadable or foreign checkpoint.
  """
  t_start = time.perf_counter()
  cfg = config_lib.validate_config(config)
  workdir = pathlib.Path(workdir).resolve()
  parts = build(cfg, workdir)  # bad settings or data fail before the workdir is claimed
  workdir_lib.claim_workdir(workdir, cfg)
  with workdir_lib.log_to(workdir):
    return _run(cfg, workdir, quiet, t_start, parts)


def _run(cfg: dict[str, Any], workdir: pathlib.Path, quiet: bool, t_start: float,
         parts: Parts) -> dict[str, Any]:
  result_path = workdir / "result.json"
  if result_path.exists():
    done = _complete_result(result_path, workdir_lib.History(workdir / "history.jsonl"))
    if done is not None:
      log.info("experiment already complete; result.json kept")
      return done
  k_strategy, k_evaluator, k_search, k_final = final_lib.experiment_keys(cfg["seed"])
  reporter = _reporter(cfg, parts)
  ctx = RunContext(cfg=cfg, workdir=workdir, space=parts.space,
                   ckpt=SearchCheckpointer(workdir / "checkpoints", config_lib.fingerprint(cfg),
                                           keep=cfg["checkpoint"]["keep"]),
                   history=workdir_lib.History(workdir / "history.jsonl"),
                   cost_model=_cost_model(cfg, parts, reporter), quiet=quiet, t_start=t_start)
  if parts.kind == "oneshot":
    records = oneshot_lib.run_oneshot(ctx, parts.method, k_strategy, k_search)
    best = records[-1] if records else None  # the architecture the method ends with
    if best is not None and best["search_score"] is None:
      best = None
  elif parts.kind == "growth":  # methods that grow trained networks (Petridish)
    from nas_jax.runner import growth as growth_lib  # pylint: disable=import-outside-toplevel
    records = growth_lib.run_growth(ctx, parts.method, k_strategy, k_search)
    best = report.best(records)
  else:
    records = search_lib.run_search(ctx, parts.method, parts.evaluator, k_strategy, k_evaluator,
                                    k_search)
    best = report.best(records)
  meta = ctx.meta
  if best is None:
    raise ValueError(f"no architecture got a finite search score in {cfg['budget']} "
                     f"{'epochs' if parts.kind == 'oneshot' else 'evaluations'}; see run.log")
  space = parts.space
  dataset_name = getattr(parts.evaluator, "dataset_name", cfg["dataset"])
  unit = "epochs" if parts.kind == "oneshot" else "evaluations"
  where = f"{config_lib.space_label(cfg)}/{dataset_name}"
  report.plot_search(records, workdir / "search.png", f"{cfg['strategy']['name']} on {where}", xlabel=unit)
  best_arch = space.from_genotype(best["genotype"])
  workdir_lib.write_json(workdir / "best_arch.json", {
      "space": cfg["space"], "space_options": cfg["space_options"], "genotype": best["genotype"],
      "arch_id": best["arch_id"],
      "arch": np.asarray(best_arch).tolist(), "search_score": best["search_score"],
      "dataset": dataset_name, "strategy": cfg["strategy"]["name"]})
  log.info("search done: best %s search_score %.4f (%s)", best["arch_id"], best["search_score"],
           f"epoch {best['epoch']}" if parts.kind == "oneshot" and "epoch" in best
           else f"evaluation {best['index'] + 1} of {len(records)}")  # counted from 1, as the summary
  front = report.pareto_front(records)
  if front:
    report.plot_pareto(records, front, workdir / "pareto.png",
                       f"{cfg['strategy']['name']} on {where}: frontier")

  t_final = time.perf_counter()
  report_out = reporter.report(best_arch) if reporter is not None else None
  final: dict[str, Any] = {}
  final_test_acc = final_curve = None
  final_extra: dict[str, Any] = {}
  # A search that ran on the table reports the table's figures as final; a one-shot method that
  # trained on data of its own keeps them apart (``benchmark_report``), beside its own training.
  benchmark = report_out if parts.evaluator is None else None
  if report_out is not None and parts.evaluator is not None:
    final_source = f"{getattr(reporter, 'name', 'table')} evaluator report"
    final_test_acc = report_out.get("test_acc")
    final_curve = report.clean_curve(report_out.get("curve"))
    final_extra = {k: v for k, v in report_out.items() if k not in ("test_acc", "curve")}
  elif cfg["final"].get("epochs", 0) > 0:
    final_source = "trained from scratch"
    final = final_lib.final_training(space, best_arch, cfg, k_final, workdir / "final",
                                     parts.data_fn, quiet)
    name, value = final_lib.metric_of(final)
    final_extra = {} if name == "test_acc" else {name: value}
    final_test_acc = float(value) if name == "test_acc" and value is not None else None
    final_curve = report.clean_curve(final.get("curve"))
  else:
    final_source = "none (final.epochs = 0)"
    final_curve = []
  final_seconds = round(time.perf_counter() - t_final, 3)
  t_refs = time.perf_counter()
  references = _references(cfg, parts, reporter, k_final, workdir, quiet,
                           trained=final_source == "trained from scratch")
  references_seconds = round(time.perf_counter() - t_refs, 3)
  if final_curve:
    report.plot_curve(final_curve, workdir / "final_curve.png",
                      f"best architecture, final training: test acc {final_test_acc:.2f}%"
                      if final_test_acc is not None else "best architecture, final training",
                      references=references)
  search_seconds = ctx.search_seconds
  result = {
      "strategy": cfg["strategy"]["name"], "space": cfg["space"], "space_options": cfg["space_options"],
      "dataset": dataset_name,
      "evaluator": cfg["evaluator"]["name"] if parts.kind == "ask_tell" else None,
      "kind": parts.kind, "seed": cfg["seed"], "budget": cfg["budget"],
      "num_evaluations": len(records),
      "best_index": best["index"], "best_arch_id": best["arch_id"],
      "best_genotype": best["genotype"], "best_search_score": best["search_score"],
      "best_metrics": best.get("metrics"),
      "best_flops": best.get("flops"), "best_params": best.get("params"),
      "final_test_acc": final_test_acc, "final_source": final_source,
      "final_curve": final_curve, "final_report": final_extra,
      "references": references,
      "pareto": [{k: r.get(k) for k in ("index", "arch_id", "genotype", "search_score", "flops",
                                        "params")} for r in front],
      "costs": ctx.cost_model.describe() if ctx.cost_model is not None else None,
      "search_cost_s": round(float(sum(r.get("cost_s", 0.0) for r in records)), 6),
      "nonfinite_search_scores": meta["nonfinite_scores"],
      "search_nonfinite_steps": meta["search_nonfinite_steps"],
      "final_nonfinite_steps": int(final.get("nonfinite_steps", 0)),
      "setup_seconds": ctx.setup_seconds, "search_seconds": search_seconds,
      "final_seconds": final_seconds, "references_seconds": references_seconds,
      "total_seconds": round(ctx.setup_seconds + search_seconds + time.perf_counter() - t_final, 3),
      "resumed_sessions": meta["sessions"] - 1,
  }
  if benchmark is not None:
    result["benchmark_report"] = benchmark
  if parts.kind == "oneshot":
    result["arch_params"] = best.get("arch_params")
  workdir_lib.write_json(result_path, result)
  log.info("done: best_search_score %.4f, final_test_acc %s, search %.1fs, final %.1fs",
           best["search_score"], final_test_acc, search_seconds, final_seconds)
  return result


def _references(cfg: dict[str, Any], parts: Parts, reporter, key, workdir: pathlib.Path,
                quiet: bool, *, trained: bool) -> dict[str, Any]:
  """The references of the run (``runner.references``): table figures, or those trained alike.

  A tabular reporter gives the table's best and median; after a final
  training from scratch, the configured published cell is trained with the
  same recipe, key and data (its own checkpoints in ``reference_cell/``) and
  the configured classical model is fitted on the same training split.
  """
  out: dict[str, Any] = {}
  table = references_lib.table_reference(reporter) if reporter is not None else None
  if table is not None:
    out["table"] = table
  refs = cfg["references"]
  if not trained:
    return out
  if refs["cell"] is not None:
    out["cell"] = references_lib.published_cell_reference(
        parts.space, refs["cell"], cfg, key, workdir / "reference_cell", parts.data_fn, quiet)
    log.info("reference cell %s: %s", refs["cell"],
             {k: v for k, v in out["cell"].items() if k not in ("curve", "genotype")})
  if refs["classical"] is not None:
    split = final_lib.check_final_config(cfg).get("train_split", "train")
    out["classical"] = references_lib.classical_reference(parts.data_fn(), refs["classical"], split)
    log.info("reference classical: %s", out["classical"])
  return out


def _complete_result(result_path: pathlib.Path, history: workdir_lib.History) -> dict | None:
  """The saved result when it and the history are whole, else None (the run resumes)."""
  try:
    result = json.loads(result_path.read_text())
  except (OSError, ValueError):
    result = None
  records, damage = history.read()
  if isinstance(result, dict) and damage is None and len(records) == result.get("num_evaluations"):
    return result
  why = ("result.json is unreadable" if not isinstance(result, dict) else
         f"history.jsonl {damage or 'has ' + str(len(records)) + ' lines'} but the result counts "
         f"{result.get('num_evaluations')} evaluations")
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  log.warning("the finished run is damaged (%s): resuming to repair it", why)
  tqdm.write(f"note: the finished run is damaged ({why}): resuming to repair it", file=sys.stderr)
  return None


def strip_wall_clock(obj: Any) -> Any:
  """``obj`` without ``WALL_CLOCK_FIELDS`` (recursively), for comparisons.

  Example:
    >>> strip_wall_clock({"a": 1, "wall_time_s": 3.0, "b": [{"seconds": 1}]})
    {'a': 1, 'b': [{}]}
  """
  if isinstance(obj, dict):
    return {k: strip_wall_clock(v) for k, v in obj.items() if k not in report.WALL_CLOCK_FIELDS}
  if isinstance(obj, list):
    return [strip_wall_clock(v) for v in obj]
  return obj
