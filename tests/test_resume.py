"""SIGKILL a search subprocess at random points, resume it, compare with an
uninterrupted run of the same seed (history.jsonl and result.json identical up
to the wall-clock fields)."""
from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

import experiment_doubles
from nas_jax import experiment

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUN = ROOT / "experiments" / "run.py"
BUDGET = 14


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  return experiment_doubles.write_synthetic_table(
      tmp_path_factory.mktemp("table") / "nb201_synthetic.csv.gz")


def config(table):
  return {"space": "nb201", "budget": BUDGET, "seed": 5,
          "strategy": {"name": "random", "batch_size": 1},
          "evaluator": {"name": "tabular", "tabular": {"benchmark_file": table}},
          "final": {"epochs": 0}, "checkpoint": {"interval_s": 0.0}}


def num_lines(path: pathlib.Path) -> int:
  try:
    return path.read_bytes().count(b"\n")
  except FileNotFoundError:
    return 0


def start(config_file, workdir, env):
  return subprocess.Popen([sys.executable, str(RUN), "--config", str(config_file),
                           "--workdir", str(workdir), "--quiet"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)


def wait_for_lines(proc, history, n, timeout=240.0):
  """Waits until history has >= n lines; False if the process ended first."""
  t_end = time.monotonic() + timeout
  while time.monotonic() < t_end:
    if num_lines(history) >= n:
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.01)
  proc.kill()
  raise AssertionError(f"no progress to {n} history lines in {timeout} s")


def without_wall_time(line: str) -> str:
  """The line's bytes before its last field, wall_time_s (the only timing)."""
  head, sep, _ = line.rpartition(', "wall_time_s": ')
  assert sep, line
  return head


def test_sigkill_at_random_points_then_resume_matches_uninterrupted(table, tmp_path):
  seed = int(os.environ.get("NAS_JAX_KILL_SEED", time.time_ns() % 10**6))
  rng = random.Random(seed)
  ref = tmp_path / "reference"
  experiment.run_experiment(experiment.merge(experiment.default_config(), config(table)), ref,
                            quiet=True)
  config_file = tmp_path / "config.py"
  config_file.write_text(f"def get_config():\n  return {config(table)!r}\n")
  workdir = tmp_path / "killed"
  env = {**os.environ, "NAS_JAX_COMPILE_CACHE": str(tmp_path / "xla_cache")}
  history = workdir / "history.jsonl"
  kills = []
  # kill 1: once a few lines are on disk; kill 2: a random moment after the
  # resumed run made progress (mid-round, mid-checkpoint or mid-write).
  for target, delay in ((3, 0.0), (None, rng.uniform(0.0, 0.8))):
    before = num_lines(history)
    proc = start(config_file, workdir, env)
    if wait_for_lines(proc, history, target or before + 1):
      time.sleep(delay)
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      kills.append((num_lines(history), delay))
    else:
      out, err = proc.communicate()
      assert proc.returncode == 0, err.decode()[-2000:]
  assert kills and kills[0][0] >= 3, kills
  assert kills[0][0] < BUDGET, "the first kill came after the search ended; raise BUDGET"
  done = subprocess.run([sys.executable, str(RUN), "--config", str(config_file),
                         "--workdir", str(workdir), "--quiet"], capture_output=True, cwd=ROOT,
                        env=env)
  assert done.returncode == 0, done.stderr.decode()[-2000:]
  assert "best search score" in done.stdout.decode()
  info = f"kill seed {seed} (NAS_JAX_KILL_SEED), kills (lines, delay) {kills}"
  got = (workdir / "history.jsonl").read_text().splitlines()
  want = (ref / "history.jsonl").read_text().splitlines()
  assert len(got) == len(want) == BUDGET, info
  assert [without_wall_time(l) for l in got] == [without_wall_time(l) for l in want], info
  got_result = json.loads((workdir / "result.json").read_text())
  want_result = json.loads((ref / "result.json").read_text())
  assert experiment.strip_wall_clock(got_result) == experiment.strip_wall_clock(want_result), info
  assert got_result["search_cost_s"] == want_result["search_cost_s"], info  # simulated: exact
  assert got_result["resumed_sessions"] >= 1, info
  assert (workdir / "best_arch.json").read_text() == (ref / "best_arch.json").read_text()
  assert len([p for p in (workdir / "checkpoints").iterdir()]) == 2
