"""Resuming a search: which checkpoint, which history lines, and what is fed back.

Nothing already written to ``history.jsonl`` is lost or recomputed when that
can be avoided:

1. The history is read up to its first damaged line (a line cut by a kill,
   an edit gone wrong); the damaged tail is cut off, and said so on the
   console unless it was just a line cut by a kill.
2. The newest checkpoint that covers no more lines than are intact is
   restored (a checkpoint ahead of a damaged history falls back to an older
   one, and the console says so); with none, the search starts afresh.
3. Lines beyond the restored checkpoint are *pending*. The ask/tell loop
   replays them: the strategy asks again with the same round keys, gets the
   same architectures, and is told the recorded scores without evaluating
   them again (``replay``). That needs an evaluator whose state does not
   change (``Evaluator.replayable``: table look-ups, training from scratch);
   a supernet's shared weights cannot be rebuilt from the history, so there
   the pending lines are recomputed, and the console says how many and why.
   The one-shot loop recomputes its pending epochs likewise.

``restore(ctx, template, fresh_meta)`` is called by ``run_experiment``;
rerunning an experiment in its workdir is all it takes.

Example:
    A run whose history was cut by a kill after 6 lines, rerun:

    >>> from nas_jax import runner
    >>> config = runner.merge(runner.default_config(), {"space": "nb201", "budget": 10})
    >>> first = runner.run_experiment(config, "runs/demo", quiet=True)
    >>> lines = open("runs/demo/history.jsonl").readlines()
    >>> with open("runs/demo/history.jsonl", "w") as f:
    ...   _ = f.write("".join(lines[:6]) + '{"index": 6, "rou')  # a line cut mid-write
    >>> again = runner.run_experiment(config, "runs/demo", quiet=True)  # 6 lines replayed, 4 asked
    >>> runner.strip_wall_clock(again) == runner.strip_wall_clock(first)
    True
    >>> len(open("runs/demo/history.jsonl").readlines())
    10
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("nas_jax.experiment")


def restore(ctx, template: dict[str, Any], fresh_meta: dict[str, Any]):
  """Restores the newest checkpoint that fits the intact history.

  Args:
    ctx: the run's ``RunContext`` (``ckpt``, ``history``, ``notice``).
    template: the state of a fresh start (its structure restores checkpoints).
    fresh_meta: the loop's meta record of a fresh start.

  Returns:
    ``(state, meta, records, pending)``: the restored (or fresh) state and
    meta, the history records the checkpoint covers, and the intact records
    after them (still in the file).

  Raises:
    ValueError: a checkpoint of another experiment.
  """
  intact, damage = ctx.history.read()
  if damage is not None:
    cut = ctx.history.truncate(len(intact))
    if "incomplete" in damage and len(intact) == _lines_in(ctx):
      log.info("history: dropped a line cut while it was written (%d bytes)", cut)
    else:
      ctx.notice(f"{ctx.history.path.name}: {damage}; kept the {len(intact)} intact line(s) "
                 f"before it and cut the rest ({cut} bytes)")
  steps = ctx.ckpt.steps()
  chosen = None
  for i, step in enumerate(reversed(steps)):
    try:
      restored = ctx.ckpt.restore(template, step)
    except ValueError as e:
      if "another experiment" in str(e):
        raise
      ctx.notice(f"checkpoint {step} is unreadable ({str(e).split('; ')[0]}); "
                 + ("trying the one before" if i < len(steps) - 1 else "starting afresh"))
      continue
    meta = restored[1]
    if meta["history_len"] <= len(intact):
      chosen = restored
      if i:
        ctx.notice(f"resuming from checkpoint {step} ({meta['history_len']} evaluation(s)): the "
                   "newer one covers history lines that are damaged or missing")
      break
  if chosen is None:
    if steps:
      ctx.notice(f"no checkpoint fits the {len(intact)} intact history line(s); starting afresh")
    elif intact:
      ctx.notice(f"no checkpoint: starting afresh from the {len(intact)} history line(s) on disk")
    state, meta = template, dict(fresh_meta)
  else:
    state, meta = chosen
  n = meta["history_len"]
  return state, meta, intact[:n], intact[n:]


def _lines_in(ctx) -> int:
  """The number of newline-terminated lines in the history file."""
  try:
    return ctx.history.path.read_bytes().count(b"\n")
  except FileNotFoundError:
    return 0


def drop_pending(ctx, records: list[dict[str, Any]], pending: list[dict[str, Any]], why: str) -> None:
  """Cuts the pending lines from the file (they will be recomputed) and says why."""
  if pending:
    ctx.history.truncate(len(records))
    ctx.notice(f"recomputing {len(pending)} evaluation(s) written after the last checkpoint: {why}")
    pending.clear()


def replayable_round(space, archs: np.ndarray, pending: list[dict[str, Any]]) -> bool:
  """Whether the next pending lines are exactly this round's architectures."""
  if len(pending) < len(archs):
    return False
  return all(space.arch_id(a) == line.get("arch_id") for a, line in zip(archs, pending))


def recorded_scores(lines: list[dict[str, Any]]) -> np.ndarray:
  """The search scores of history lines (None -> NaN)."""
  return np.asarray([np.nan if l.get("search_score") is None else float(l["search_score"])
                     for l in lines], np.float64)
