"""Tests of benchmarks/early_stop_replay.py: replaying early-stopping rules over full-training histories."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from nas_jax.predictors import hyperband
from nas_jax.tasks import get_task

_PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "early_stop_replay.py"
_spec = importlib.util.spec_from_file_location("early_stop_replay", _PATH)
replay_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(replay_cli)


def _history(path, tops, epochs=6, seed=0, train=True):
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for i, top in enumerate(tops):
      acc = top * (1 - np.exp(-np.arange(1, epochs + 1) / 2.0)) + rng.normal(0, 0.5, epochs)
      noisy = acc + rng.normal(0, 8.0, epochs)  # a training accuracy that ranks differently
      f.write(json.dumps({"arch_id": f"a{i}", "curve": [
          {"epoch": e + 1, "valid_acc": float(a), **({"train_acc": float(t)} if train else {})}
          for e, (a, t) in enumerate(zip(acc, noisy))]}) + "\n")
  return path


@pytest.mark.parametrize("rule", [{"rule": "sha", "eta": 2, "predict": False},
                                  {"rule": "sha", "eta": 2, "predict": False, "rank_by": "train"}])
def test_replay_matches_the_live_callbacks_and_counts_the_target(rule, tmp_path, capsys):
  tops = [80, 60, 95, 70, 90, 50, 85, 65]
  path = _history(tmp_path / "history.jsonl", tops)
  out = replay_cli.main(["--histories", str(path), "--rule", json.dumps(rule), "--out",
                         str(tmp_path / "o.json")])
  [res] = out["results"]
  per = res["per_history"][str(path)]
  # The same stopper fed the same curves live (what train_child's callbacks would do).
  live = hyperband.make_stopper(get_task("images"), 6, rule)
  records = [json.loads(l) for l in open(path)]
  stops = []
  for r in records:
    cb = live.callback(arch_id=r["arch_id"])
    stops.append(next((e for e, c in enumerate(r["curve"], 1) if cb(e, c)), 6))
  assert per["stop_epochs"] == stops and per["speedup"] == pytest.approx(48 / sum(stops))
  assert per["speedup"] > 1.5
  assert per["reference_best"] == max(r["curve"][-1]["valid_acc"] for r in records)
  assert per["gap"] <= 0 and res["met"] == int(per["speedup"] >= 2 and per["gap"] >= -0.5)
  assert "target met on" in capsys.readouterr().out and (tmp_path / "o.json").exists()


@pytest.mark.parametrize("rule, history, message", [
    ('{"rule": "asha"}', "ok", "unknown early_stop rule 'asha'"),
    ('{"rule": "sha", "delta": 0.1}', "ok", "unknown early_stop setting(s) ['delta']"),
    ('[1]', "ok", "must be a JSON object"),
    ('{"rule": "sha"}', "missing", "cannot read the history"),
    ('{"rule": "sha"}', "stopped", "rerun the search without --early-stop"),
    ('{"rule": "sha", "predict": false, "rank_by": "train"}', "no_train",
     "the rule ranks by 'train_acc', which the history's curves lack"),
])
def test_bad_input_is_a_one_line_error(tmp_path, rule, history, message):
  path = _history(tmp_path / "h.jsonl", [80, 60, 90], train=history != "no_train")
  if history == "missing":
    path = tmp_path / "nope"
  elif history == "stopped":
    with open(path, "a") as f:
      f.write(json.dumps({"arch_id": "s", "stopped": {"epoch": 1}, "curve": [{"valid_acc": 1.0}]}) + "\n")
  with pytest.raises(SystemExit) as e:
    replay_cli.main(["--histories", str(path), "--rule", rule])
  assert message in str(e.value) and "\n" not in str(e.value)
