"""What the command-line scripts of this folder share."""
from __future__ import annotations

import argparse
from typing import Any


class OneLineErrorParser(argparse.ArgumentParser):
  """An ``ArgumentParser`` whose usage errors are one line on stderr and exit code 2.

  Example:
      >>> import contextlib, io
      >>> p, err = OneLineErrorParser(prog="run.py"), io.StringIO()
      >>> with contextlib.redirect_stderr(err):
      ...   try:
      ...     p.parse_args(["--nope"])
      ...   except SystemExit as e:
      ...     print(e.code)
      2
      >>> print(err.getvalue(), end="")
      run.py: error: unrecognized arguments: --nope (see --help)
  """

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def set_value(assignments: list[str] | None, field: str) -> str | None:
  """The text of the last ``--set FIELD=VALUE`` for ``field`` (None: not set).

  Example:
      >>> set_value(["dataset=ptb", "seed=1", "dataset=digits"], "dataset")
      'digits'
  """
  values = [a.partition("=")[2].strip() for a in (assignments or []) if a.partition("=")[0].strip() == field]
  return values[-1] if values else None


def fit_final_to_task(config: dict[str, Any], dataset: Any) -> dict[str, Any]:
  """The built-in config (configs/default.py and configs/<strategy>.py) for ``dataset``'s task.

  Their ``final`` group is a final-training recipe for images (the digits one);
  on another task (Penn Treebank) only its length (``epochs``) is kept and the
  task's own defaults do the rest. Call it before merging the user's settings
  (a run's config.json, ``--config``, ``--set``), which are checked strictly.
  ``dataset`` that is not a str is left to the config's validation.

  Example:
      >>> fit_final_to_task({"final": {"epochs": 60, "init_channels": 24}}, "ptb")
      {'final': {'epochs': 60}}
  """
  from nas_jax import tasks  # pylint: disable=import-outside-toplevel
  if isinstance(dataset, str) and tasks.task_for_dataset(dataset).name != "images":
    config = {**config, "final": {k: v for k, v in config["final"].items() if k == "epochs"}}
  return config
