"""The growth loop: a queue of jobs that train models, grown from trained parents (Petridish).

``run_growth(ctx, method, k_strategy, k_search)`` is called by
``run_experiment`` for a method of kind ``"growth"``
(``nas_jax.growth.petridish.Petridish``). It trains ``budget`` models: job 0
the seed, every later job one child::

    job j:  k = fold_in(search_key, j);  k_parent, k_cand, k_child = split(k, 3)
      parent     = method's choice from the pool (the models trained so far)
      candidates = the parent + candidate layers, warm-started from the parent,
                   trained for candidate_epochs          -> evaluations/model_j/candidates/
      child      = the parent + the selected candidates behind zero gates,
                   warm-started from the candidate model, trained for child_epochs
                                                         -> evaluations/model_j/child/
      weights    -> evaluations/model_j/variables.msgpack, then history line j

Each history line holds the model's ``genotype``, ``arch_id``, ``parent``,
``search_score`` (= ``valid_acc``, %, after its training), ``flops``,
``params``, its learning curve, the candidates with their merge weights and
which were selected. After the last job ``pareto.json`` lists the Pareto
frontier: the models no other beats in both FLOPs and validation error
(``flops``, ``params``, ``valid_acc``, ``genotype``, ``on_hull``: whether it
is also on the lower convex hull that parents are chosen from), each also
written as ``frontier_<j>.json`` (the ``best_arch.json`` format, so
``experiments/train.py --arch frontier_<j>.json`` retrains it);
``frontier.png`` draws error against FLOPs with both marked.

**Resume.** Everything a job needs is a function of the history before it
and its key, so the queue is rebuilt from ``history.jsonl`` on restart. A
model's weights are written before its line, and its line before the
checkpoint: a line beyond the last checkpoint is adopted as it is (its
weights are on disk). A job killed midway resumes inside ``train_child``
from its last complete epoch (each phase checkpoints per epoch in its
folder). Nothing trained is lost, and a killed and resumed run writes the
same history as an uninterrupted one (wall-clock fields aside).

**Workers.** One CPU trains one model at a time, so the queue holds one job.
A pool plugs in at ``_plan``/``_run_job``: plan up to ``workers`` jobs from the
current pool (each with its own key ``fold_in(search_key, j)``), submit
``_run_job`` for each to an executor, and append each finished line in job
order (that keeps the history deterministic; Petridish itself appends in
completion order, which is faster but not reproducible).

Example (not run here: a run trains several small networks, minutes)::

    config = runner.merge(runner.default_config(), {
        "space": "petridish", "strategy": {"name": "petridish"}, "budget": 4})
    result = runner.run_experiment(config, "runs/petridish", quiet=True)
"""
from __future__ import annotations

import collections
import logging
import math
import os
import pathlib
import time
from typing import Any

import flax.serialization
import jax
import numpy as np

from nas_jax.growth import petridish as petridish_lib
from nas_jax.networks import petridish as nets
from nas_jax.runner import config as config_lib
from nas_jax.runner import resume as resume_lib
from nas_jax.runner import workdir as workdir_lib
from nas_jax.spaces.petridish import OPS

log = logging.getLogger("nas_jax.experiment")

WEIGHTS = "variables.msgpack"


def save_variables(path: pathlib.Path, variables: dict[str, Any]) -> None:
  """Writes a model's variables atomically (msgpack)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(jax.device_get(variables)))
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def load_variables(path: pathlib.Path) -> dict[str, Any]:
  """Reads variables written by ``save_variables`` (nested dicts of numpy arrays)."""
  try:
    return flax.serialization.msgpack_restore(pathlib.Path(path).read_bytes())
  except (OSError, ValueError) as e:
    raise ValueError(f"cannot read model weights {path} ({e}); the workdir is damaged: "
                     "delete that model's history line and folder, or use a fresh --workdir") from None


def _last(curve: list[dict[str, Any]], name: str):
  v = curve[-1].get(name) if curve else None
  return None if v is None or not math.isfinite(float(v)) else float(v)


class _Jobs:
  """The jobs of one run (see the module docstring)."""

  def __init__(self, ctx, method, k_search):
    self.ctx, self.method, self.k_search = ctx, method, k_search
    self.space = ctx.space
    self.root = pathlib.Path(method.workdir or ctx.workdir / "evaluations")

  def folder(self, j: int) -> pathlib.Path:
    return self.root / f"model_{j:04d}"

  def plan(self, j: int, models: list[dict[str, Any]]) -> dict[str, Any]:
    """Job ``j``: the seed, or a growth of a parent chosen from ``models``."""
    if j == 0:
      return {"index": 0, "kind": "seed", "parent": None}
    k_parent = jax.random.split(jax.random.fold_in(self.k_search, j), 3)[0]
    full = [i for i, m in enumerate(models) if len(m["genotype"]["layers"]) >= self.space.max_layers]
    parent = petridish_lib.choose_parent(models, k_parent, self.method.config["convex_hull_eps"], full)
    return {"index": j, "kind": "grow", "parent": parent}

  def run(self, job: dict[str, Any], models: list[dict[str, Any]]) -> dict[str, Any]:
    """Trains job's model; writes its weights; returns its history line."""
    t0 = time.perf_counter()
    method, space, data = self.method, self.space, self.method.data
    j = job["index"]
    _, k_cand, k_child = jax.random.split(jax.random.fold_in(self.k_search, j), 3)
    folder = self.folder(j)
    line: dict[str, Any] = {"index": j, "round": j, "kind": job["kind"], "parent": job["parent"]}
    if job["kind"] == "seed":
      arch = space.empty()
      out = _train(space, arch, data, method.train_config(method.config["seed_epochs"]), k_child,
                   folder / "child")
    else:
      parent = models[job["parent"]]
      parent_arch = space.from_genotype(parent["genotype"])
      parent_vars = load_variables(self.root / parent["weights"])
      cands = method.propose_candidates(parent_arch, k_cand)
      if not cands:
        raise ValueError(f"petridish: model {job['parent']} has no free row left; raise the space's "
                         "max_layers")
      from nas_jax.train import train_child  # pylint: disable=import-outside-toplevel
      model = method.family.build_candidates(space, parent_arch, cands, **method.network())
      cand = train_child(None, None, data, method.train_config(method.config["candidate_epochs"]),
                         jax.random.fold_in(k_cand, 1), model=model, workdir=folder / "candidates",
                         warm_start=parent_vars, return_variables=True)
      omega = np.asarray(cand["variables"]["params"]["omega"], np.float64)
      n_parent = space.num_layers(parent_arch)
      selected, how = method.select(omega, space.max_layers - n_parent)
      arch = space.append(parent_arch, [cands[i] for i in selected])
      out = _train(space, arch, data, method.train_config(method.config["child_epochs"]), k_child,
                   folder / "child", warm_start=cand["variables"],
                   transfer=nets.transfer_from_candidates(n_parent, selected))
      line["candidates"] = [{"op": OPS[r[0] - 1], "input": r[1], "join": r[2], "omega": float(w)}
                            for r, w in zip(cands, omega)]
      line["selected"], line["selection"] = [int(i) for i in selected], how
      line["candidate_curve"] = cand["curve"]
      line["candidate_timing"] = {"first_step_s": cand["first_step_s"], "step_s": cand["step_s"]}
      line["candidate_nonfinite_steps"] = cand["nonfinite_steps"]
    save_variables(folder / WEIGHTS, out.pop("variables"))
    cost = method.cost(arch)
    curve = out["curve"]
    valid_acc = _last(curve, "valid_acc")
    line.update({
        "arch_id": space.arch_id(arch), "genotype": space.to_genotype(arch),
        "search_score": valid_acc, "valid_acc": valid_acc,
        "metrics": {"valid_acc": valid_acc, "valid_loss": _last(curve, "valid_loss"),
                    "train_acc": _last(curve, "train_acc")},
        "flops": int(cost["flops"]), "params": int(cost["params"]),
        "curve": curve, "stopped": out["stopped"], "nonfinite_steps": out["nonfinite_steps"],
        "first_step_s": out["first_step_s"], "step_s": out["step_s"],
        "weights": str((folder / WEIGHTS).relative_to(self.root)),
        "cost_s": round(time.perf_counter() - t0, 3)})
    return line


def _train(space, arch, data, cfg, key, workdir, **kw):
  from nas_jax.train import train_child  # pylint: disable=import-outside-toplevel
  return train_child(space, arch, data, cfg, key, workdir=workdir, return_variables=True, **kw)


def run_growth(ctx, method, k_strategy, k_search) -> list[dict[str, Any]]:
  """The checkpointed growth loop; returns one history record per trained model."""
  del k_strategy
  cfg = ctx.cfg
  template = {"key": jax.random.key(cfg["seed"])}
  fresh = {"saves": 0, "history_len": 0, "search_seconds": 0.0, "sessions": 0,
           "nonfinite_scores": 0, "search_nonfinite_steps": 0}
  state, meta, records, pending = resume_lib.restore(ctx, template, fresh)
  jobs = _Jobs(ctx, method, k_search)
  for line in list(pending):  # written after the last checkpoint: complete, weights on disk
    if (jobs.root / str(line.get("weights", ""))).is_file() and line.get("index") == len(records):
      records.append(line)
      pending.remove(line)
    else:
      break
  resume_lib.drop_pending(ctx, records, pending, "their weights are missing")
  if meta["saves"] == 0 and not records:
    log.info("starting petridish on %s/%s, %d models, seed %d in %s", config_lib.space_label(cfg), cfg["dataset"],
             cfg["budget"], cfg["seed"], ctx.workdir)
  else:
    log.info("resuming with %d trained model(s)", len(records))
  meta["sessions"] += 1
  meta["history_len"] = len(records)
  ctx.meta = meta
  seconds0 = meta["search_seconds"]
  t0 = time.perf_counter()
  ctx.mark_setup_done(t0)

  def save():
    meta["search_seconds"] = round(seconds0 + time.perf_counter() - t0, 3)
    meta["saves"] += 1
    ctx.ckpt.save(meta["saves"], state, meta)

  if records and meta["history_len"] > 0 and meta["saves"] == 0:
    save()
  workers = 1  # one CPU trains one model at a time (see "Workers" in the module docstring)
  queue: collections.deque = collections.deque()
  bar = ctx.progress(cfg["budget"], len(records), "search", "model")
  try:
    while len(records) < cfg["budget"]:
      while len(queue) < workers and len(records) + len(queue) < cfg["budget"]:
        queue.append(jobs.plan(len(records) + len(queue), records))
      job = queue.popleft()
      line = jobs.run(job, records)
      if line["search_score"] is None:
        meta["nonfinite_scores"] += 1
      meta["search_nonfinite_steps"] += int(line.get("nonfinite_steps", 0))
      line["wall_time_s"] = round(seconds0 + time.perf_counter() - t0, 3)
      ctx.history.append([line])
      records.append(line)
      meta["history_len"] = len(records)
      save()
      log.info("model %d (%s of %s): valid_acc %s, flops %d, params %d, %s", line["index"], line["kind"],
               line["parent"], line["valid_acc"], line["flops"], line["params"], line["arch_id"])
      bar.update(1)
      bar.set_postfix(valid_acc=f"{line['valid_acc']}", flops=line["flops"])
  finally:
    bar.close()
  ctx.search_seconds = round(seconds0 + time.perf_counter() - t0, 3)
  write_frontier(ctx, records)
  return records


def write_frontier(ctx, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Writes ``pareto.json``, ``frontier_<j>.json`` and ``frontier.png``; returns the frontier."""
  idx = petridish_lib.pareto_front(records)
  hull = petridish_lib.frontier(records)
  front = [{**{k: records[i].get(k) for k in ("index", "arch_id", "parent", "flops", "params", "valid_acc",
                                              "genotype")}, "on_hull": i in hull} for i in idx]
  workdir_lib.write_json(ctx.workdir / "pareto.json", front)
  for m in front:
    workdir_lib.write_json(ctx.workdir / f"frontier_{m['index']}.json", {
        "space": ctx.cfg["space"], "space_options": ctx.cfg["space_options"], "genotype": m["genotype"],
        "arch_id": m["arch_id"],
        "arch": ctx.space.from_genotype(m["genotype"]).tolist(), "search_score": m["valid_acc"],
        "dataset": ctx.cfg["dataset"], "strategy": ctx.cfg["strategy"]["name"]})
  plot_frontier(records, idx, hull, ctx.workdir / "frontier.png",
                f"petridish on {ctx.cfg['dataset']}\n{len(records)} models, {len(idx)} on the Pareto "
                f"frontier, {len(hull)} on the lower convex hull")
  return front


def plot_frontier(records: list[dict[str, Any]], front: list[int], hull: list[int], path: pathlib.Path,
                  title: str) -> None:
  """Validation error (%) against FLOPs of every model, parent -> child arrows, frontier and hull marked."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6, 4))
  ok = [r for r in records if r.get("valid_acc") is not None]
  for r in ok:
    p = r.get("parent")
    if p is not None and records[p].get("valid_acc") is not None:
      ax.annotate("", xy=(r["flops"], 100 - r["valid_acc"]),
                  xytext=(records[p]["flops"], 100 - records[p]["valid_acc"]),
                  arrowprops={"arrowstyle": "->", "color": "0.8", "lw": 0.8})
  ax.scatter([r["flops"] for r in ok], [100 - r["valid_acc"] for r in ok], s=14, c="0.4", label="trained models")
  fx = [records[i]["flops"] for i in front]
  fy = [100 - records[i]["valid_acc"] for i in front]
  ax.step(fx, fy, "-o", where="post", color="tab:red", ms=5, label="Pareto frontier")
  ax.plot([records[i]["flops"] for i in hull], [100 - records[i]["valid_acc"] for i in hull], "--",
          color="tab:blue", lw=1, label="lower convex hull (parents)")
  for i in front:
    ax.annotate(str(i), (records[i]["flops"], 100 - records[i]["valid_acc"]), fontsize=7,
                xytext=(3, 3), textcoords="offset points")
  ax.set_xscale("log")
  ax.set_xlabel("FLOPs (multiply-adds per image)")
  ax.set_ylabel("validation error (%)")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
