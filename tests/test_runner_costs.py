"""Costs and frontiers: closed-form FLOPs/params equal the traced count; strategies are told
them; result.json holds the frontier of search score against FLOPs."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import experiment_doubles
from nas_jax import cost, registry, runner
from nas_jax.networks.nasnet import child as nasnet_child
from nas_jax.networks.nb201 import child as nb201_child
from nas_jax.runner import costs as costs_lib
from nas_jax.runner import report
from nas_jax.strategies.random_search import RandomSearch


@pytest.mark.parametrize("space_name, fn, network, shape", [
    ("nb201", nb201_child.child_cost, dict(num_classes=7, init_channels=4, layers=2), (9, 11, 3)),
    ("nb201", nb201_child.child_cost, dict(num_classes=10, init_channels=16, layers=5), (32, 32, 3)),
    ("nasnet", nasnet_child.child_cost, dict(num_classes=10, init_channels=8, layers=3), (8, 8, 1)),
    ("nasnet", nasnet_child.child_cost, dict(num_classes=7, init_channels=4, layers=5), (9, 11, 3)),
])
def test_closed_forms_equal_the_traced_count(space_name, fn, network, shape):
  """The families' closed forms (``FAMILY.cost``) against the jaxpr count of the child."""
  space = registry.get_space(space_name)
  for i in range(3):
    arch = np.asarray(space.sample(jax.random.key(i)))
    assert fn(arch, input_shape=shape, **network) == cost.count_cost(
        space, arch, input_shape=shape, **network), arch.tolist()


def test_nb201_all_conv3x3_cell_has_the_benchmarks_size():
  # NAS-Bench-201 lists 1.53 MB of parameters for the all-conv3x3 cell (C=16, N=5, CIFAR-10).
  assert nb201_child.child_cost([3] * 6)["params"] == 1531546


def test_families_offer_their_closed_form():
  from nas_jax import networks  # pylint: disable=import-outside-toplevel
  for name in ("nasnet", "nb201", "darts", "rnn"):
    assert callable(getattr(networks.family(name), "cost", None)), name


def test_cost_model_caches_by_arch_id():
  calls = []
  model = costs_lib.CostModel(registry.get_space("nb201"), {"num_classes": 10, "init_channels": 16,
                                                            "layers": 5}, (32, 32, 3))
  inner = model._fn  # pylint: disable=protected-access
  model._fn = lambda a: calls.append(1) or inner(a)  # pylint: disable=protected-access
  out = model(np.array([[3, 3, 3, 3, 3, 3], [3, 3, 3, 3, 3, 3], [0, 0, 0, 0, 0, 0]]))
  assert len(calls) == 2 and out["flops"][0] == out["flops"][1] > out["flops"][2]


def test_pareto_front():
  recs = [{"arch_id": "a", "search_score": 90.0, "flops": 10},
          {"arch_id": "b", "search_score": 80.0, "flops": 5},
          {"arch_id": "c", "search_score": 70.0, "flops": 20},   # dominated by a
          {"arch_id": "d", "search_score": 80.0, "flops": 7},    # dominated by b (same score)
          {"arch_id": "b", "search_score": 85.0, "flops": 5},    # b again, better: b counts at 85
          {"arch_id": "e", "search_score": None, "flops": 1},    # failed: left out
          {"arch_id": "f", "search_score": 95.0}]                # no cost: left out
  front = report.pareto_front(recs)
  assert [(r["arch_id"], r["search_score"]) for r in front] == [("b", 85.0), ("a", 90.0)]


class CostSpy(RandomSearch):
  """Random search that records the costs it is told."""
  name = "test_cost_spy"
  told: list = []

  def tell(self, state, archs, scores, costs=None):
    CostSpy.told.append((np.asarray(archs).copy(), costs))
    return super().tell(state, archs, scores, costs)


registry.register("strategy", "test_cost_spy", f"{__name__}:CostSpy")


def test_strategies_are_told_the_costs_and_the_result_holds_the_frontier(tmp_path):
  table = experiment_doubles.write_synthetic_table(tmp_path / "t.csv.gz")
  CostSpy.told.clear()
  cfg = runner.merge(runner.default_config(), {
      "space": "nb201", "budget": 12, "strategy": {"name": "test_cost_spy", "batch_size": 4},
      "evaluator": {"name": "tabular", "tabular": {"benchmark_file": table}},
      "final": {"epochs": 0}})
  result = runner.run_experiment(cfg, tmp_path / "run", quiet=True)
  assert len(CostSpy.told) == 3
  for archs, costs in CostSpy.told:
    assert set(costs) == {"flops", "params"}
    want = [nb201_child.child_cost(a) for a in archs]
    assert costs["flops"].tolist() == [w["flops"] for w in want]
    assert costs["params"].tolist() == [w["params"] for w in want]
  lines = [json.loads(l) for l in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
  assert result["pareto"] == [{k: r.get(k) for k in ("index", "arch_id", "genotype", "search_score",
                                                      "flops", "params")}
                              for r in report.pareto_front(lines)]
  assert (tmp_path / "run" / "pareto.png").is_file()
  assert result["costs"]["network"] == {"num_classes": 10, "init_channels": 16, "layers": 5}
