"""Tests of the NAS-Bench-201 comparison harness (nas_jax.benchmarks_nb201, benchmarks/nb201.py)."""
from __future__ import annotations

import importlib.util
import itertools
import json
import os

import numpy as np
import pytest

from nas_jax import benchmarks_nb201
from nas_jax.evaluators.tabular import read_table, write_table
from nas_jax.strategies.evolution import RegularizedEvolution
from nas_jax.strategies.random_search import RandomSearch

ALL_ARCHS = np.array(list(itertools.product(range(5), repeat=6)), np.int32)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTINEL = 12.3456


def _table(path, test_value=None) -> str:
  """A full synthetic table: one good op per edge, a little seed noise."""
  rng = np.random.default_rng(0)
  best = np.array([3, 3, 2, 1, 3, 2])
  mean = 70.0 + 3.0 * (ALL_ARCHS == best).sum(axis=1) + rng.normal(0, 0.7, len(ALL_ARCHS))
  seeds = mean[:, None] + rng.normal(0, 0.5, (len(ALL_ARCHS), 2))
  test = mean + 2.0 if test_value is None else np.full(len(ALL_ARCHS), test_value)
  return write_table(path, ALL_ARCHS, test_acc=test, valid_seeds=seeds,
                     train_time_s=np.full(len(ALL_ARCHS), 100.0))


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
  return _table(tmp_path_factory.mktemp("h") / "table.csv")


@pytest.fixture(scope="module")
def sentinel_table(tmp_path_factory) -> str:
  return _table(tmp_path_factory.mktemp("h") / "sentinel.csv", test_value=SENTINEL)


class Spy(RegularizedEvolution):
  """Evolution that records everything it is told."""
  told: list = []

  def tell(self, state, archs, scores):
    Spy.told.append((np.array(archs), np.array(scores)))
    return super().tell(state, archs, scores)


class BatchSpy(RandomSearch):
  """Random search asking 7 at a time; records what it is told."""
  told: list = []

  def __init__(self, space, config=None):
    super().__init__(space, {"batch_size": 7, **(config or {})})

  def tell(self, state, archs, scores):
    BatchSpy.told.append(np.array(archs))
    return super().tell(state, archs, scores)


def test_strategy_never_sees_test_accuracy(sentinel_table):
  Spy.told.clear()
  result = benchmarks_nb201.run_search(Spy, 30, 2, benchmark_file=sentinel_table)
  table = read_table(sentinel_table)
  scores = np.concatenate([s for _, s in Spy.told])
  archs = np.concatenate([a for a, _ in Spy.told])
  assert len(scores) == 60
  assert not np.isin(scores, [SENTINEL]).any()
  rows = table.rows(archs)
  for row, score in zip(rows, scores):  # every told score is one seed's validation accuracy
    assert score in table.valid_seeds[row, :table.num_seeds[row]]
  # ... while the harness reports the test column
  assert result["mean_test_acc"] == pytest.approx(SENTINEL)
  np.testing.assert_allclose(result["curve"], SENTINEL)


def test_result_keys_and_best_by_score_protocol(table):
  result = benchmarks_nb201.run_search("random", 25, 3, benchmark_file=table)
  for key in benchmarks_nb201.RESULT_KEYS:
    assert key in result
  assert result["strategy"] == "random" and result["queries"] == 25 and result["runs"] == 3
  assert len(result["curve"]) == 25 and result["seconds"] > 0
  assert result["curve"][-1] == pytest.approx(result["mean_test_acc"])
  assert result["std_test_acc"] == pytest.approx(np.std(result["final_test_accs"], ddof=1))
  json.dumps(result)  # JSON-ready
  # the reported test accuracy is the test value of the best-by-validation arch
  tab = read_table(table)
  for arch_str, test in zip(result["best_archs"], result["final_test_accs"]):
    row = int(np.nonzero([s == arch_str for s in _strings(tab)])[0][0])
    assert tab.test_acc[row] == pytest.approx(test)


def _strings(tab):
  from nas_jax.evaluators.tabular import arch_string  # pylint: disable=import-outside-toplevel
  return [arch_string(a) for a in tab.archs]


def test_same_seed_same_result(table):
  a = benchmarks_nb201.run_search("evolution", 30, 2, benchmark_file=table, seed=5)
  b = benchmarks_nb201.run_search("evolution", 30, 2, benchmark_file=table, seed=5)
  c = benchmarks_nb201.run_search("evolution", 30, 2, benchmark_file=table, seed=6)
  assert a["curve"] == b["curve"] and a["best_archs"] == b["best_archs"]
  assert a["best_archs"] != c["best_archs"] or a["curve"] != c["curve"]


def test_large_batches_are_truncated_to_the_budget(table):
  BatchSpy.told.clear()
  result = benchmarks_nb201.run_search(BatchSpy, 10, 1, benchmark_file=table)
  assert [len(a) for a in BatchSpy.told] == [7, 3]
  assert len(result["curve"]) == 10


def test_evolution_beats_random_on_a_synthetic_table(table):
  ev = benchmarks_nb201.run_search("evolution", 60, 12, benchmark_file=table)
  rs = benchmarks_nb201.run_search("random", 60, 12, benchmark_file=table)
  assert ev["mean_test_acc"] > rs["mean_test_acc"] + 0.5


def test_bad_arguments(table):
  with pytest.raises(ValueError, match="queries"):
    benchmarks_nb201.run_search("random", 0, 1, benchmark_file=table)
  with pytest.raises(ValueError, match="unknown strategy"):
    benchmarks_nb201.run_search("no-such-strategy", 5, 1, benchmark_file=table)
  with pytest.raises(ValueError, match="sample_size"):
    benchmarks_nb201.run_search("evolution", 5, 1, benchmark_file=table,
                                config={"sample_size": 50})


def test_command_line_writes_json_and_plot(table, tmp_path, capsys):
  spec = importlib.util.spec_from_file_location("nb201_cli",
                                                os.path.join(REPO, "benchmarks", "nb201.py"))
  cli = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(cli)
  out = str(tmp_path / "r_{strategy}.json")
  plot = tmp_path / "curves.png"
  assert cli.main(["--strategy", "random", "evolution", "--queries", "12", "--runs", "2",
                   "--benchmark-file", table, "--out", out, "--plot", str(plot),
                   "--strategy-config", '{"evolution": {"population_size": 5}}']) == 0
  printed = capsys.readouterr().out
  assert "random: test accuracy" in printed and "evolution: test accuracy" in printed
  for name in ("random", "evolution"):
    with open(out.replace("{strategy}", name), encoding="utf-8") as f:
      result = json.load(f)
    assert result["strategy"] == name and len(result["curve"]) == 12
  assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # saved results alone can be plotted together
  again = tmp_path / "again.png"
  assert cli.main(["--compare", out.replace("{strategy}", "random"),
                   out.replace("{strategy}", "evolution"), "--plot", str(again)]) == 0
  assert again.stat().st_size > 1000
  with pytest.raises(SystemExit):  # several strategies need {strategy} in --out
    cli.main(["--strategy", "random", "evolution", "--out", str(tmp_path / "x.json")])
