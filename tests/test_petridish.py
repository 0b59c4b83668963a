"""Petridish: the growable network, candidates through stop-gradient / stop-forward, warm-started
children, selection, the parent choice from the lower convex hull, the closed-form cost."""
from __future__ import annotations

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_jax import cost as cost_lib
from nas_jax.growth import petridish as pd
from nas_jax.networks import petridish as nets
from nas_jax.spaces.petridish import OPS, PetridishSpace
from nas_jax.train import _check_same_structure

SPACE = PetridishSpace(stages=2, layers_per_stage=1, max_layers=8)
NET = {"num_classes": 5, "init_channels": 4}
# The parent already grew twice (a sep conv and a pool), so candidates meet gated layers too.
PARENT = SPACE.append(SPACE.empty(), [(OPS.index("sep_conv_3x3") + 1, 0, 1),
                                      (OPS.index("avg_pool_3x3") + 1, 2, 3)])
# Candidates at join 1 (inputs 0 and 1; a sep conv, a dilated conv, a pool, the identity) and one at
# join 3 (a small set keeps compile times short; the network treats every op alike).
CANDS = nets.candidate_rows(SPACE, 1, [0, 1], [OPS.index(o) + 1 for o in (
    "sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3", "skip_connect")]) + [(OPS.index("dil_conv_3x3") + 1, 2, 3)]


def _x(n=6, seed=1):
  return jax.random.normal(jax.random.key(seed), (n, 8, 8, 1))


def _labels(n=6):
  return jnp.arange(n) % NET["num_classes"]


@pytest.fixture(scope="module")
def setup():
  """Candidate model, its variables (gates of the parent set non-zero) and the parent alone's."""
  cand_model = nets.build_candidates(SPACE, PARENT, CANDS, **NET)
  v = jax.jit(lambda k: cand_model.init({"params": k}, _x(), train=False))(jax.random.key(0))
  params = dict(v["params"])
  params["gate_0"], params["gate_1"] = jnp.asarray(0.7), jnp.asarray(-0.4)  # the parent's layers matter
  cand_vars = {"params": params, "batch_stats": v["batch_stats"]}
  parent_model = nets.build_child(SPACE, PARENT, **NET)
  parent_init = jax.eval_shape(lambda: parent_model.init({"params": jax.random.key(5)}, _x(), train=False))
  parent_vars = {col: {k: cand_vars[col][k] for k in parent_init[col]} for col in parent_init}
  return cand_model, cand_vars, parent_model, parent_vars


_JITTED = {}  # (model, what) -> jitted function: each network compiles once per file


def _loss_and_grads(model, variables, train=True):
  """Logits and the gradients of the mean cross-entropy (batch statistics when ``train``)."""
  if (id(model), train) not in _JITTED:
    def loss(params, batch_stats):
      if train:
        (logits, _), _ = model.apply({"params": params, "batch_stats": batch_stats}, _x(),
                                     train=True, mutable=["batch_stats"])
      else:
        logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, _x(), train=False)
      return optax.softmax_cross_entropy_with_integer_labels(logits, _labels()).mean(), logits
    _JITTED[id(model), train] = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (_, logits), grads = _JITTED[id(model), train](variables["params"], variables["batch_stats"])
  return logits, grads


def _infer(model, variables):
  """Inference logits (running statistics)."""
  if (id(model), "infer") not in _JITTED:
    _JITTED[id(model), "infer"] = jax.jit(lambda v: model.apply(v, _x(), train=False)[0])
  return np.asarray(_JITTED[id(model), "infer"](variables))


def test_candidates_leave_the_parent_unchanged_and_learn(setup):
  cand_model, cand_vars, parent_model, parent_vars = setup
  logits_c, grads_c = _loss_and_grads(cand_model, cand_vars, True)  # batch statistics, as in training
  logits_p, grads_p = _loss_and_grads(parent_model, parent_vars, True)
  np.testing.assert_array_equal(np.asarray(logits_c), np.asarray(logits_p))  # stop-forward: exactly +0
  np.testing.assert_array_equal(_infer(cand_model, cand_vars), _infer(parent_model, parent_vars))
  for name in grads_p:  # stop-gradient: the parent's gradients are the parent alone's
    for a, b in zip(jax.tree.leaves(grads_c[name]), jax.tree.leaves(grads_p[name])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7, err_msg=name)
  assert float(jnp.abs(grads_p["gate_0"])) > 0  # the parent's gradients are not trivially zero
  # Every candidate with weights gets a gradient, and so does every merge weight beyond its L1 term.
  for i, (op, _, _) in enumerate(CANDS):
    if OPS[op - 1].startswith(("sep", "dil")):
      norm = sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(grads_c[f"cand_{i}"]))
      assert norm > 0, f"candidate {i} ({OPS[op - 1]}) got no gradient"
  n_at = np.asarray([sum(1 for c in CANDS if c[2] == j) for _, _, j in CANDS], np.float64)
  omega = np.asarray(cand_vars["params"]["omega"], np.float64)
  np.testing.assert_allclose(omega, 1.0 / n_at)  # petridishnn: omega starts at 1 / n
  data_grad = np.asarray(grads_c["omega"], np.float64) - nets.L1_SCALE / n_at * np.sign(omega)
  assert np.all(np.abs(data_grad) > 0), data_grad


@pytest.mark.slow
def test_without_stop_gradient_the_parent_would_change(setup):
  """The check above can fail: the same candidates merged as a child do change the parent's gradients."""
  _, cand_vars, parent_model, parent_vars = setup
  grown = SPACE.append(PARENT, [CANDS[3]])
  child = nets.build_child(SPACE, grown, **NET)
  init = jax.jit(lambda k: child.init({"params": k}, _x(), train=False))(jax.random.key(0))
  v = nets.transfer_from_candidates(2, [3])(cand_vars, init)
  v["params"]["gate_2"] = jnp.asarray(1.0)
  _, g_child = _loss_and_grads(child, v)
  _, g_parent = _loss_and_grads(parent_model, parent_vars)
  assert not np.allclose(np.asarray(g_child["stem"]["w"]), np.asarray(g_parent["stem"]["w"]))


def test_warm_started_child_reproduces_its_parent_at_step_0(setup):
  cand_model, cand_vars, parent_model, parent_vars = setup
  selected = [5, 0, len(CANDS) - 1]
  grown = SPACE.append(PARENT, [CANDS[i] for i in selected])
  child = nets.build_child(SPACE, grown, **NET)
  init = jax.jit(lambda k: child.init({"params": k}, _x(), train=False))(jax.random.key(9))
  moved = nets.transfer_from_candidates(SPACE.num_layers(PARENT), selected)(cand_vars, init)
  _check_same_structure(moved, init)  # what train_child checks before it starts
  for k, c in enumerate(selected):  # the candidates' trained weights moved into the new layers
    for a, b in zip(jax.tree.leaves(moved["params"][f"layer_{2 + k}"]),
                    jax.tree.leaves(cand_vars["params"][f"cand_{c}"])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(moved["params"][f"gate_{2 + k}"]) == 0.0
  parent_out, child_out = _infer(parent_model, parent_vars), _infer(child, moved)
  np.testing.assert_array_equal(child_out, parent_out)
  moved["params"]["gate_2"] = jnp.asarray(0.5)  # and the new layers are live once their gate opens
  opened = _infer(child, moved)
  assert not np.allclose(np.asarray(opened), np.asarray(parent_out))


def test_transfer_rejects_a_child_that_is_not_the_parent_grown():
  cand_vars = {"params": {"cand_0": {"w": np.zeros((3, 3))}, "stem": {"w": np.zeros(2)}}}
  child = {"params": {"layer_0": {"w": np.zeros((2, 2))}, "stem": {"w": np.zeros(2)}, "gate_0": 0.0}}
  with pytest.raises(ValueError, match="does not fit the child"):
    nets.transfer_from_candidates(0, [0])(cand_vars, child)


def test_selection_keeps_at_most_k_above_the_threshold():
  rng = np.random.default_rng(0)
  for _ in range(200):
    w = rng.normal(size=rng.integers(1, 15)) * rng.choice([1e-4, 1e-2, 1.0])
    k, thr = int(rng.integers(0, 5)), float(rng.choice([0.0, 1e-3, 0.5]))
    got = nets.select_candidates(w, k, thr)
    assert len(got) <= k and len(set(got)) == len(got)
    assert all(abs(w[i]) > thr for i in got)
    above = sorted((i for i in range(len(w)) if abs(w[i]) > thr), key=lambda i: -abs(w[i]))
    assert sorted(abs(w[i]) for i in got) == sorted(abs(w[i]) for i in above[:k])
  assert nets.select_candidates([0.2, -0.5, 1e-5, 0.2], k=3, threshold=1e-3) == [1, 0, 3]
  method = pd.Petridish(SPACE, {})
  assert method.select([1e-6, -2e-6], free_rows=4) == ([1], "fallback_top1")
  assert method.select([0.5, 0.4, 0.3, 0.2], free_rows=2) == ([0, 1], "threshold")


def _brute_lower_hull(xs, ys):
  """Points not dominated and strictly below every chord of two others around them."""
  out = []
  for i in range(len(xs)):
    if any(j != i and xs[j] <= xs[i] and ys[j] <= ys[i] for j in range(len(xs))):
      continue
    if any(xs[a] < xs[i] < xs[b] and ys[i] >= ys[a] + (ys[b] - ys[a]) * (xs[i] - xs[a]) / (xs[b] - xs[a])
           for a, b in itertools.permutations(range(len(xs)), 2)):
      continue
    out.append(i)
  return sorted(out, key=lambda i: xs[i])


def test_lower_convex_hull_matches_brute_force():
  rng = np.random.default_rng(1)
  for _ in range(150):
    n = int(rng.integers(1, 12))
    xs, ys = rng.uniform(1, 100, n), rng.uniform(0, 1, n)
    assert pd.lower_convex_hull(xs, ys) == _brute_lower_hull(xs, ys)
  # A costlier model with more error is never on the hull; the cheapest always is.
  assert pd.lower_convex_hull([1, 2, 3, 4], [0.5, 0.3, 0.35, 0.1]) == [0, 1, 3]
  assert pd.lower_convex_hull([1, 2], [0.2, 0.3]) == [0]


def test_parent_choice_follows_the_hull_rule():
  # flops, error: 0, 1, 3 on the hull; 2 within 2.5 % of it; 4 and 5 far above; 6 never trained.
  pool = [(100, 0.50), (200, 0.30), (300, 0.255), (400, 0.20), (250, 0.45), (500, 0.40), (150, None)]
  models = [{"flops": f, "valid_acc": None if e is None else 100 * (1 - e), "parent": None}
            for f, e in pool]
  assert pd.eps_hull([m for m, _ in pool[:6]], [e for _, e in pool[:6]], 0.025) == [0, 1, 2, 3]
  draws = [pd.choose_parent(models, jax.random.key(s), eps=0.025) for s in range(300)]
  assert set(draws) == {0, 1, 2, 3}
  counts = np.bincount(draws, minlength=4)
  # Archai's weights: cheaper models more often (all sampled equally often so far).
  p = pd.parent_weights([100, 200, 300, 400], [0, 0, 0, 0])
  assert p[0] > p[1] > p[2] > p[3]
  np.testing.assert_allclose(counts[:4] / 300, p, atol=0.08)
  # A model already grown from often is chosen less.
  grown = models + [{"flops": 10_000, "valid_acc": 1.0, "parent": 0}] * 5
  again = [pd.choose_parent(grown, jax.random.key(s), eps=0.025) for s in range(300)]
  assert np.mean(np.asarray(again) == 0) < np.mean(np.asarray(draws) == 0)
  assert pd.frontier(models) == [0, 1, 3]
  assert pd.pareto_front(models) == [0, 1, 2, 3]  # 2: off the hull, but nothing beats it in both
  # Models that cannot grow shape the hull but are never chosen.
  assert {pd.choose_parent(models, jax.random.key(s), 0.025, exclude=[0, 3]) for s in range(60)} == {1, 2}
  with pytest.raises(ValueError, match="max_layers"):
    pd.choose_parent(models, jax.random.key(0), 0.025, exclude=[0, 1, 2, 3])


def test_closed_form_cost_equals_the_traced_count():
  arch = SPACE.append(PARENT, [(OPS.index(o) + 1, i, j) for o, i, j in
                               [("sep_conv_5x5", 0, 0), ("dil_conv_5x5", 2, 3), ("max_pool_3x3", 1, 1),
                                ("skip_connect", 2, 2)]])
  for a in (SPACE.empty(), arch):
    traced = cost_lib.count_cost(SPACE, a, input_shape=(8, 8, 1), **NET)
    closed = nets.child_cost(a, stages=2, layers_per_stage=1, input_shape=(8, 8, 1), **NET)
    assert traced == closed
  assert nets.child_cost(arch, **NET)["flops"] > nets.child_cost(SPACE.empty(), **NET)["flops"]


def test_space_round_trips_and_rejects_bad_rows():
  arch = SPACE.append(PARENT, [(1, 2, 2)])
  g = SPACE.to_genotype(arch)
  assert json.loads(json.dumps(g)) == g
  np.testing.assert_array_equal(SPACE.from_genotype(g), arch)
  swapped = arch.copy()
  swapped[[0, 1]] = swapped[[1, 0]]
  assert SPACE.arch_id(swapped) == SPACE.arch_id(arch)  # the function does not depend on row order
  keys = jax.random.split(jax.random.key(0), 50)
  samples = jax.jit(jax.vmap(SPACE.sample))(keys)
  mutants = jax.jit(jax.vmap(SPACE.mutate, in_axes=(0, None)))(keys, arch)
  for a, m in zip(np.asarray(samples), np.asarray(mutants)):
    SPACE.validate(a)
    SPACE.validate(m)
  assert len({SPACE.arch_id(a) for a in np.asarray(samples)}) > 40
  bad = SPACE.empty()
  bad[0] = (1, 3, 1)  # input after the join
  with pytest.raises(ValueError, match="at or before"):
    SPACE.validate(bad)
  bad[0] = (1, 0, 2)  # input of another resolution
  with pytest.raises(ValueError, match="stage"):
    SPACE.validate(bad)
  with pytest.raises(ValueError, match="layers_per_stage"):
    SPACE.from_genotype({**g, "layers_per_stage": 3})
  with pytest.raises(ValueError, match="max_layers"):
    SPACE.append(arch, [(1, 0, 0)] * 8)


def test_cell_space_round_trips_and_rejects_bad_rows():
  from nas_jax.spaces.petridish_cell import PetridishCellSpace
  space = PetridishCellSpace(stages=2, cells_per_stage=1, max_layers=4)
  arch = space.append(space.empty(), [(4, 2, 0), (1, 0, 1), (7, 1, 1)])
  g = space.to_genotype(arch)
  assert [l["cell"] for l in g["layers"]] == ["normal", "reduce", "reduce"]
  np.testing.assert_array_equal(space.from_genotype(json.loads(json.dumps(g))), arch)
  for a in np.asarray(jax.jit(jax.vmap(space.sample))(jax.random.split(jax.random.key(0), 20))):
    space.validate(a)
  bad = space.empty()
  bad[0] = (1, 3, 0)
  with pytest.raises(ValueError, match="in0"):
    space.validate(bad)
  bad[0] = (1, 0, 2)
  with pytest.raises(ValueError, match="normal"):
    space.validate(bad)
  with pytest.raises(ValueError, match="cells_per_stage"):
    space.from_genotype({**g, "cells_per_stage": 2})


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match="unknown petridish setting"):
    pd.Petridish(SPACE, {"select_top": 3})
  with pytest.raises(ValueError, match="select_k"):
    pd.Petridish(SPACE, {"select_k": 0})
  from nas_jax.spaces import get_space
  with pytest.raises(ValueError, match="--space petridish"):
    pd.Petridish(get_space("nb201"), {})


# --- the growth loop: a real run, killed and resumed ------------------------------------------------
TINY = {"space": "petridish", "dataset": "digits", "budget": 3, "seed": 0,
        "data": {"train_size": 192, "valid_size": 64},
        "strategy": {"name": "petridish", "init_channels": 4, "batch_size": 32, "seed_epochs": 2,
                     "candidate_epochs": 1, "child_epochs": 2},
        "final": {"epochs": 0}, "checkpoint": {"interval_s": 30.0, "keep": 2}}


@pytest.mark.slow
def test_sigkill_mid_job_then_resume_matches_uninterrupted(tmp_path):
  import os
  import pathlib
  import random
  import signal
  import subprocess
  import sys
  import time
  from nas_jax.runner import experiment
  root = pathlib.Path(__file__).resolve().parents[1]
  seed = int(os.environ.get("NAS_JAX_KILL_SEED", time.time_ns() % 10**6))
  rng = random.Random(seed)
  config_file = tmp_path / "config.py"
  config_file.write_text(f"def get_config():\n  return {TINY!r}\n")
  env = {**os.environ, "NAS_JAX_COMPILE_CACHE": str(tmp_path / "xla_cache")}
  cmd = lambda w: [sys.executable, str(root / "experiments" / "run.py"), "--config", str(config_file),  # noqa: E731
                   "--workdir", str(w), "--quiet"]
  ref = tmp_path / "reference"
  done = subprocess.run(cmd(ref), capture_output=True, cwd=root, env=env)
  assert done.returncode == 0, done.stderr.decode()[-2000:]
  workdir, kills = tmp_path / "killed", []
  history = workdir / "history.jsonl"
  lines = lambda: history.read_bytes().count(b"\n") if history.exists() else 0  # noqa: E731
  for attempt in range(2):  # 1: once the seed is on disk, a random moment of the growth job; 2: anywhere
    proc = subprocess.Popen(cmd(workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root, env=env)
    t_start = time.monotonic()
    while time.monotonic() < t_start + 600 and proc.poll() is None:
      if (lines() >= 1) if attempt == 0 else (time.monotonic() > t_start + 8):
        break
      time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 20.0))
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      kills.append(history.read_bytes().count(b"\n") if history.exists() else 0)
    else:
      proc.communicate()
  done = subprocess.run(cmd(workdir), capture_output=True, cwd=root, env=env)
  info = f"kill seed {seed} (NAS_JAX_KILL_SEED), lines at the kills {kills}"
  assert done.returncode == 0, done.stderr.decode()[-2000:] + info
  assert kills, info
  read = lambda w: [experiment.strip_wall_clock(json.loads(l))  # noqa: E731
                    for l in (w / "history.jsonl").read_text().splitlines()]
  assert read(workdir) == read(ref), info
  assert json.loads((workdir / "pareto.json").read_text()) == json.loads((ref / "pareto.json").read_text())
  result = json.loads((workdir / "result.json").read_text())
  assert result["resumed_sessions"] >= 1 and result["num_evaluations"] == 3, info
  assert all((workdir / "evaluations" / l["weights"]).is_file() for l in read(workdir))


# --- cell-based growth: shared normal / reduction cells ----------------------------------------------
def _cell_setup():
  from nas_jax.networks import petridish_cell as cell_nets
  from nas_jax.spaces.petridish_cell import PetridishCellSpace
  space = PetridishCellSpace(stages=2, cells_per_stage=1, max_layers=6)
  parent = space.append(space.empty(), [(OPS.index("sep_conv_3x3") + 1, 2, 0),
                                        (OPS.index("max_pool_3x3") + 1, 0, 1)])
  cands = [(OPS.index("sep_conv_3x3") + 1, 1, 0), (OPS.index("skip_connect") + 1, 0, 1),
           (OPS.index("dil_conv_3x3") + 1, 2, 1)]
  cand_model = cell_nets.build_candidates(space, parent, cands, **NET)
  v = jax.jit(lambda k: cand_model.init({"params": k}, _x(), train=False))(jax.random.key(0))
  params = dict(v["params"])
  params["c0_gate_0"], params["c1_gate_1"] = jnp.asarray(0.6), jnp.asarray(-0.3)
  cand_vars = {"params": params, "batch_stats": v["batch_stats"]}
  parent_model = cell_nets.build_child(space, parent, **NET)
  shapes = jax.eval_shape(lambda: parent_model.init({"params": jax.random.key(0)}, _x(), train=False))
  parent_vars = {col: {k: cand_vars[col][k] for k in shapes[col]} for col in shapes}
  return space, parent, cands, cand_model, cand_vars, parent_model, parent_vars


@pytest.mark.slow  # ~20 s of CPU compiling the cell networks; run with -m slow
def test_cell_growth_keeps_the_parent_function():
  from nas_jax.networks import petridish_cell as cell_nets
  space, parent, cands, cand_model, cand_vars, parent_model, parent_vars = _cell_setup()
  # Candidates in every cell of their type leave the parent's outputs unchanged ...
  np.testing.assert_array_equal(_infer(cand_model, cand_vars), _infer(parent_model, parent_vars))
  assert {k for k in cand_vars["params"] if "cand" in k} == {
      "c0_cand_0", "c2_cand_0", "c1_cand_1", "c1_cand_2"}  # per instance of the cell type
  # ... and the grown child, warm-started through the transfer, computes the parent's function.
  selected = [2, 0]
  child = cell_nets.build_child(space, space.append(parent, [cands[i] for i in selected]), **NET)
  init = jax.jit(lambda k: child.init({"params": k}, _x(), train=False))(jax.random.key(3))
  moved = nets.transfer_from_candidates(2, selected)(cand_vars, init)
  _check_same_structure(moved, init)
  np.testing.assert_array_equal(np.asarray(moved["params"]["c1_layer_2"]["pw"]),
                                np.asarray(cand_vars["params"]["c1_cand_2"]["pw"]))
  np.testing.assert_array_equal(_infer(child, moved), _infer(parent_model, parent_vars))
  moved["params"]["c2_gate_3"] = jnp.asarray(0.5)
  assert not np.allclose(_infer(child, moved), _infer(parent_model, parent_vars))


@pytest.mark.slow
def test_cell_candidates_leave_the_parent_gradients_unchanged():
  _, _, cands, cand_model, cand_vars, parent_model, parent_vars = _cell_setup()
  logits_c, grads_c = _loss_and_grads(cand_model, cand_vars)
  logits_p, grads_p = _loss_and_grads(parent_model, parent_vars)
  np.testing.assert_array_equal(np.asarray(logits_c), np.asarray(logits_p))
  for name in grads_p:
    for a, b in zip(jax.tree.leaves(grads_c[name]), jax.tree.leaves(grads_p[name])):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7, err_msg=name)
  for name in ("c0_cand_0", "c2_cand_0", "c1_cand_2"):  # the candidates with weights learn
    assert sum(float(jnp.sum(jnp.abs(g))) for g in jax.tree.leaves(grads_c[name])) > 0, name
