"""Tests of BayesNAS (nas_jax.oneshot.bayesnas).

Most tests run on ``ToyNB201``: the nb201 cell (6 edges x 5 ops) over 8-dim
vectors instead of images (``skip`` identity, ``nor_conv_1x1`` a linear map,
``nor_conv_3x3`` tanh of one, ``avg_pool_3x3`` the mean), which compiles in a
second or two; the same relaxation is registered as strategy
``test_toy_bayesnas`` so the runner (history, SIGKILL resume, plot) is tested
end to end on the ``nb201`` space. The ``darts`` pruning rule runs on
hand-made switches of the real ``darts`` relaxation (nothing compiled).
"""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import experiment_doubles
from nas_jax import registry, runner
from nas_jax.data import images as data_lib
from nas_jax.oneshot import bayesnas
from nas_jax.oneshot.bayesnas import BayesNAS
from nas_jax.spaces.nb201 import EDGES

ROOT = pathlib.Path(__file__).resolve().parent.parent
RUN = ROOT / "experiments" / "run.py"
D = 8


class ToyNB201:
  """A ``ContinuousRelaxation`` of the nb201 cell on vectors (see the module docstring)."""

  op_names = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

  def config(self, **fields):
    return dict(fields)

  def weights_shape(self, config=None):
    return (6, 5)

  def init(self, key, config, input_shape):
    d_in = int(np.prod(input_shape))
    rng = np.random.default_rng(int(jax.random.key_data(key).ravel()[-1]))  # host draws: nothing to compile
    n = lambda s, fan: jnp.asarray(rng.normal(size=s).astype(np.float32) / np.sqrt(fan))  # noqa: E731
    return ({"stem": n((d_in, D), d_in), "a": n((6, D, D), D), "b": n((6, D, D), D),
             "head": n((D, config["num_classes"]), D)}, {})

  def apply(self, params, batch_stats, weights, x, *, config, train):
    del config, train
    nodes = [jnp.tanh(x.reshape(x.shape[0], -1) @ params["stem"])]
    for dst in range(1, 4):
      acc = 0.0
      for e, (d, src) in enumerate(EDGES):
        if d != dst:
          continue
        h = nodes[src]
        outs = (0.0, h, h @ params["a"][e], jnp.tanh(h @ params["b"][e]), jnp.mean(h, -1, keepdims=True) + 0 * h)
        acc = acc + sum(weights[e, o] * outs[o] for o in range(1, 5))
      nodes.append(acc)
    return nodes[3] @ params["head"], batch_stats

  def derive(self, weights, config=None):
    return np.asarray(weights).argmax(-1).astype(np.int32)

  def one_hot_weights(self, arch, config=None):
    return np.eye(5, dtype=np.float32)[np.asarray(arch)]


def toy_data(n=256, classes=4, seed=0):
  """8x8x1 'images' labelled by a random linear map (digits-shaped, cheap)."""
  return data_lib.load_dataset("digits", train_size=n, valid_fraction=0.5, seed=seed)


_DATA = toy_data()


class ToyBayesNAS(BayesNAS):
  """BayesNAS on the toy relaxation (registered as strategy ``test_toy_bayesnas``)."""

  name = "test_toy_bayesnas"

  def __init__(self, space, config=None, *, data=None):
    super().__init__(space, config, data=data, continuous=ToyNB201())


registry.register("strategy", "test_toy_bayesnas", f"{__name__}:ToyBayesNAS")


def toy(**config):
  cfg = {"augment": False, "epochs": 4, "batch_size": 32, "steps_per_epoch": 3, "hessian_batches": 2, **config}
  return ToyBayesNAS(registry.get_space("nb201"), cfg, data=_DATA)


def run(method, state, steps):
  for t in range(steps):
    state, metrics = method.step(state, jax.random.key(t))
  return state, metrics


# --- the Hessian diagonal ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
  """The toy method (exact Hessian) after 7 steps (a prior update, switches moved), a batch, the flat loss and
  its full Hessian by ``jax.hessian``."""
  from jax.flatten_util import ravel_pytree  # pylint: disable=import-outside-toplevel
  m = toy(hessian="exact")
  s, _ = run(m, m.init(jax.random.key(0)), 7)
  b = next(data_lib.epoch_batches(_DATA, "train", 32, seed=0, epoch=0))
  x, y = b["image"], b["label"]
  flat, unravel = ravel_pytree(s["switches"])
  f = lambda v: m._loss(s["params"], s["batch_stats"], unravel(v), x, y)[0]  # noqa: E731  pylint: disable=protected-access
  return m, s, (x, y), flat, f, np.asarray(jax.jit(jax.hessian(f))(flat))


def test_exact_hessian_diagonal_equals_jax_hessian(trained):
  from jax.flatten_util import ravel_pytree  # pylint: disable=import-outside-toplevel
  m, s, xy, _, _, hess = trained
  got = m.switch_hessian(s, xy)
  np.testing.assert_allclose(np.asarray(ravel_pytree(got)[0]), np.diag(hess), rtol=2e-4, atol=1e-7)
  assert np.abs(np.diag(hess)).max() > 1e-4  # not a vacuous comparison
  assert np.all(np.asarray(got["op"])[:, 0] == 0)  # 'none' has no curvature


def test_hutchinson_is_its_definition_and_exact_for_a_diagonal_hessian(trained):
  _, _, _, flat, f, hess = trained
  key = jax.random.key(5)
  z = np.asarray(jax.random.rademacher(key, flat.shape, dtype=flat.dtype))
  got = np.asarray(jax.jit(lambda v, k: bayesnas.hessian_diagonal(f, v, mode="hutchinson", key=k))(flat, key))
  np.testing.assert_allclose(got, z * (hess @ z), rtol=2e-4, atol=1e-6)
  assert not np.allclose(got, np.diag(hess), atol=1e-4)  # an estimate here: H is not diagonal
  # Exact when the Hessian is diagonal (a separable loss), for any probe.
  g = lambda v: jnp.sum(jnp.cos(v) * jnp.arange(1.0, v.shape[0] + 1)) + jnp.sum(v ** 4)  # noqa: E731
  v0 = jnp.linspace(-1.0, 1.0, 9)
  est = jax.jit(jax.vmap(lambda k: bayesnas.hessian_diagonal(g, v0, mode="hutchinson", key=k)))(
      jax.random.split(jax.random.key(0), 3))
  np.testing.assert_allclose(np.asarray(est), np.tile(np.diag(np.asarray(jax.hessian(g)(v0))), (3, 1)), rtol=1e-5)
  # Unbiased: the mean over many probes approaches the diagonal.
  quad = lambda v: v @ jnp.asarray(hess) @ v / 2  # noqa: E731
  draws = jax.jit(jax.vmap(lambda k: bayesnas.hessian_diagonal(quad, flat, mode="hutchinson", key=k)))(
      jax.random.split(jax.random.key(1), 400))
  off = np.sqrt(np.sum(hess ** 2, 1) - np.diag(hess) ** 2)  # the estimator's standard deviation
  assert np.all(np.abs(np.asarray(draws).mean(0) - np.diag(hess)) < 4 * off / np.sqrt(400) + 1e-6)


# --- the prior ----------------------------------------------------------------------------------
def test_ard_updates_drive_irrelevant_switches_to_zero():
  """Sparse linear regression with noise: the switches of the zero coefficients go to 0, the others stay."""
  rng = np.random.default_rng(0)
  n, k = 200, 10
  x = rng.normal(size=(n, k))
  truth = np.zeros(k)
  truth[:3] = [1.5, -1.0, 0.8]
  y = x @ truth + 0.5 * rng.normal(size=n)
  lam = 0.02
  loss = lambda s: 0.5 * jnp.mean((y - x @ s) ** 2)  # noqa: E731
  s = np.linalg.lstsq(x, y, rcond=None)[0]  # least squares: irrelevant coefficients ~0.03-0.1, not 0
  assert np.abs(s[3:]).max() > 0.02
  gamma, omega = np.ones(k), np.ones(k)
  grad = jax.jit(jax.grad(loss))
  for _ in range(8):  # outer iterations: fit the penalised loss, then update the prior
    for _ in range(300):
      s = s - 0.05 * (np.asarray(grad(s)) + lam * omega * np.sign(s))
    h = np.asarray(bayesnas.hessian_diagonal(loss, jnp.asarray(s)))
    out = bayesnas.ard_update(np.ones(1), s[None], np.zeros(1), h[None], np.full(1, 1e6), gamma[None],
                              lam_edge=lam, lam_op=lam)
    gamma, omega = out["gamma_op"][0], out["omega_op"][0]
  assert np.abs(s[3:]).max() < 0.01 * np.abs(s[:3]).min(), s
  assert gamma[3:].max() < 1e-2 * gamma[:3].min(), gamma
  assert np.all(np.abs(s[:3] - truth[:3]) < 0.2)


def test_hierarchy_edge_bounds_its_ops():
  out = bayesnas.ard_update(np.array([1.0, 1e-6]), np.ones((2, 3)), np.ones(2), np.ones((2, 3)), np.ones(2),
                            np.ones((2, 3)), lam_edge=0.01, lam_op=0.01, op_mask=np.array([0.0, 1.0, 1.0]))
  assert np.all(out["gamma_op"][1] <= out["gamma_edge"][1] + 1e-12)  # a dead edge kills its ops
  assert out["gamma_op"][0, 0] == 0.0  # 'none' masked
  h = 1.0 / 0.01
  np.testing.assert_allclose(out["omega_op"][0, 1], np.sqrt(h / (1 + h)), rtol=1e-12)  # closed form, gamma = 1


# --- derive -------------------------------------------------------------------------------------
def fake_state(m, gamma_op, gamma_edge, w):
  return {"prior": {"gamma_op": np.asarray(gamma_op, np.float32), "gamma_edge": np.asarray(gamma_edge, np.float32)},
          "switches": {"edge": jnp.ones(np.shape(gamma_edge)), "op": jnp.asarray(w, jnp.float32)},
          "iteration": 1}


def test_nb201_derive_prunes_and_keeps_nodes_connected():
  m = toy()
  mask = np.array([0, 1, 1, 1, 1], np.float32)
  g = np.full((6, 5), 1.0) * mask
  g[:, 3] = 2.0  # conv3x3 most relevant everywhere
  # Prune edges 1<-0 and 3<-0: node 1 has no input, so 2<-1 and 3<-1 go; the path 0->2->3 stays.
  ge = np.ones(6)
  ge[[0, 3]] = 1e-6
  arch = m.derive(fake_state(m, g, ge, np.ones((6, 5)) * mask))
  assert arch.tolist() == [0, 3, 0, 0, 0, 3]
  # Everything pruned: the path whose weakest edge is strongest comes back (0 -> 3 here).
  ge = np.full(6, 1e-6)
  g2 = g * 1e-6
  g2[3, 2] = 5e-4
  arch = m.derive(fake_state(m, g2, ge, np.ones((6, 5)) * mask))
  assert arch.tolist() == [0, 0, 0, 2, 0, 0]
  # Ties in gamma (before any update) fall back to the magnitude |w|.
  w = np.ones((6, 5)) * mask
  w[:, 1] = 3.0
  assert m.derive(fake_state(m, np.ones((6, 5)) * mask, np.ones(6), w)).tolist() == [1] * 6


def test_darts_derive_two_inputs_per_node_even_when_pruned():
  data = data_lib.load_dataset("digits", train_size=128, valid_fraction=0.5)
  m = BayesNAS(registry.get_space("darts"), {"init_channels": 2, "layers": 1, "epochs": 2}, data=data)
  rng = np.random.default_rng(0)
  mask = np.ones((2, 14, 8))
  mask[..., 0] = 0
  g = rng.uniform(0.5, 1.0, (2, 14, 8)) * mask
  ge = np.ones((2, 14))
  ge[:, :9] = 1e-6  # every edge into nodes 0..2 pruned: nodes 0..2 keep their strongest two anyway
  s = fake_state(m, g, ge, mask)
  arch = m.derive(s)
  assert arch.shape == (2, 4, 4)
  for c in range(2):
    for n in range(4):
      assert arch[c, n, 0] != arch[c, n, 2] and max(arch[c, n, 0], arch[c, n, 2]) <= n + 1
  summary = json.loads(json.dumps(m.summary(s)))
  assert summary["forced"] == 2 * 2 * 3  # two branches of nodes 0..2 in both cell types
  assert summary["surviving"]["normal"][:9] == [0] * 9 and summary["surviving"]["normal"][9] == 7
  # node 3's best edge and op are the most relevant ones among its surviving edges
  rows = list(range(9, 14))
  gbest = g[0, rows].max(1)
  assert arch[0, 3, 0] == int(np.argmax(gbest))
  assert arch[0, 3, 1] == int(np.argmax(g[0, rows[arch[0, 3, 0]], 1:]))


# --- the method and the runner ------------------------------------------------------------------
def test_schedule_steps_and_determinism():
  m = toy()
  assert [m.phase(t) for t in range(12)] == ([(False, False)] * 3 + [(True, False)] * 2 + [(True, True)]) * 2
  s0 = m.init(jax.random.key(0))
  s, metrics = run(m, s0, 3)  # weight phase: switches frozen
  assert np.array_equal(np.asarray(s["switches"]["op"]), np.asarray(s0["switches"]["op"]))
  assert metrics["switch_phase"] == 0.0 and int(s["iteration"]) == 0
  s, metrics = run(m, s, 3)  # switch phase, then the prior update
  assert metrics["switch_phase"] == 1.0 and metrics["penalty"] > 0 and int(s["iteration"]) == 1
  assert not np.array_equal(np.asarray(s["switches"]["op"]), np.asarray(s0["switches"]["op"]))
  assert np.any(np.asarray(s["prior"]["gamma_op"]) != np.asarray(s0["prior"]["gamma_op"]))
  again, _ = run(m, m.init(jax.random.key(0)), 6)
  assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(again)))
  assert m._step_fn._cache_size() == 1  # pylint: disable=protected-access
  rec = m.score(s, m.derive(s), jax.random.key(0))
  assert 0 <= rec["search_score"] <= 100 and np.isfinite(rec["supernet_valid_loss"])


def test_config_errors():
  with pytest.raises(ValueError, match="unknown test_toy_bayesnas setting"):
    toy(order="first")
  with pytest.raises(ValueError, match="lam must be"):
    toy(lam=0.0)
  with pytest.raises(ValueError, match="hessian must be"):
    toy(hessian="diag")
  with pytest.raises(ValueError, match="does not support space"):
    ToyBayesNAS(registry.get_space("nasnet"), {}, data=_DATA)
  assert toy().hessian_mode == "exact" and toy(exact_max_switches=8).hessian_mode == "hutchinson"


EPOCHS = 4


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  return experiment_doubles.write_synthetic_table(tmp_path_factory.mktemp("table") / "nb201_synthetic.csv.gz")


def config(table):
  return {"space": "nb201", "budget": EPOCHS, "seed": 3, "data": {"valid_fraction": 0.5, "train_size": 256},
          "strategy": {"name": "test_toy_bayesnas", "steps_per_epoch": 3, "batch_size": 32, "augment": False,
                       "hessian_batches": 2, "eval_batch_size": 64},
          "evaluator": {"name": "auto", "tabular": {"benchmark_file": table}},
          "final": {"epochs": 0}, "checkpoint": {"interval_s": 0.0}}


def num_lines(path):
  try:
    return path.read_bytes().count(b"\n")
  except FileNotFoundError:
    return 0


def reference_run(table, workdir):
  result = runner.run_experiment(runner.merge(runner.default_config(), config(table)), workdir, quiet=True)
  lines = [json.loads(l) for l in (workdir / "history.jsonl").read_text().splitlines()]
  return result, lines


def test_runner_history_and_switch_plot(table, tmp_path):
  result, lines = reference_run(table, tmp_path / "run")
  assert [l["epoch"] for l in lines] == list(range(1, EPOCHS + 1))
  assert [l["arch_params"]["iteration"] for l in lines] == [0, 1, 1, 2]  # a prior update every 2 epochs
  assert [l["train"]["switch_phase"] for l in lines] == [0.0, 1.0, 0.0, 1.0]
  assert set(lines[-1]["train"]) == {"train_loss", "train_acc", "penalty", "switch_phase", "lr"}
  assert len(lines[-1]["arch_params"]["switches"]["cell"]) == 6
  assert (tmp_path / "run" / "switches.png").is_file() and result["kind"] == "oneshot"
  assert result["best_genotype"] == lines[-1]["genotype"]


@pytest.mark.slow  # three runs, two of them in fresh processes: ~40 s on 2 idle cores, minutes on busy ones
def test_sigkill_then_resume_matches_uninterrupted(table, tmp_path):
  cfg = config(table)
  ref = tmp_path / "reference"
  result, _ = reference_run(table, ref)
  # SIGKILL in the middle of the run, rerun the same command: the same history.
  seed = int(os.environ.get("NAS_JAX_KILL_SEED", time.time_ns() % 10**6))
  rng = random.Random(seed)
  config_file = tmp_path / "config.py"
  config_file.write_text(f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                         "import test_bayesnas  # registers test_toy_bayesnas\n\n\n"
                         f"def get_config():\n  return {cfg!r}\n")
  workdir = tmp_path / "killed"
  # The session's compile cache (tests/conftest.py): the subprocesses reuse the reference run's programs.
  env = {**os.environ, "NAS_JAX_COMPILE_CACHE": jax.config.jax_compilation_cache_dir or str(tmp_path / "xla")}
  cmd = [sys.executable, str(RUN), "--config", str(config_file), "--workdir", str(workdir), "--quiet"]
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
  t_end = time.monotonic() + 240
  target = rng.randint(1, 2)
  while num_lines(workdir / "history.jsonl") < target and proc.poll() is None:
    assert time.monotonic() < t_end, "no progress"
    time.sleep(0.01)
  time.sleep(rng.uniform(0.0, 0.3))
  killed = proc.poll() is None
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = subprocess.run(cmd, capture_output=True, cwd=ROOT, env=env)
  assert done.returncode == 0, done.stderr.decode()[-2000:]
  info = f"kill seed {seed} (NAS_JAX_KILL_SEED), target {target}, killed {killed}"
  strip = lambda l: l.rpartition(', "wall_time_s": ')[0]  # noqa: E731
  got = (workdir / "history.jsonl").read_text().splitlines()
  want = (ref / "history.jsonl").read_text().splitlines()
  assert [strip(l) for l in got] == [strip(l) for l in want], info
  got_result = json.loads((workdir / "result.json").read_text())
  assert runner.strip_wall_clock(got_result) == runner.strip_wall_clock(result), info
  assert killed and got_result["resumed_sessions"] >= 1, info


# --- compression (nas_jax.oneshot.bayesnas_compress) ------------------------------------------
def test_lenet_switches_and_weight_count():
  from nas_jax.oneshot import bayesnas_compress as bc  # pylint: disable=import-outside-toplevel
  full = {k: np.ones(n) for k, n in bc.UNITS.items()}
  assert sum(bc.kept_weights(full, (8, 8, 1), 10).values()) == 21150
  half = {k: np.arange(n) % 2 == 0 for k, n in bc.UNITS.items()}
  assert bc.kept_weights(half, (8, 8, 1), 10) == {"conv1": 75, "conv2": 25 * 3 * 8, "fc1": 4 * 8 * 60,
                                                  "fc2": 60 * 42, "fc3": 420}
  params = bc.init_lenet(jax.random.key(0), (8, 8, 1), 10)
  x = jnp.ones((2, 8, 8, 1))
  on = {k: jnp.ones(n) for k, n in bc.UNITS.items()}
  off = {**on, "fc2": jnp.zeros(84)}  # a layer switched off: only the last bias is left
  assert bc.apply_lenet(params, on, x).shape == (2, 10)
  np.testing.assert_allclose(np.asarray(bc.apply_lenet(params, off, x)), np.zeros((2, 10)), atol=1e-6)
  with pytest.raises(ValueError, match="unknown compression setting"):
    bc.compress(_DATA, {"lambda": 0.1})


def test_vgg_small_shapes_and_weight_count():
  from nas_jax.oneshot import bayesnas_compress as bc  # pylint: disable=import-outside-toplevel
  units = bc.model_units("vgg_small")
  params = bc.init_model("vgg_small", jax.random.key(0), (32, 32, 3), 10)
  n_weights = sum(int(np.prod(p["w"].shape)) for p in params.values())
  full = {k: np.ones(n) for k, n in units.items()}
  assert sum(bc.kept_weights(full, (32, 32, 3), 10, "vgg_small").values()) == n_weights
  assert params["fc1"]["w"].shape == (4 * 4 * 64, 128) and n_weights == 204208  # three pools: 32 -> 4
  keep = {**full, "conv6": np.arange(64) < 16}  # a quarter of the last conv's filters
  kept = bc.kept_weights(keep, (32, 32, 3), 10, "vgg_small")
  assert kept["conv6"] == 9 * 64 * 16 and kept["fc1"] == 16 * 16 * 128
  x = jnp.ones((2, 32, 32, 3))
  on = {k: jnp.ones(n) for k, n in units.items()}
  assert bc.apply_model("vgg_small", params, on, x).shape == (2, 10)
  off = {**on, "fc1": jnp.zeros(128)}
  np.testing.assert_allclose(np.asarray(bc.apply_model("vgg_small", params, off, x)), np.zeros((2, 10)), atol=1e-6)
  with pytest.raises(ValueError, match="unknown model 'vgg99'"):
    bc.model_units("vgg99")


def test_run_py_bayesnas_compress(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("NAS_JAX_COMPILE_CACHE", "")
  run_cli = experiment_doubles.load_cli("run")
  with pytest.raises(SystemExit) as e:
    run_cli.main(["--strategy", "bayesnas-compress", "--model", "vgg99"])
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.count("\n") == 1 and "invalid choice: 'vgg99'" in err, err
  with pytest.raises(SystemExit) as e:
    run_cli.main(["--strategy", "bayesnas-compress", "--set", "lamda=0.1", "--workdir", str(tmp_path / "bad")])
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.count("\n") == 1 and "unknown compression setting(s) ['lamda']" in err, err
  assert not (tmp_path / "bad").exists()
  work = tmp_path / "c"
  assert run_cli.main(["--strategy", "bayesnas-compress", "--model", "lenet5", "--workdir", str(work),
                       "--set", "train_size=128", "--set", "pretrain_epochs=1", "--set", "outer_iterations=2",
                       "--set", "finetune_epochs=1", "--set", "hessian_samples=32"]) == 0
  report = json.loads((work / "report.json").read_text())
  assert report["config"]["model"] == "lenet5" and len(report["curve"]) == 2
  assert report["weights_total"] == 21150 and (work / "sparsity.png").is_file()
  out = capsys.readouterr().out
  assert "lenet5 on digits" in out and "dense lenet5: test acc" in out  # progress, one line per phase
  assert "outer iteration 2: " in out and "after 1 fine-tuning epochs" in out


def test_compress_train_size_draws_every_class_from_class_sorted_data():
  from nas_jax.oneshot import bayesnas_compress as bc  # pylint: disable=import-outside-toplevel
  # image folders are sorted by class: a prefix of 5,000 CIFAR-10 images holds one class
  y = np.repeat(np.arange(10), 500)
  x = np.arange(len(y))
  xs, ys = bc.train_subset(x, y, 500, seed=0)
  assert len(ys) == 500 and len(np.unique(ys)) == 10 and np.all(np.diff(xs) > 0)
  assert np.array_equal(y[xs], ys)
  assert np.array_equal(bc.train_subset(x, y, 500, seed=0)[0], xs)  # fixed by the seed
