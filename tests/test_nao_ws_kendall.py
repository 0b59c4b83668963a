"""Tests of benchmarks/nao_ws_kendall.py: Kendall's tau-b and the NAO-WS set-up (no training)."""
from __future__ import annotations

import importlib.util
import itertools
import pathlib

import jax
import numpy as np
import pytest

from nas_jax.registry import get_space, get_strategy

_PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "nao_ws_kendall.py"
_spec = importlib.util.spec_from_file_location("nao_ws_kendall", _PATH)
kendall = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kendall)


def _tau_b_by_definition(x, y):
  conc = disc = tx = ty = 0
  for i, j in itertools.combinations(range(len(x)), 2):
    a, b = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    tx += a == 0
    ty += b == 0
    conc += a * b > 0
    disc += a * b < 0
  n0 = len(x) * (len(x) - 1) / 2
  return (conc - disc) / np.sqrt((n0 - tx) * (n0 - ty))


def test_kendall_tau_b_values():
  assert kendall.kendall_tau_b([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert kendall.kendall_tau_b([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  assert kendall.kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
  rng = np.random.default_rng(0)
  for _ in range(5):  # with ties in both lists
    x, y = rng.integers(0, 4, 12).astype(float), rng.integers(0, 4, 12).astype(float)
    assert kendall.kendall_tau_b(x, y) == pytest.approx(_tau_b_by_definition(x, y))
  assert np.isnan(kendall.kendall_tau_b([1, 1, 1], [1, 2, 3]))


def test_kendall_tau_b_matches_scipy():
  stats = pytest.importorskip("scipy.stats")
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=10), rng.integers(0, 5, 10).astype(float)
  assert kendall.kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)


def test_kendall_tau_b_bad_input():
  with pytest.raises(ValueError, match="same length"):
    kendall.kendall_tau_b([1, 2], [1, 2, 3])
  with pytest.raises(ValueError, match="finite"):
    kendall.kendall_tau_b([1, 2, np.nan], [1, 2, 3])


def test_config_is_the_main_commands_nao_ws():
  cfg = kendall.nao_ws_config(["budget=40"])
  assert cfg["strategy"]["name"] == "nao" and cfg["strategy"]["reevaluate_pool"] is True
  assert cfg["evaluator"]["name"] == "supernet" and cfg["space"] == "nasnet"
  assert cfg["budget"] == 40 and cfg["final"]["epochs"] >= 1
  space = get_space(cfg["space"])
  get_strategy("nao")(space, {k: v for k, v in cfg["strategy"].items() if k != "name"})
  archs = kendall.distinct_random_archs(space, jax.random.key(0), 10)
  assert archs.shape == (10, *space.arch_shape)
  assert len({space.arch_id(a) for a in archs}) == 10
