"""The workdir: its claim by one experiment, atomic JSON files, the history and run.log.

``claim_workdir`` writes ``config.json`` (or checks that the workdir holds the
same experiment); ``History`` is ``history.jsonl``, appended line by line with
fsync and cut back to what a checkpoint covers on resume; ``write_json``
writes a file atomically; ``log_to(workdir)`` sends the library's log to
``run.log`` for the duration of a run.

Example:
    >>> history = History(pathlib.Path("history.jsonl"))
    >>> history.append([{"index": 0, "search_score": 1.0}, {"index": 1, "search_score": 2.0}])
    >>> history.reconcile(1)  # a checkpoint covers one line: the rest is cut off
    [{'index': 0, 'search_score': 1.0}]
    >>> history.read()
    ([{'index': 0, 'search_score': 1.0}], None)
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
from typing import Any, Iterator

from nas_jax.checkpoint import write_json  # noqa: F401  (the runner's files: workdir_lib.write_json)
from nas_jax.runner import config as config_lib

log = logging.getLogger("nas_jax.experiment")


def claim_workdir(workdir: pathlib.Path, cfg: dict[str, Any]) -> None:
  """Writes config.json, or checks that the workdir holds this experiment."""
  if workdir.exists() and not workdir.is_dir():
    raise ValueError(f"--workdir {workdir} is a file; give a directory (new or of this experiment)")
  workdir.mkdir(parents=True, exist_ok=True)
  path = workdir / "config.json"
  if path.exists():
    try:
      saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
      raise ValueError(f"{path} is unreadable ({e}); use a fresh --workdir") from None
    if not isinstance(saved, dict):
      raise ValueError(f"{path} does not hold an experiment config; use a fresh --workdir")
    # a config.json written before space_options existed has none: {} (the default)
    same = lambda c: {"space_options": {}, **config_lib.identity(c)}
    diffs = config_lib.diff(same(saved), same(cfg))
    if diffs:
      raise ValueError(f"workdir {workdir} holds another experiment (differs in "
                       f"{'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); "
                       "use another --workdir or the same settings to resume")
    if saved != cfg:
      write_json(path, cfg)  # e.g. a new data_dir
    return
  leftovers = [p.name for p in workdir.iterdir()
               if not p.name.startswith(".") and p.name != "config.json.tmp"]
  if leftovers:
    raise ValueError(f"workdir {workdir} is not empty and holds no config.json "
                     f"(found {sorted(leftovers)[:3]}); use an empty or new --workdir")
  write_json(path, cfg)


class History:
  """history.jsonl: appended with fsync; read back up to the first damaged line.

  A line is intact when it is complete (ends with a newline) and holds a JSON
  object; everything from the first line that is not is *damage* (a line cut
  by a kill, an edit gone wrong) and is cut off when the run resumes.
  """

  def __init__(self, path: pathlib.Path):
    self.path = path

  def read(self) -> tuple[list[dict[str, Any]], str | None]:
    """``(intact records, damage)``: ``damage`` describes the first bad line, or is None."""
    data = self.path.read_bytes() if self.path.exists() else b""
    records, start, line_no = [], 0, 0
    while start < len(data):
      line_no += 1
      end = data.find(b"\n", start)
      if end < 0:
        return records, f"line {line_no} is incomplete (cut while it was written)"
      try:
        record = json.loads(data[start:end])
      except (ValueError, UnicodeDecodeError):
        return records, f"line {line_no} is not JSON"
      if not isinstance(record, dict):
        return records, f"line {line_no} is not a JSON object"
      records.append(record)
      start = end + 1
    return records, None

  def truncate(self, n: int) -> int:
    """Keeps the first ``n`` lines; returns the number of bytes cut off."""
    if not self.path.exists():
      return 0
    data = self.path.read_bytes()
    keep = 0
    for _ in range(n):
      end = data.find(b"\n", keep)
      if end < 0:
        raise ValueError(f"{self.path} has fewer than {n} lines")
      keep = end + 1
    if keep != len(data):
      with open(self.path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return len(data) - keep

  def reconcile(self, n: int) -> list[dict[str, Any]]:
    """Keeps the first ``n`` lines (those a checkpoint covers) and returns them.

    Raises:
      ValueError: fewer than ``n`` intact lines.
    """
    records, damage = self.read()
    if len(records) < n:
      raise ValueError(f"{self.path}: {damage or 'too few lines'}, but the checkpoint covers "
                       f"{n} line(s); the workdir is damaged")
    cut = self.truncate(n)
    if cut:
      log.info("history: dropping %d byte(s) written after the last checkpoint", cut)
    return records[:n]

  def append(self, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    with open(self.path, "ab") as f:
      f.write(text.encode())
      f.flush()
      os.fsync(f.fileno())


@contextlib.contextmanager
def log_to(workdir: pathlib.Path) -> Iterator[None]:
  """Sends the ``nas_jax`` loggers to ``workdir/run.log`` (INFO) for the block.

  The console shows progress bars only; the log does not propagate to the
  root logger while the block runs.
  """
  handler = logging.FileHandler(workdir / "run.log")
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
  root = logging.getLogger("nas_jax")
  root.addHandler(handler)
  old_level, old_propagate = root.level, root.propagate
  if root.level == logging.NOTSET or root.level > logging.INFO:
    root.setLevel(logging.INFO)
  root.propagate = False
  try:
    yield
  finally:
    root.removeHandler(handler)
    root.setLevel(old_level)
    root.propagate = old_propagate
    handler.close()
