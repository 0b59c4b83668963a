"""What the command-line scripts of this folder share."""
from __future__ import annotations

import argparse


class OneLineErrorParser(argparse.ArgumentParser):
  """An ``ArgumentParser`` whose usage errors are one line on stderr and exit code 2.

  Example:
      >>> p = OneLineErrorParser(prog="run.py")
      >>> p.parse_args(["--nope"])   # prints "run.py: error: unrecognized arguments: --nope (see --help)"
  """

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
