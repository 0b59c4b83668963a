"""Resuming BayesNAS compression (``nas_jax.oneshot.bayesnas_compress.compress(checkpoint_dir=...)``).

A run interrupted at any of its progress lines (by raising ``KeyboardInterrupt``
from the ``log`` callback, as Ctrl-C would) and resumed returns the report of
an uninterrupted run and runs none of the saved training steps again (the
jitted steps are counted). Tiny settings: 128 digits, batches of 32, a
threshold on ``gamma`` high enough that units are pruned in every iteration.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import pytest

import experiment_doubles
import nas_jax.data
from nas_jax.oneshot import bayesnas_compress as bc

ROOT = pathlib.Path(__file__).resolve().parent.parent
CFG = {"train_size": 128, "batch_size": 32, "pretrain_epochs": 1, "outer_iterations": 3, "finetune_epochs": 1,
       "hessian_samples": 32, "lam": 0.5, "prune_threshold": 2.0, "target_pruned": None}
STEPS = 128 // 32  # jitted training steps per epoch
CLI_SETTINGS = [f"{k}={v}" for k, v in CFG.items()]


@pytest.fixture(scope="module")
def data():
  return nas_jax.data.load_dataset("digits")


def run(data, cfg, stop=None, **kwargs):
  """``compress`` with its progress lines and jitted-call counts; ``stop``: raise KeyboardInterrupt at that line."""
  lines, calls = [], {}
  real_jit = jax.jit

  def counting_jit(f, *a, **kw):
    jitted, name = real_jit(f, *a, **kw), getattr(f, "__name__", repr(f))

    def call(*args, **kwargs):
      calls[name] = calls.get(name, 0) + 1
      return jitted(*args, **kwargs)
    return call

  def log(line):
    lines.append(line)
    if stop and line.startswith(stop):
      raise KeyboardInterrupt

  bc.jax.jit = counting_jit  # the compress module's jax is jax: restored below
  try:
    report = bc.compress(data, cfg, log=log, **kwargs)
  except KeyboardInterrupt:
    report = None
  finally:
    bc.jax.jit = real_jit
  return report, lines, calls


def untimed(lines):
  return [line.rpartition(" (")[0] for line in lines]


def snapshot(folder):
  return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(pathlib.Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(data):
  report, lines, calls = run(data, CFG)
  assert calls["step"] == (1 + 3 + 1) * STEPS and calls["hess"] == 3
  assert report["units_kept"]["conv1"] < 6 and len({c["pruned_fraction"] for c in report["curve"]}) > 1
  return report, lines


@pytest.mark.parametrize("stop,done_iterations", [("dense", 0), ("outer iteration 2", 2), ("pruned", 3)])
def test_interrupted_run_resumes_to_the_uninterrupted_report(data, reference, tmp_path, stop, done_iterations):
  ref_report, ref_lines = reference
  ckpt = tmp_path / "checkpoints"
  report, first, _ = run(data, CFG, stop=stop, checkpoint_dir=ckpt)
  assert report is None and first[-1].startswith(stop)
  report, second, calls = run(data, CFG, checkpoint_dir=ckpt)
  assert report == ref_report
  # nothing lost, nothing redone: the two sessions' progress lines are the reference's, each once
  assert untimed(first + second[1:]) == untimed(ref_lines)
  if stop == "pruned":  # finished: the saved report, nothing run
    assert second[0].startswith("finished earlier") and len(second) == 1 and not calls
  else:
    assert second[0].startswith(f"resumed from checkpoint {done_iterations + 1} in {ckpt}: outer iteration "
                                f"{done_iterations} of 3 done")
    assert calls["step"] == (3 - done_iterations + 1) * STEPS and calls["hess"] == 3 - done_iterations
  again, third, calls = run(data, CFG, checkpoint_dir=ckpt)
  assert again == ref_report and len(third) == 1 and not calls


def test_target_reached_before_the_interruption_goes_straight_to_fine_tuning(data, tmp_path):
  cfg = {**CFG, "target_pruned": 0.2}  # reached at the first outer iteration of three
  ref, ref_lines, _ = run(data, cfg)
  assert len(ref["curve"]) == 1
  ckpt = tmp_path / "checkpoints"
  assert run(data, cfg, stop="outer iteration 1", checkpoint_dir=ckpt)[0] is None
  report, lines, calls = run(data, cfg, checkpoint_dir=ckpt)
  assert report == ref and untimed(lines[1:]) == untimed(ref_lines[-1:])
  assert calls["step"] == STEPS and "hess" not in calls  # the fine-tuning epoch only


def test_checkpoints_inside_the_dense_training_and_the_fine_tuning(data, tmp_path):
  cfg = {**CFG, "pretrain_epochs": 2, "outer_iterations": 2, "finetune_epochs": 2}
  ref, ref_lines, _ = run(data, cfg)
  ckpt = tmp_path / "checkpoints"
  # every_s=0: a checkpoint after every epoch; the last one is removed as if the process died writing it
  assert run(data, cfg, stop="dense", checkpoint_dir=ckpt, checkpoint_every_s=0)[0] is None
  assert sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) == [1, 2]  # epoch 1; dense done
  shutil.rmtree(ckpt / "2")
  report, lines, calls = run(data, cfg, checkpoint_dir=ckpt, checkpoint_every_s=0)
  assert report == ref and "dense training epoch 1 of 2 done" in lines[0]
  assert untimed(lines[1:]) == untimed(ref_lines) and calls["step"] == (1 + 2 + 2) * STEPS
  last = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  shutil.rmtree(ckpt / str(last))
  report, lines, calls = run(data, cfg, checkpoint_dir=ckpt, checkpoint_every_s=0)
  assert report == ref and "fine-tuning epoch 1 of 2 done" in lines[0] and calls["step"] == STEPS


def test_other_settings_or_data_are_refused_and_nothing_changes(data, tmp_path):
  ckpt = tmp_path / "checkpoints"
  run(data, CFG, stop="outer iteration 1", checkpoint_dir=ckpt)
  before = snapshot(ckpt)
  with pytest.raises(ValueError, match=r"other settings \(lam 0.5 -> 0.6\); use a fresh --workdir"):
    bc.compress(data, {**CFG, "lam": 0.6}, checkpoint_dir=ckpt)
  other = nas_jax.data.load_dataset("digits", train_size=1000, valid_fraction=0.5, seed=0)
  with pytest.raises(ValueError, match=r"other settings \(data .digits: .* -> .digits: .*\); use a fresh --workdir"):
    bc.compress(other, CFG, checkpoint_dir=ckpt)
  (ckpt / "settings.json").unlink()  # without the record, the fingerprint still refuses it
  before.pop(ckpt / "settings.json")
  with pytest.raises(ValueError, match="belongs to another experiment.*use a fresh --workdir"):
    bc.compress(data, {**CFG, "lam": 0.6}, checkpoint_dir=ckpt)
  assert snapshot(ckpt) == before


class _StdoutThatStops:
  """A stdout that raises KeyboardInterrupt (as Ctrl-C) once ``marker`` is printed."""

  def __init__(self, marker):
    self.marker, self.text = marker, ""

  def write(self, s):
    self.text += s
    if self.marker in s:
      raise KeyboardInterrupt
    return len(s)

  def flush(self):
    pass


def test_cli_resumes_prints_a_finished_run_and_refuses_other_settings(data, reference, tmp_path, capsys,
                                                                      monkeypatch):
  cli = experiment_doubles.load_cli("compress")
  work = tmp_path / "w"
  argv = ["--workdir", str(work)] + [a for s in CLI_SETTINGS for a in ("--set", s)]
  with monkeypatch.context() as m:
    m.setattr(sys, "stdout", _StdoutThatStops("outer iteration 2:"))
    with pytest.raises(SystemExit) as e:
      cli.main(argv)
  assert e.value.code == 130 and "interrupted; rerun the same command to resume" in capsys.readouterr().err
  assert not (work / "report.json").exists()
  report = cli.main(argv)
  out = capsys.readouterr().out
  assert report == reference[0] and "resumed from checkpoint 3" in out and "outer iteration 1:" not in out
  assert json.loads((work / "report.json").read_text()) == json.loads(json.dumps(reference[0]))
  files = snapshot(work)
  assert cli.main(argv) == reference[0]  # finished: the report again, nothing recomputed or rewritten
  out = capsys.readouterr().out
  assert "finished earlier" in out and "lenet5 on digits: " in out and "outer iteration" not in out
  assert snapshot(work) == files
  with pytest.raises(SystemExit) as e:
    cli.main(argv + ["--set", "lam=0.6"])
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.count("\n") == 1 and "other settings (lam 0.5 -> 0.6)" in err, err
  assert snapshot(work) == files


@pytest.mark.slow  # two fresh processes: ~30 s on 2 idle cores
def test_cli_sigterm_then_rerun_matches_uninterrupted(data, tmp_path):
  cfg = {**CFG, "outer_iterations": 30}  # long enough for the signal to land inside the outer iterations
  ref, _, _ = run(data, cfg)
  work = tmp_path / "w"
  env = {**os.environ, "NAS_JAX_COMPILE_CACHE": jax.config.jax_compilation_cache_dir or str(tmp_path / "xla")}
  cmd = [sys.executable, str(ROOT / "experiments" / "compress.py"), "--workdir", str(work)]
  cmd += [a for k, v in cfg.items() for a in ("--set", f"{k}={v}")]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env, text=True)
  t_end = time.monotonic() + 240
  for line in proc.stdout:
    assert time.monotonic() < t_end, "no progress"
    if line.startswith("outer iteration 1:"):
      proc.send_signal(signal.SIGTERM)
      break
  _, err = proc.communicate()
  assert proc.returncode == 130 and "interrupted; rerun the same command to resume" in err, err
  done = subprocess.run(cmd, capture_output=True, cwd=ROOT, env=env, text=True)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "resumed from checkpoint" in done.stdout and "dense lenet5" not in done.stdout
  assert json.loads((work / "report.json").read_text()) == json.loads(json.dumps(ref))
