"""The runner's one-shot loop (nas_jax.runner.oneshot) with a cheap one-shot method.

History: one line per epoch; resume after SIGKILL at random points (also in the
middle of an epoch) writes the same history and result as an uninterrupted run.
"""
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
from nas_jax import runner

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUN = ROOT / "experiments" / "run.py"
EPOCHS = 6


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  return experiment_doubles.write_synthetic_table(
      tmp_path_factory.mktemp("table") / "nb201_synthetic.csv.gz")


def config(table, **strategy):
  return {"space": "nb201", "budget": EPOCHS, "seed": 3,
          "strategy": {"name": "test_toy_oneshot", "steps_per_epoch": 7, **strategy},
          "evaluator": {"name": "auto", "tabular": {"benchmark_file": table}},
          "final": {"epochs": 0}, "checkpoint": {"interval_s": 0.0}}


def test_history_has_one_line_per_epoch_and_the_result_the_last_derived_arch(table, tmp_path):
  cfg = runner.merge(runner.default_config(), config(table, lr=0.002))
  result = runner.run_experiment(cfg, tmp_path / "run", quiet=True)
  lines = [json.loads(l) for l in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
  assert [l["epoch"] for l in lines] == list(range(1, EPOCHS + 1))
  assert [l["index"] for l in lines] == list(range(EPOCHS))
  for l in lines:
    assert {"arch_id", "genotype", "search_score", "metrics", "train", "arch_params", "flops",
            "params", "wall_time_s"} <= set(l)
    assert set(l["train"]) == {"train_loss", "grad_norm"}
    assert list(l)[-1] == "wall_time_s"
  # The toy method learns its target ops, so the derived arch's score rises to 100.
  assert lines[-1]["search_score"] == 100.0 > lines[0]["search_score"]
  assert result["kind"] == "oneshot" and result["evaluator"] is None
  assert result["best_index"] == EPOCHS - 1 and result["best_arch_id"] == lines[-1]["arch_id"]
  assert result["num_evaluations"] == EPOCHS
  # nb201 has a table: the derived arch's figures are looked up there, kept apart from the final
  # training (none here: final.epochs = 0).
  assert result["final_source"] == "none (final.epochs = 0)" and result["final_test_acc"] is None
  assert result["benchmark_report"]["test_acc"] > 0 and "arch_str" in result["benchmark_report"]
  assert result["arch_params"] == lines[-1]["arch_params"]
  assert result["pareto"] and all(p["flops"] > 0 for p in result["pareto"])
  for name in ("search.png", "pareto.png", "best_arch.json", "result.json"):
    assert (tmp_path / "run" / name).is_file(), name


def test_epochs_setting_must_match_the_budget(table, tmp_path):
  cfg = runner.merge(runner.default_config(), config(table, epochs=3))
  with pytest.raises(ValueError, match="the budget is the number of epochs"):
    runner.run_experiment(cfg, tmp_path / "run", quiet=True)
  assert not (tmp_path / "run").exists()


def num_lines(path: pathlib.Path) -> int:
  try:
    return path.read_bytes().count(b"\n")
  except FileNotFoundError:
    return 0


def without_wall_time(line: str) -> str:
  head, sep, _ = line.rpartition(', "wall_time_s": ')
  assert sep, line
  return head


def test_sigkill_at_random_points_then_resume_matches_uninterrupted(table, tmp_path):
  seed = int(os.environ.get("NAS_JAX_KILL_SEED", time.time_ns() % 10**6))
  rng = random.Random(seed)
  cfg = config(table, sleep_s=0.02)
  ref = tmp_path / "reference"
  runner.run_experiment(runner.merge(runner.default_config(), cfg), ref, quiet=True)
  config_file = tmp_path / "config.py"
  config_file.write_text(
      f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
      "import experiment_doubles  # registers test_toy_oneshot\n\n\n"
      f"def get_config():\n  return {cfg!r}\n")
  workdir = tmp_path / "killed"
  history = workdir / "history.jsonl"
  env = {**os.environ, "NAS_JAX_COMPILE_CACHE": str(tmp_path / "xla_cache")}
  kills = []
  for target in (1, None):
    before = num_lines(history)
    proc = subprocess.Popen([sys.executable, str(RUN), "--config", str(config_file),
                             "--workdir", str(workdir), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    t_end = time.monotonic() + 240
    while num_lines(history) < (target or before + 1) and proc.poll() is None:
      assert time.monotonic() < t_end, "no progress"
      time.sleep(0.01)
    if proc.poll() is None:
      delay = rng.uniform(0.0, 0.1)  # mid-epoch: a step takes 0.02 s, an epoch 0.14 s
      time.sleep(delay)
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      kills.append((num_lines(history), round(delay, 3)))
    else:
      _, err = proc.communicate()
      assert proc.returncode == 0, err.decode()[-2000:]
  info = f"kill seed {seed} (NAS_JAX_KILL_SEED), kills (lines, delay) {kills}"
  assert kills and kills[0][0] < EPOCHS, info
  done = subprocess.run([sys.executable, str(RUN), "--config", str(config_file),
                         "--workdir", str(workdir), "--quiet"], capture_output=True, cwd=ROOT,
                        env=env)
  assert done.returncode == 0, done.stderr.decode()[-2000:]
  got = (workdir / "history.jsonl").read_text().splitlines()
  want = (ref / "history.jsonl").read_text().splitlines()
  assert len(got) == len(want) == EPOCHS, info
  assert [without_wall_time(l) for l in got] == [without_wall_time(l) for l in want], info
  got_result = json.loads((workdir / "result.json").read_text())
  want_result = json.loads((ref / "result.json").read_text())
  assert runner.strip_wall_clock(got_result) == runner.strip_wall_clock(want_result), info
  assert got_result["resumed_sessions"] >= 1, info
