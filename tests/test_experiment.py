"""Tests of nas_jax.experiment (the generic loop) and nas_jax.checkpoint.

The loop tests use the nb201 space, random search and the tabular evaluator on
a synthetic table (experiment_doubles.write_synthetic_table): training is not
the point here, and a table query takes microseconds.
"""
from __future__ import annotations

import collections
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiment_doubles  # registers the test-only "test_nan" evaluator
from nas_jax import experiment
from nas_jax.checkpoint import SearchCheckpointer, decode_tree, encode_tree


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  return experiment_doubles.write_synthetic_table(
      tmp_path_factory.mktemp("table") / "nb201_synthetic.csv.gz")


def tabular_config(table, **changes):
  cfg = experiment.merge(experiment.default_config(), {
      "space": "nb201", "budget": 7, "strategy": {"name": "random", "batch_size": 2},
      "evaluator": {"name": "auto", "tabular": {"benchmark_file": table}},
      "final": {"epochs": 0}, "checkpoint": {"interval_s": 0.0}})
  return experiment.merge(cfg, changes)


def history_lines(workdir):
  return (workdir / "history.jsonl").read_text().splitlines()


def deterministic(workdir):
  """history and result without the wall-clock fields."""
  lines = [experiment.strip_wall_clock(json.loads(l)) for l in history_lines(workdir)]
  result = experiment.strip_wall_clock(json.loads((workdir / "result.json").read_text()))
  return lines, result


class Crash(Exception):
  pass


def crash_on_save(monkeypatch, n):
  """The n-th checkpoint save raises (after that round's history is on disk)."""
  real = SearchCheckpointer.save
  calls = [0]

  def save(self, step, trees, meta):
    calls[0] += 1
    if calls[0] == n:
      raise Crash(f"simulated crash before checkpoint {step}")
    return real(self, step, trees, meta)

  monkeypatch.setattr(SearchCheckpointer, "save", save)


@pytest.fixture(scope="module")
def reference(table, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ref") / "run"
  result = experiment.run_experiment(tabular_config(table), workdir, quiet=True)
  return workdir, result


def test_outputs_and_names(reference):
  workdir, result = reference
  for name in ("config.json", "history.jsonl", "result.json", "best_arch.json", "search.png",
               "run.log"):
    assert (workdir / name).is_file(), name
  records = [json.loads(l) for l in history_lines(workdir)]
  assert len(records) == 7
  assert [r["index"] for r in records] == list(range(7))
  assert [r["round"] for r in records] == [0, 0, 1, 1, 2, 2, 3]  # budget cuts the last batch
  assert set(records[0]) == {"index", "round", "arch_id", "genotype", "search_score", "flops",
                             "params", "cost_s", "wall_time_s"}
  best = max(records, key=lambda r: r["search_score"])
  assert result["best_search_score"] == best["search_score"]
  assert result["best_genotype"] == best["genotype"]
  assert result["best_index"] == best["index"]
  # the final figure is the table's test accuracy, never a search score
  assert result["final_test_acc"] == pytest.approx(result["final_report"]["valid_acc"] + 1,
                                                   abs=0.6)
  assert result["final_source"].startswith("tabular")
  assert "test_acc" not in json.dumps(records)
  arch_file = json.loads((workdir / "best_arch.json").read_text())
  assert arch_file["space"] == "nb201" and arch_file["genotype"] == best["genotype"]
  # The run's `dataset` setting (digits) was never used: the scores name the table.
  assert result["dataset"] == arch_file["dataset"] and result["dataset"].startswith("nb201-table:")
  assert len(list((workdir / "checkpoints").iterdir())) == 2  # keeps the last 2
  assert "round 3" in (workdir / "run.log").read_text()


def test_same_seed_same_result_other_seed_differs(table, reference, tmp_path):
  ref_dir, _ = reference
  experiment.run_experiment(tabular_config(table), tmp_path / "a", quiet=True)
  assert (tmp_path / "a" / "history.jsonl").read_bytes() != b""
  assert deterministic(tmp_path / "a") == deterministic(ref_dir)
  experiment.run_experiment(tabular_config(table, seed=1), tmp_path / "b", quiet=True)
  assert deterministic(tmp_path / "b")[0] != deterministic(ref_dir)[0]


def test_rerun_of_finished_experiment_returns_result(reference):
  workdir, result = reference
  before = (workdir / "history.jsonl").read_bytes()
  again = experiment.run_experiment(tabular_config_from(workdir), workdir, quiet=True)
  assert again == result
  assert (workdir / "history.jsonl").read_bytes() == before


def tabular_config_from(workdir):
  return json.loads((workdir / "config.json").read_text())


@pytest.mark.parametrize("crash_at", [1, 3])
def test_resume_after_crash_before_checkpoint(table, reference, tmp_path, monkeypatch,
                                              crash_at):
  workdir = tmp_path / "run"
  crash_on_save(monkeypatch, crash_at)
  with pytest.raises(Crash):
    experiment.run_experiment(tabular_config(table), workdir, quiet=True)
  # the crashed round's lines are on disk although no checkpoint covers them,
  # plus a torn line as from a kill mid-write
  assert len(history_lines(workdir)) == 2 * crash_at
  with open(workdir / "history.jsonl", "ab") as f:
    f.write(b'{"index": 99, "round": 9')
  monkeypatch.undo()
  experiment.run_experiment(tabular_config(table), workdir, quiet=True)
  assert deterministic(workdir) == deterministic(reference[0])
  lines = [json.loads(l) for l in history_lines(workdir)]
  ref_lines = [json.loads(l) for l in history_lines(reference[0])]
  # the simulated costs come from the table: identical too
  assert [l["cost_s"] for l in lines] == [l["cost_s"] for l in ref_lines]
  assert json.loads((workdir / "result.json").read_text())["resumed_sessions"] == (crash_at > 1)


def test_corrupt_checkpoint_falls_back_to_the_earlier_one(table, reference, tmp_path,
                                                          monkeypatch, capsys):
  workdir = tmp_path / "run"
  crash_on_save(monkeypatch, 4)  # checkpoints 1..3 written, keep 2 -> {2, 3}
  with pytest.raises(Crash):
    experiment.run_experiment(tabular_config(table), workdir, quiet=True)
  monkeypatch.undo()
  ckdir = workdir / "checkpoints"
  assert sorted(p.name for p in ckdir.iterdir()) == ["2", "3"]
  for f in (ckdir / "3").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  experiment.run_experiment(tabular_config(table), workdir, quiet=True)
  assert "checkpoint 3 is unreadable" in capsys.readouterr().err
  assert deterministic(workdir) == deterministic(reference[0])


def test_foreign_checkpoint_is_refused(table, reference, tmp_path):
  other = tmp_path / "other"
  experiment.run_experiment(tabular_config(table, seed=3), other, quiet=True)
  workdir = tmp_path / "run"
  workdir.mkdir()
  shutil.copy(reference[0] / "config.json", workdir / "config.json")
  shutil.copytree(other / "checkpoints", workdir / "checkpoints")
  with pytest.raises(ValueError, match="belongs to another experiment"):
    experiment.run_experiment(tabular_config(table), workdir, quiet=True)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["3", "4"]


def test_workdir_of_another_experiment_is_refused(table, reference):
  with pytest.raises(ValueError,
                     match=r"holds another experiment \(differs in budget: 7 there, 8 now"):
    experiment.run_experiment(tabular_config(table, budget=8), reference[0], quiet=True)
  with pytest.raises(ValueError, match="strategy.batch_size: 2 there, 3 now"):
    experiment.run_experiment(tabular_config(table, strategy={"batch_size": 3}), reference[0],
                              quiet=True)


def test_non_empty_workdir_without_config_is_refused(table, tmp_path):
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match="not empty and holds no config.json"):
    experiment.run_experiment(tabular_config(table), tmp_path, quiet=True)
  assert (tmp_path / "notes.txt").read_text() == "mine"


def test_non_finite_scores_are_counted_and_told_as_failures(table, tmp_path):
  cfg = tabular_config(table, evaluator={"name": "test_nan"}, budget=6,
                       strategy={"batch_size": 3}, final={"epochs": 0})
  result = experiment.run_experiment(cfg, tmp_path / "run", quiet=True)
  records = [json.loads(l) for l in history_lines(tmp_path / "run")]
  assert [r["search_score"] is None for r in records] == [True, False, False] * 2
  assert result["nonfinite_search_scores"] == 2
  assert result["search_nonfinite_steps"] == 6
  assert result["best_search_score"] == max(r["search_score"] for r in records
                                            if r["search_score"] is not None)
  assert result["final_test_acc"] is None and "final.epochs = 0" in result["final_source"]


@pytest.mark.parametrize("change, message", [
    ({"budget": 0}, "budget must be a positive integer"),
    ({"budget": "abc"}, "budget must be a positive integer"),
    ({"budget": 2.5}, "budget must be a positive integer"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"seed": True}, "seed must be a non-negative integer"),
    ({"space": "dartz"}, r"unknown space 'dartz'; choose one of \['darts', 'macro', 'nasnet', 'nb201', "
                         r"'petridish', 'petridish_cell', 'rnn'\]"),
    ({"strategy": {"name": "bogus"}}, "unknown strategy 'bogus'; choose one of"),
    ({"evaluator": {"name": "oracle"}}, "unknown evaluator 'oracle'; choose 'auto' or one of"),
    ({"strategy": "random"}, "strategy must be a dict of settings"),
    ({"dataset": ""}, "dataset must be a non-empty string"),
    ({"bugdet": 3}, r"unknown config field\(s\) \['bugdet'\]"),
    ({"final": {"epochs": -1}}, "final.epochs must be a non-negative integer"),
    ({"checkpoint": {"keep": 0}}, "checkpoint.keep must be an integer >= 1"),
    ({"checkpoint": {"every": 3}}, r"unknown checkpoint setting\(s\) \['every'\]"),
    ({"data_dir": 3}, "data_dir must be a path string or None"),
])
def test_malformed_config_values(table, change, message):
  with pytest.raises(ValueError, match=message):
    experiment.validate_config(experiment.merge(tabular_config(table), change))


def test_bad_strategy_setting_is_a_value_error(table, tmp_path):
  with pytest.raises(ValueError, match=r"unknown random setting\(s\) \['population'\]"):
    experiment.run_experiment(tabular_config(table, strategy={"population": 4}), tmp_path / "w",
                              quiet=True)
  with pytest.raises(ValueError, match="batch_size=0 is out of range"):
    experiment.run_experiment(tabular_config(table, strategy={"batch_size": 0}), tmp_path / "x",
                              quiet=True)


def test_evaluator_auto_resolution():
  cfg = experiment.default_config()
  assert experiment.resolve_evaluator_name(cfg) == "supernet"
  assert experiment.resolve_evaluator_name({**cfg, "space": "nb201"}) == "tabular"
  assert experiment.resolve_evaluator_name({**cfg, "evaluator": {"name": "scratch"}}) == "scratch"


def test_overrides_and_values():
  cfg = {"budget": 3, "strategy": {"name": "random"}}
  out = experiment.apply_overrides(cfg, ["budget=20", "strategy.population=1e-3",
                                         "strategy.name=evolution", "dataset=cifar10",
                                         "final.auxiliary=true", "data_dir=None", "x.y=[1, 2]"])
  assert out == {"budget": 20, "strategy": {"name": "evolution", "population": 1e-3},
                 "dataset": "cifar10", "final": {"auxiliary": True}, "data_dir": None,
                 "x": {"y": [1, 2]}}
  assert cfg == {"budget": 3, "strategy": {"name": "random"}}  # not modified
  with pytest.raises(ValueError, match="malformed --set 'budget'; write FIELD=VALUE"):
    experiment.apply_overrides(cfg, ["budget"])
  with pytest.raises(ValueError, match="budget is not a group of settings"):
    experiment.apply_overrides(cfg, ["budget.x=1"])
  assert experiment.merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


# --- checkpoint module ---------------------------------------------------------------
Pair = collections.namedtuple("Pair", "a b")


def test_encode_decode_round_trip_is_exact():
  tree = {"pair": Pair(np.arange(3, dtype=np.int32), jnp.full((2, 2), 0.1, jnp.bfloat16)),
          "key": jax.random.key(7), "n": 5, "f": 0.1, "flag": True, "name": "x",
          "empty": np.zeros((0, 4), np.float32), "scalar": np.float32(2.5),
          "zero_d": np.asarray(3, np.int64), "f64": np.array([np.pi, -0.0, np.inf])}
  template = jax.tree.map(lambda x: x, tree)
  arrays, spec = encode_tree(tree)
  json.dumps(spec)
  assert "leaf_0" not in arrays  # the zero-size leaf lives in the spec only
  out = decode_tree(template, arrays, spec)
  assert isinstance(out["pair"], Pair)
  assert out["pair"].b.dtype == jnp.bfloat16 and isinstance(out["pair"].b, jax.Array)
  assert np.array_equal(jax.random.key_data(out["key"]), jax.random.key_data(tree["key"]))
  assert out["f64"].tobytes() == tree["f64"].tobytes()
  assert out["n"] == 5 and out["f"] == 0.1 and out["flag"] is True and out["name"] == "x"
  assert out["scalar"] == np.float32(2.5) and out["scalar"].dtype == np.float32
  assert out["empty"].shape == (0, 4) and out["zero_d"].shape == ()
  with pytest.raises(ValueError, match="different structure"):
    decode_tree({"other": 1}, arrays, spec)
  with pytest.raises(ValueError, match="cannot checkpoint a leaf of type object"):
    encode_tree({"bad": object()})


def test_checkpointer_keeps_last_and_checks_fingerprint(tmp_path):
  ckpt = SearchCheckpointer(tmp_path, fingerprint="abc", keep=2)
  assert ckpt.restore({"s": {}}) is None
  for step in (1, 2, 3):
    ckpt.save(step, {"s": {"x": np.full(3, step)}}, {"round": step})
  assert ckpt.steps() == [2, 3]
  trees, meta = ckpt.restore({"s": {"x": np.zeros(3, np.int64)}})
  assert meta == {"round": 3} and trees["s"]["x"].tolist() == [3, 3, 3]
  trees, meta = ckpt.restore({"s": {"x": np.zeros(3, np.int64)}}, step=2)
  assert meta == {"round": 2}
  with pytest.raises(ValueError, match="belongs to another experiment"):
    SearchCheckpointer(tmp_path, fingerprint="xyz").restore({"s": {"x": np.zeros(3)}})
  with pytest.raises(ValueError, match="different structure"):
    ckpt.restore({"s": {"y": np.zeros(3)}})
  # a temporary directory left by a save killed midway is not a checkpoint
  (tmp_path / "4.orbax-checkpoint-tmp").mkdir()
  assert SearchCheckpointer(tmp_path, fingerprint="abc").latest_step() == 3


def test_final_training_is_called_with_the_best_arch_and_reported(table, tmp_path,
                                                                  monkeypatch):
  """Plumbing of the from-scratch final training (train_child replaced by a fake;
  the real one is exercised by the slow digits test in test_cli.py)."""
  from nas_jax import train
  calls = []

  def fake_train_child(space, arch, dataset, config, key, *, workdir=None, progress=None):
    calls.append((space.arch_id(arch), dataset.name, dict(config),
                  np.asarray(jax.random.key_data(key)).tolist(), workdir))
    curve = []
    for epoch in (1, 2):
      entry = {"epoch": epoch, "train_acc": 50.0 + epoch, "valid_acc": 40.0 + epoch,
               "seconds": 0.1}
      curve.append(entry)
      progress(epoch, entry)
    return {"curve": curve, "test_acc": 42.5, "nonfinite_steps": 1, "seconds": 0.2}

  monkeypatch.setattr(train, "train_child", fake_train_child)
  cfg = tabular_config(table, evaluator={"name": "test_nan"}, budget=4,
                       final={"epochs": 2, "layers": 3})
  result = experiment.run_experiment(cfg, tmp_path / "run", quiet=True)
  assert len(calls) == 1
  arch_id, dataset, config, _, workdir = calls[0]
  assert arch_id == result["best_arch_id"] and dataset == "digits"
  assert config == {"epochs": 2, "layers": 3} and workdir.endswith("final")
  assert result["final_test_acc"] == 42.5 and result["final_source"] == "trained from scratch"
  assert result["final_nonfinite_steps"] == 1
  assert [e["valid_acc"] for e in result["final_curve"]] == [41.0, 42.0]
  assert (tmp_path / "run" / "final_curve.png").is_file()
  assert "final training epoch 2" in (tmp_path / "run" / "run.log").read_text()
  # experiments/train.py's retrain uses the same key and settings
  out = experiment.retrain(tmp_path / "run" / "best_arch.json", cfg, tmp_path / "retrain",
                           quiet=True)
  assert calls[1][:4] == calls[0][:4] and out["final_test_acc"] == 42.5
  assert (tmp_path / "retrain" / "retrain.json").is_file()


def test_diverged_final_training_is_a_clear_error(table, tmp_path, monkeypatch):
  from nas_jax import train

  def diverging(*args, **kwargs):
    raise RuntimeError("training diverged: 11 steps with a non-finite loss or gradient "
                       "(max_nonfinite=10), last at epoch 1 step 12; lower lr")

  monkeypatch.setattr(train, "train_child", diverging)
  cfg = tabular_config(table, evaluator={"name": "test_nan"}, budget=2, final={"epochs": 1})
  with pytest.raises(ValueError, match=r"final training of nb201:.* stopped: training "
                                       r"diverged: 11 steps"):
    experiment.run_experiment(cfg, tmp_path / "run", quiet=True)
  assert not (tmp_path / "run" / "result.json").exists()
  assert "diverged" in (tmp_path / "run" / "run.log").read_text()


def test_history_shorter_than_checkpoint_falls_back_and_says_so(table, reference, tmp_path,
                                                                monkeypatch, capsys):
  workdir = tmp_path / "run"
  crash_on_save(monkeypatch, 3)  # checkpoints 1, 2 cover 4 lines; 6 lines on disk
  with pytest.raises(Crash):
    experiment.run_experiment(tabular_config(table), workdir, quiet=True)
  monkeypatch.undo()
  first = history_lines(workdir)[0]
  (workdir / "history.jsonl").write_text(first + "\n")
  experiment.run_experiment(tabular_config(table), workdir, quiet=True)
  assert "no checkpoint fits the 1 intact history line(s); starting afresh" in capsys.readouterr().err
  assert deterministic(workdir) == deterministic(reference[0])
