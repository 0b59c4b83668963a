"""Nothing written is recomputed or dropped: SIGKILL before the first checkpoint, SIGINT mid-run,
damaged lines, deleted checkpoints (nas_jax.runner.resume). The evaluator counts what it computes."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

import experiment_doubles
from nas_jax import runner

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUN = ROOT / "experiments" / "run.py"
BUDGET = 16


def config(sleep_s=0.05, **checkpoint):
  return {"space": "nb201", "budget": BUDGET, "seed": 2,
          "strategy": {"name": "evolution", "population_size": 4, "sample_size": 2},
          "evaluator": {"name": "test_counting", "test_counting": {"sleep_s": sleep_s}},
          "final": {"epochs": 0}, "checkpoint": {"interval_s": 30.0, **checkpoint}}


def cli_config():
  """``config()`` over the CLI's first layer, configs/default.py (its final recipe sizes the
  cost model), so runs through the library and through experiments/run.py are one experiment."""
  return runner.merge(runner.load_config_file(ROOT / "experiments" / "configs" / "default.py"),
                      config())


def count(path) -> int:
  try:
    return pathlib.Path(path).read_text().count("\n")
  except FileNotFoundError:
    return 0


def lines(workdir):
  return [l.rpartition(', "wall_time_s": ')[0]
          for l in (workdir / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  d = tmp_path_factory.mktemp("ref")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("NAS_JAX_TEST_COUNT_FILE", str(d / "count"))
    cfg = cli_config()
    result = runner.run_experiment(cfg, d / "run", quiet=True)
  assert count(d / "count") == BUDGET
  return d / "run", result


@pytest.fixture
def count_file(tmp_path, monkeypatch):
  monkeypatch.setenv("NAS_JAX_TEST_COUNT_FILE", str(tmp_path / "count"))
  return tmp_path / "count"


# The runs that a test interrupts: slow enough that the signal always lands mid-run (with 0.05 s
# per architecture the 11 evaluations after the 5th line took under a second, and on a busy CI
# machine the test process could be descheduled that long: the run finished before the signal).
SLOW = 0.5


def write_config(tmp_path, sleep_s=SLOW, **checkpoint):
  path = tmp_path / "config.py"
  path.write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                  "import experiment_doubles  # registers test_counting\n\n\n"
                  f"def get_config():\n  return {config(sleep_s, **checkpoint)!r}\n")
  return path


def start(config_file, workdir, tmp_path):
  return subprocess.Popen([sys.executable, str(RUN), "--config", str(config_file), "--workdir",
                           str(workdir), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          cwd=ROOT, env={**os.environ, "NAS_JAX_COMPILE_CACHE": str(tmp_path / "x")})


def wait_lines(proc, history, n, timeout=240):
  t_end = time.monotonic() + timeout
  while time.monotonic() < t_end and proc.poll() is None:
    if history.exists() and history.read_bytes().count(b"\n") >= n:
      return True
    time.sleep(0.01)
  return False


def finish(config_file, workdir, tmp_path):
  done = subprocess.run([sys.executable, str(RUN), "--config", str(config_file), "--workdir",
                         str(workdir), "--quiet"], capture_output=True, text=True, cwd=ROOT,
                        env={**os.environ, "NAS_JAX_COMPILE_CACHE": str(tmp_path / "x")})
  assert done.returncode == 0, done.stderr[-2000:]
  return done


def test_sigkill_before_the_first_checkpoint_loses_and_recomputes_nothing(reference, tmp_path, count_file):
  ref, ref_result = reference
  cfg_file = write_config(tmp_path)
  workdir = tmp_path / "run"
  proc = start(cfg_file, workdir, tmp_path)
  assert wait_lines(proc, workdir / "history.jsonl", 5), proc.communicate()[1][-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (workdir / "checkpoints").exists() or not any((workdir / "checkpoints").iterdir())
  written = len(lines(workdir))
  done = finish(cfg_file, workdir, tmp_path)
  assert f"{written} evaluation(s) written after the last checkpoint were replayed" in done.stderr
  assert lines(workdir) == lines(ref)
  assert count(count_file) == BUDGET  # computed once each, in all
  got = json.loads((workdir / "result.json").read_text())
  assert runner.strip_wall_clock(got) == runner.strip_wall_clock(ref_result)


def test_sigint_saves_a_checkpoint_and_the_rerun_finishes_the_same(reference, tmp_path, count_file):
  ref, _ = reference
  cfg_file = write_config(tmp_path)
  workdir = tmp_path / "run"
  proc = start(cfg_file, workdir, tmp_path)
  assert wait_lines(proc, workdir / "history.jsonl", 5), proc.communicate()[1][-2000:]
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err.decode()[-2000:]
  assert "interrupted: checkpoint saved after" in err.decode()
  assert any((workdir / "checkpoints").iterdir())
  finish(cfg_file, workdir, tmp_path)
  assert lines(workdir) == lines(ref)
  assert count(count_file) == BUDGET


def test_damage_and_deleted_checkpoints_fall_back_and_say_so(reference, tmp_path, count_file):
  ref, ref_result = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref, workdir)
  (workdir / "result.json").unlink()
  # A damaged line in the middle: lines after it are recomputed, those before replayed.
  text = (workdir / "history.jsonl").read_text().splitlines(keepends=True)
  text[9] = text[9][:20] + "\n"
  (workdir / "history.jsonl").write_text("".join(text))
  shutil.rmtree(workdir / "checkpoints")
  cfg = cli_config()
  import contextlib, io  # pylint: disable=import-outside-toplevel,multiple-imports
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    result = runner.run_experiment(cfg, workdir, quiet=True)
  assert "line 10 is not JSON; kept the 9 intact line(s)" in err.getvalue()
  assert "starting afresh from the 9 history line(s)" in err.getvalue()
  assert lines(workdir) == lines(ref)
  assert count(count_file) == BUDGET - 9
  assert runner.strip_wall_clock(result) == runner.strip_wall_clock(ref_result)


def test_a_finished_run_with_a_cut_history_is_repaired(reference, tmp_path, count_file):
  ref, ref_result = reference
  workdir = tmp_path / "run"
  shutil.copytree(ref, workdir)
  data = (workdir / "history.jsonl").read_bytes()
  (workdir / "history.jsonl").write_bytes(data[:-30])  # the last line cut
  cfg = cli_config()
  result = runner.run_experiment(cfg, workdir, quiet=True)
  assert lines(workdir) == lines(ref)
  assert count(count_file) == 1
  assert runner.strip_wall_clock(result) == runner.strip_wall_clock(ref_result)
