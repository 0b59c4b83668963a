"""References beside the found cell: a published cell trained alike, a classical model, the table."""
from __future__ import annotations

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

import experiment_doubles
from nas_jax import experiment
from nas_jax.runner import references
from nas_jax.spaces.nasnet import PUBLISHED, NasNetSpace


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  return experiment_doubles.write_synthetic_table(
      tmp_path_factory.mktemp("table") / "nb201_synthetic.csv.gz")


def fake_trainer(calls):
  """A train_child double that records its arguments; test accuracy from the arch."""

  def fake_train_child(space, arch, dataset, config, key, *, workdir=None, progress=None):
    calls.append({"arch_id": space.arch_id(arch), "dataset": dataset, "config": dict(config),
                  "key": np.asarray(jax.random.key_data(key)).tolist(), "workdir": workdir})
    curve = []
    for epoch in (1, 2):
      entry = {"epoch": epoch, "train_acc": 50.0 + epoch, "valid_acc": 40.0 + epoch + len(calls),
               "seconds": 0.1}
      curve.append(entry)
      progress(epoch, entry)
    return {"curve": curve, "test_acc": 90.0 + len(calls), "params": 1000 * len(calls),
            "nonfinite_steps": 0, "seconds": 0.2}

  return fake_train_child


def nasnet_config(**changes):
  cfg = experiment.merge(experiment.default_config(), {
      "space": "nasnet", "budget": 2, "strategy": {"name": "random", "batch_size": 2},
      "evaluator": {"name": "test_nan"},
      "final": {"epochs": 2, "layers": 3, "train_split": "train+valid"},
      "references": {"cell": "NAONet-B", "classical": "svc"},
      "checkpoint": {"interval_s": 0.0}})
  return experiment.merge(cfg, changes)


@pytest.fixture(scope="module")
def run_with_references(tmp_path_factory):
  """One run on nasnet/digits with both references; train_child replaced by a recorder."""
  from nas_jax import train
  calls = []
  workdir = tmp_path_factory.mktemp("refs") / "run"
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(train, "train_child", fake_trainer(calls))
    result = experiment.run_experiment(nasnet_config(), workdir, quiet=True)
  return workdir, result, calls


def test_references_are_trained_on_the_split_recipe_and_seed_of_the_found_cell(
    run_with_references):
  workdir, result, (found, ref) = run_with_references
  space = NasNetSpace()
  assert found["arch_id"] == result["best_arch_id"]
  assert ref["arch_id"] == space.arch_id(space.validate(space.from_genotype(PUBLISHED["NAONet-B"])))
  assert ref["dataset"] is found["dataset"]  # the very same data object (same split)
  assert ref["config"] == found["config"] == {"epochs": 2, "layers": 3, "train_split": "train+valid"}
  assert ref["key"] == found["key"]
  assert found["workdir"].endswith("final") and ref["workdir"].endswith("reference_cell")
  cell = result["references"]["cell"]
  assert cell["name"] == "NAONet-B" and cell["test_acc"] == 92.0 and cell["params"] == 2000
  assert [e["valid_acc"] for e in cell["curve"]] == [43.0, 44.0]
  classical = result["references"]["classical"]
  data = found["dataset"]
  assert classical["train_split"] == "train+valid"
  assert classical["train_examples"] == data.size("train") + data.size("valid") == 1438
  assert classical["test_examples"] == data.size("test") and 85.0 < classical["test_acc"] <= 100.0
  assert result["final_test_acc"] == 91.0
  saved = json.loads((workdir / "result.json").read_text())
  assert saved["references"]["cell"]["test_acc"] == 92.0
  assert (workdir / "final_curve.png").is_file()
  assert "reference NAONet-B epoch 2" in (workdir / "run.log").read_text()


def test_summary_shows_the_references(run_with_references):
  workdir, result, _ = run_with_references
  spec = importlib.util.spec_from_file_location(
      "cli_run_refs", pathlib.Path(__file__).resolve().parent.parent / "experiments" / "run.py")
  run_cli = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(run_cli)
  text = run_cli.summary(result, workdir)
  assert "published cell NAONet-B 92.00 %" in text
  assert f"classical SVC {result['references']['classical']['test_acc']:.2f} %" in text


def test_references_off_trains_one_network(tmp_path, monkeypatch):
  from nas_jax import train
  calls = []
  monkeypatch.setattr(train, "train_child", fake_trainer(calls))
  cfg = nasnet_config(references={"cell": None, "classical": None})
  result = experiment.run_experiment(cfg, tmp_path / "run", quiet=True)
  assert len(calls) == 1 and result["references"] == {}


def test_tabular_runs_report_the_table_best_and_median(table, tmp_path):
  cfg = experiment.merge(experiment.default_config(), {
      "space": "nb201", "budget": 3, "strategy": {"name": "random", "batch_size": 3},
      "evaluator": {"name": "auto", "tabular": {"benchmark_file": table}},
      "final": {"epochs": 0}, "checkpoint": {"interval_s": 0.0}})
  result = experiment.run_experiment(cfg, tmp_path / "run", quiet=True)
  from nas_jax.evaluators.tabular import load_table
  acc = load_table(table).test_acc
  got = result["references"]["table"]
  assert got["table_best_test_acc"] == pytest.approx(acc.max())
  assert got["table_median_test_acc"] == pytest.approx(np.median(acc))
  assert got["table_size"] == 15625


@pytest.mark.parametrize("refs, message", [
    ({"cell": "NASNet-A"}, r"references.cell 'NASNet-A' is not a published cell of space "
                           r"'nasnet'; choose one of \['ENAS', 'NAONet-B'\] or null"),
    ({"classical": "xgboost"}, r"references.classical 'xgboost' is unknown; choose one of "
                               r"\['logreg', 'svc'\]"),
    ({"cells": "ENAS"}, r"unknown references setting\(s\) \['cells'\]"),
])
def test_bad_references_are_one_line_errors(refs, message):
  with pytest.raises(ValueError, match=message):
    experiment.validate_config(nasnet_config(references=refs))


def test_references_are_not_part_of_the_fingerprint():
  a = experiment.validate_config(nasnet_config())
  b = experiment.validate_config(nasnet_config(references={"cell": None}))
  from nas_jax.runner import config as config_lib
  assert config_lib.fingerprint(a) == config_lib.fingerprint(b)


def test_published_cells_are_valid_archs_of_their_space():
  space = NasNetSpace()
  for name, genotype in PUBLISHED.items():
    arch = space.validate(space.from_genotype(genotype))
    assert space.to_genotype(arch)["normal"] == genotype["normal"], name
  # the NAO-WS cell, read off the authors' arc string: node 3 of the normal cell sums
  # sep 3x3 of node 2 and max pool of the previous cell
  assert PUBLISHED["NAONet-B"]["normal"][3] == [["sep_conv_3x3", 4], ["max_pool_3x3", 1]]
  assert set(references.published_cells("darts")) == {"DARTS_V1", "DARTS_V2"}
  assert references.published_cells("nb201") == {}
