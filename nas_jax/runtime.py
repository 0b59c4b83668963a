"""Process set-up for the command-line entry points: transparent huge pages on CPU.

XLA:CPU allocates each program's temporary buffer (437 MB for a train step
of the benchmark nasnet supernet) with glibc ``malloc``, which maps fresh
memory for every step: 112 K page faults (0.45 s of kernel time) per step,
and every 4 MB activation spans 1,000 small pages, so strided passes (the
depthwise weight gradients reduce over the batch axis, 64 KB apart) miss the
TLB. Where the kernel's transparent huge pages are in ``madvise`` mode (the
Debian/Ubuntu default), glibc >= 2.35 backs large allocations with 2 MB pages
when the tunable ``glibc.malloc.hugetlb=1`` is set. glibc reads tunables at
process start only, so ``reexec_with_huge_pages`` restarts the interpreter with
it before anything else runs.

Measured (benchmark nasnet supernet, 8 cells, C=16, batch 64, 2-core CPU,
processes alternating; median step over 15-20 random architectures): mean
1.99 s over 6 runs without, 1.71 s over 7 runs with; kernel time 0.42-0.48 ->
0.09-0.20 s per step. ``benchmarks/supernet.py`` pairs, with / without: 1.87
/ 1.92 s and 1.65 / 1.81 s; ``--space nb201``: 1.04 / 1.24 s. The batched
evaluation (500-image forward passes in one call) does not change.

Set ``NAS_JAX_HUGE_PAGES=0`` to turn it off.

In a script::

    if __name__ == "__main__":
      runtime.reexec_with_huge_pages()   # first thing in main, before jax is imported
      sys.exit(main())

Example:
    >>> huge_pages_env({}, mode="madvise", glibc=(2, 36))  # what the restart adds
    {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'}
    >>> print(huge_pages_env({"NAS_JAX_HUGE_PAGES": "0"}, mode="madvise", glibc=(2, 36)))  # opted out
    None
"""
from __future__ import annotations

import os
import sys

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
OPT_OUT_VAR = "NAS_JAX_HUGE_PAGES"


def thp_mode(path: str = THP_MODE_FILE) -> str | None:
  """The kernel's transparent-huge-page mode ("always", "madvise", "never"), or None if unknown."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def glibc_version() -> tuple[int, int] | None:
  """``(major, minor)`` of the C library if it is glibc, else None."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    major, minor = version.split(".")[:2]
    return (int(major), int(minor)) if name == "glibc" else None
  except (AttributeError, ValueError, OSError, TypeError):
    return None


def _tunable_acts(mode: str | None, glibc: tuple[int, int] | None) -> bool:
  """Whether ``glibc.malloc.hugetlb=1`` changes anything: glibc >= 2.35 and THP mode "madvise"."""
  return glibc is not None and glibc >= (2, 35) and mode == "madvise"


def huge_pages_env(env: dict[str, str], *, mode: str | None, glibc: tuple[int, int] | None) -> dict[str, str] | None:
  """The environment to restart with, or None when a restart would not help.

  None when: the user opted out (``NAS_JAX_HUGE_PAGES=0``), the tunable is
  already set (which also stops a second restart), the C library is not glibc
  >= 2.35, or the kernel's mode is not "madvise" ("always" needs nothing,
  "never" allows nothing).
  """
  if env.get(OPT_OUT_VAR, "1") == "0" or "glibc.malloc.hugetlb" in env.get("GLIBC_TUNABLES", ""):
    return None
  if not _tunable_acts(mode, glibc):
    return None
  tunables = env.get("GLIBC_TUNABLES", "")
  return {**env, "GLIBC_TUNABLES": f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE}


def huge_pages_active() -> bool:
  """Whether this process runs with 2 MB pages for large allocations (or THP "always")."""
  mode = thp_mode()
  return mode == "always" or (_tunable_acts(mode, glibc_version())
                              and HUGE_PAGES_TUNABLE in os.environ.get("GLIBC_TUNABLES", ""))


def reexec_with_huge_pages() -> None:
  """Restarts the interpreter with huge pages for large allocations, if that helps here.

  Call it first in a script's ``__main__`` block: the process is replaced
  (same PID, same command line from ``sys.orig_argv``), so nothing done before
  survives. Does nothing when ``huge_pages_env`` says so, or inside an
  interactive session.
  """
  if not hasattr(sys, "orig_argv") or sys.flags.interactive or not sys.argv or not sys.argv[0]:
    return
  env = huge_pages_env(dict(os.environ), mode=thp_mode(), glibc=glibc_version())
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, sys.orig_argv, env)
  except OSError:  # cannot restart (e.g. no executable path): run as we are
    return
