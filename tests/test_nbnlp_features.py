"""Tests of the recipe encodings of nas_jax.data.nbnlp_logs (path numbers, path encoding, recipe
identity) and their use in benchmarks/lce.py, on hand-made cells."""
from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import zipfile

import numpy as np
import pytest

from nas_jax.data import nbnlp_logs

_PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "lce.py"
_spec = importlib.util.spec_from_file_location("lce_benchmark_features", _PATH)
lce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lce)

# x -> linear -> sigmoid -> sum -> h_new_0, and h_prev_0 both into the linear layer and straight
# into the sum (an LSTM-like carry with no linear layer on it).
_CARRY = {"node_0": {"op": "linear", "input": ["x", "h_prev_0"]},
          "node_1": {"op": "activation_sigm", "input": ["node_0"]},
          "h_new_0": {"op": "elementwise_sum", "input": ["node_1", "h_prev_0"]}}
# x reaches only h_new_1; h_new_0 reads h_prev_1, so x reaches the output one step later.
_DELAYED = {"node_0": {"op": "linear", "input": ["x", "h_prev_0"]},
            "h_new_1": {"op": "activation_tanh", "input": ["node_0"]},
            "h_new_0": {"op": "linear", "input": ["h_prev_1", "h_prev_0"]}}


def test_path_features_of_a_hand_made_cell():
  f = nbnlp_logs.recipe_path_features(json.dumps(_CARRY))
  assert f["x_reach"] == 1 and f["x_paths"] == pytest.approx(math.log(2))  # one path
  assert (f["x_len_min"], f["x_len_max"], f["x_lin_min"], f["x_act_min"], f["x_sigm_min"]) == (3, 3, 1, 1, 1)
  assert f["x_mult_max"] == 0 and f["x_delay"] == 0
  # h_prev_0 -> h_new_0: straight into the sum (1 node, no linear layer) or through all three.
  assert (f["rec_reach"], f["rec_len_min"], f["rec_lin_min"], f["rec_act_min"]) == (1, 1, 0, 0)
  assert f["out_elementwise_sum"] == 1 and sum(v for k, v in f.items() if k.startswith("out_")) == 1
  assert set(f) == set(nbnlp_logs.recipe_path_features(_DELAYED))  # every key in every cell


def test_delay_and_unreachable_output():
  f = nbnlp_logs.recipe_path_features(_DELAYED)
  assert (f["x_reach"], f["x_len_min"], f["x_paths"], f["x_delay"]) == (0, 0, 0, 1)
  assert f["out_linear"] == 1 and f["rec_len_min"] == 1 and f["rec_lin_min"] == 1
  # No hidden state carries x to the output: the delay reads the number of hidden states.
  cut = {"h_new_0": {"op": "linear", "input": ["h_prev_0"]}, "h_new_1": {"op": "linear", "input": ["x"]}}
  assert nbnlp_logs.recipe_path_features(cut)["x_delay"] == 2


def test_path_encoding_counts_op_sequences():
  assert nbnlp_logs.recipe_paths(_CARRY) == {"x_lin_sigm_sum": 1, "h_lin_sigm_sum": 1, "h_sum": 1}
  # Two inputs through the same node are two paths with the same sequence.
  two = {"node_0": {"op": "linear", "input": ["h_prev_0", "h_prev_1"]},
         "h_new_0": {"op": "blend", "input": ["node_0", "x", "x"]}}
  assert nbnlp_logs.recipe_paths(two) == {"h_lin_blend": 2, "x_blend": 2}


@pytest.mark.parametrize("recipe, message", [
    ({"node_0": {"op": "linear", "input": ["x"]}}, "needs an 'h_new_0' node"),
    ({"h_new_0": {"op": "linear", "input": ["node_0"]}, "node_0": {"op": "linear", "input": ["h_new_0"]}},
     "cycle"),
    ({"h_new_0": {"op": "linear", "input": ["y"]}}, "neither a node nor x"),
])
def test_bad_recipes_raise(recipe, message):
  with pytest.raises(ValueError, match=message):
    nbnlp_logs.recipe_path_features(recipe)


def _chain(k):
  """A cell with k linear + tanh layers between x and h_new_0 (distinct cells for distinct k)."""
  nodes, prev = {}, "x"
  for i in range(k):
    nodes[f"node_{2 * i}"] = {"op": "linear", "input": [prev, "h_prev_0"]}
    nodes[f"node_{2 * i + 1}"] = {"op": "activation_tanh", "input": [f"node_{2 * i}"]}
    prev = f"node_{2 * i + 1}"
  nodes["h_new_0"] = {"op": "activation_sigm", "input": [prev]}
  return nodes


def _zip(tmp_path, n=24, epochs=8):
  rng = np.random.default_rng(0)
  logs = {}
  for i in range(n):
    k = 1 + i % (n // 2)  # every cell trained twice
    curve = 5.0 + 0.1 * k + 2.0 * np.exp(-np.arange(1, epochs + 1) / (1.0 + 0.2 * k))
    logs[f"run{i:02d}.json"] = {"recepie": json.dumps(_chain(k)), "num_params": 1000 * k, "lr": 0.001,
                                "val_losses": (curve + rng.normal(0, 0.01, epochs)).tolist()}
  path = tmp_path / "cells.zip"
  with zipfile.ZipFile(path, "w") as z:
    for name, log in logs.items():
      z.writestr(name, json.dumps(log))
  return path


def test_load_logs_encodings_and_recipe_identity(tmp_path):
  path = _zip(tmp_path)
  counts = nbnlp_logs.load_logs(path)
  assert "x_len_min" not in counts.arch[0] and not any(k.startswith("path_") for k in counts.arch[0])
  assert counts.recipes[0] == counts.recipes[12] != counts.recipes[1]  # runs 0 and 12 are one cell
  paths = nbnlp_logs.load_logs(path, arch_encoding="paths")
  assert paths.arch[3]["x_len_min"] == 9 and paths.arch[3]["x_lin_min"] == 4  # 4 layers + sigmoid
  assert paths.arch[3]["op_linear"] == counts.arch[3]["op_linear"] == 4  # the counts stay
  enc = nbnlp_logs.load_logs(path, arch_encoding="path_encoding")
  keys = {k for k in enc.arch[0] if k.startswith("path_")}
  assert all({k for k in a if k.startswith("path_")} == keys for a in enc.arch)
  assert len(keys) == nbnlp_logs.PATH_VOCAB and enc.arch[5]["path_h_lin_tanh_sigm"] == 1
  with pytest.raises(ValueError, match="arch_encoding must be one of"):
    nbnlp_logs.load_logs(path, arch_encoding="adjacency")


def test_benchmark_r2_on_unseen_recipes(tmp_path):
  path = _zip(tmp_path)
  logs = nbnlp_logs.load_logs(path)
  result = lce.run(str(path), n_fit=12, splits=1, orders=0, n_search=2, regressors=("ols",),
                   arch_features="paths", seed=3)
  perm = np.random.default_rng(3).permutation(24)
  fit = {logs.recipes[i] for i in perm[:12]}
  expected = sum(logs.recipes[i] not in fit for i in perm[12:])
  assert 2 <= expected < 12 and result["n_unseen_per_split"] == [expected]
  assert result["arch_features"] == "paths" and np.isfinite(result["r2_unseen"]["ols"]["0.5"])
  assert result["r2_unseen"]["ols"]["0.5"] != result["r2"]["ols"]["0.5"]
