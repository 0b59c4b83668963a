"""``--early-stop`` through the runner: stopped runs in the history, exact resume, bad input."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from experiment_doubles import load_cli
from nas_jax import experiment

EPOCHS = 6


def fake_train_child(space, arch, dataset, config, key, *, workdir=None, callbacks=(), **_):
  """A learning curve that rises towards a final accuracy set by the architecture."""
  digest = hashlib.sha1(space.arch_id(arch).encode()).digest()
  final = 60.0 + 35.0 * digest[0] / 255.0
  rate = 0.6 + digest[1] / 255.0
  curve, stopped = [], None
  for epoch in range(1, config["epochs"] + 1):
    acc = final * (1.0 - math.exp(-rate * epoch)) + 0.3 * (digest[2 + epoch] / 255.0 - 0.5)
    entry = {"epoch": epoch, "train_loss": 1.0 / epoch, "valid_loss": 2.0 - acc / 60.0,
             "train_acc": acc + 5.0 * (digest[12 + epoch] / 255.0 - 0.5), "valid_acc": acc, "seconds": 0.01}
    curve.append(entry)
    for cb in callbacks:
      reason = cb(epoch, dict(entry))
      if reason is not None:
        stopped = {"epoch": epoch, "reason": reason}
        break
    if stopped:
      break
  return {"curve": curve, "metric": "valid_acc", "test_acc": None, "test_loss": None,
          "stopped": stopped, "params": 100, "nonfinite_steps": 0, "steps_per_epoch": 1,
          "step_s": 0.0, "first_step_s": 0.0, "seconds": 0.01}


def config(**changes):
  cfg = experiment.merge(experiment.default_config(), {
      "space": "nb201", "budget": 30, "strategy": {"name": "random", "batch_size": 5},
      "evaluator": {"name": "scratch", "scratch": {
          "epochs": EPOCHS, "train_size": 200, "valid_size": 50, "test_size": 50,
          "early_stop": {"min_curves": 5, "refit_every": 5, "cv": 3, "n_search": 4,
                         "min_epoch": 2}}},
      "final": {"epochs": 0}, "checkpoint": {"interval_s": 0.0}})
  return experiment.merge(cfg, changes)


def lines(workdir):
  return [experiment.strip_wall_clock(json.loads(l))
          for l in (workdir / "history.jsonl").read_text().splitlines()]


@pytest.fixture
def fake_training(monkeypatch):
  from nas_jax import train
  monkeypatch.setattr(train, "train_child", fake_train_child)


def test_stopped_runs_are_marked_with_their_predicted_final_value(fake_training, tmp_path):
  experiment.run_experiment(config(), tmp_path / "run", quiet=True)
  history = lines(tmp_path / "run")
  stopped = [l for l in history if "stopped" in l]
  assert stopped, "no run was stopped"
  for l in stopped:
    s = l["stopped"]
    assert s["epoch"] < EPOCHS and len(l["curve"]) == s["epoch"]
    assert s["reason"].startswith(f"early stop at epoch {s['epoch']}")
    assert math.isfinite(s["predicted"]) and 0.0 <= s["prob_beats_best"] < 0.05
  # no run stops before min_curves runs completed
  assert all("stopped" not in l for l in history[:5])
  trained = sum(len(l["curve"]) for l in history)
  assert trained < len(history) * EPOCHS
  # the best completed run is never among the stopped ones
  complete = [l for l in history if "stopped" not in l]
  assert max(l["search_score"] for l in complete) >= max(l["search_score"] for l in stopped)


def test_resume_after_a_crash_keeps_the_same_decisions(fake_training, tmp_path, monkeypatch):
  experiment.run_experiment(config(), tmp_path / "straight", quiet=True)
  from nas_jax.checkpoint import SearchCheckpointer

  class Crash(Exception):
    pass

  real, calls = SearchCheckpointer.save, [0]

  def save(self, step, trees, meta):
    calls[0] += 1
    if calls[0] == 4:  # after round 4's history lines are written, before its checkpoint
      raise Crash()
    return real(self, step, trees, meta)

  monkeypatch.setattr(SearchCheckpointer, "save", save)
  with pytest.raises(Crash):
    experiment.run_experiment(config(), tmp_path / "resumed", quiet=True)
  monkeypatch.setattr(SearchCheckpointer, "save", real)
  experiment.run_experiment(config(), tmp_path / "resumed", quiet=True)
  assert lines(tmp_path / "resumed") == lines(tmp_path / "straight")


def test_cli_flag_sets_the_stopper_and_rejects_a_supernet(tmp_path):
  run = load_cli("run")
  args = run.make_parser().parse_args(["--strategy", "random", "--evaluator", "scratch",
                                       "--early-stop", "0.01"])
  assert run.build_config(args)["evaluator"]["scratch"]["early_stop"] == {"delta": 0.01}
  args = run.make_parser().parse_args(["--strategy", "random", "--evaluator", "scratch",
                                       "--early-stop"])
  assert run.build_config(args)["evaluator"]["scratch"]["early_stop"] is True
  args = run.make_parser().parse_args(["--strategy", "random", "--early-stop"])
  with pytest.raises(ValueError, match="--early-stop stops candidates trained from scratch, but "
                                       "the evaluator is 'supernet'; add --evaluator scratch"):
    run.build_config(args)


@pytest.mark.parametrize("setting, message", [
    ({"delta": 1.5}, r"delta must be a probability in \(0, 1\)"),
    ({"deltta": 0.1}, r"unknown early_stop setting\(s\) \['deltta'\]"),
    ("yes", r"early_stop must be true, false or a dict"),
])
def test_bad_early_stop_settings_are_one_line_errors(setting, message, tmp_path):
  cfg = config()
  cfg["evaluator"]["scratch"]["early_stop"] = setting
  with pytest.raises(ValueError, match=message):
    experiment.run_experiment(cfg, tmp_path / "run", quiet=True)
  assert not (tmp_path / "run" / "history.jsonl").exists()


def hyperband_config(**settings):
  cfg = config(budget=15)
  cfg["evaluator"]["scratch"]["early_stop"] = True
  cfg["evaluator"]["scratch"]["early_stop_settings"] = {
      "rule": "hyperband", "eta": 3, "min_curves": 3, "refit_every": 5, "cv": 3, "n_search": 4, **settings}
  return cfg


@pytest.mark.parametrize("settings", [{}, {"predict": False, "rank_by": "train"}])
def test_hyperband_schedule_through_the_runner_and_its_resume(settings, fake_training, tmp_path, monkeypatch):
  """early_stop_settings.rule=hyperband: rung stops in the history; a crashed search resumes to the same lines."""
  experiment.run_experiment(hyperband_config(**settings), tmp_path / "straight", quiet=True)
  history = lines(tmp_path / "straight")
  stopped = [l for l in history if "stopped" in l]
  assert stopped and all("successive halving" in l["stopped"]["reason"] for l in stopped)
  assert {l["stopped"]["epoch"] for l in stopped} <= {2}  # R = 6, eta = 3: the one rung, 6 / 3
  assert any("predicted" in l["stopped"] for l in stopped)  # once 3 runs completed
  ranked_by = "train_acc " if settings else "predicted final valid_acc"
  assert all(ranked_by in l["stopped"]["reason"] for l in stopped if "predicted" in l["stopped"])
  assert all("prob_beats_best" not in l["stopped"] for l in stopped)
  from nas_jax.checkpoint import SearchCheckpointer

  class Crash(Exception):
    pass

  real, calls = SearchCheckpointer.save, [0]

  def save(self, step, trees, meta):
    calls[0] += 1
    if calls[0] == 2:  # after round 2's history lines, before its checkpoint
      raise Crash()
    return real(self, step, trees, meta)

  monkeypatch.setattr(SearchCheckpointer, "save", save)
  with pytest.raises(Crash):
    experiment.run_experiment(hyperband_config(**settings), tmp_path / "resumed", quiet=True)
  monkeypatch.setattr(SearchCheckpointer, "save", real)
  experiment.run_experiment(hyperband_config(**settings), tmp_path / "resumed", quiet=True)
  assert lines(tmp_path / "resumed") == history


def test_early_stop_settings_apply_only_when_stopping_is_on(fake_training, tmp_path):
  cfg = config()
  cfg["evaluator"]["scratch"]["early_stop"] = False
  cfg["evaluator"]["scratch"]["early_stop_settings"] = {"min_curves": 5, "delta": 0.5}
  experiment.run_experiment(cfg, tmp_path / "off", quiet=True)
  assert not any("stopped" in l for l in lines(tmp_path / "off"))
  cfg["evaluator"]["scratch"]["early_stop_settings"] = {"rule": "hyperband", "delta": 0.5}
  cfg["evaluator"]["scratch"]["early_stop"] = True
  with pytest.raises(ValueError, match=r"unknown early_stop setting\(s\) \['delta'\] for rule 'hyperband'"):
    experiment.run_experiment(cfg, tmp_path / "bad", quiet=True)
