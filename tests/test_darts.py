"""Tests of DARTS (nas_jax.oneshot.darts).

Most tests run DARTS on a toy continuous relaxation (``ToyRelaxation``: one
mixed edge over flattened inputs, ops ``none`` / ``const`` / ``linear``, a
linear head) whose labels only the ``linear`` op can predict: it compiles in
about a second, so the optimizer, the second-order gradient, determinism and
resume are checked on it. ``test_nb201_family`` runs the real nb201 relaxation
on digits.
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import checkpoint, networks, registry
from nas_jax.data import images as data_lib
from nas_jax.oneshot.darts import DARTS


class ToyRelaxation:
  """A ``ContinuousRelaxation`` with one edge: ``w0 * 0 + w1 * b + w2 * tanh(x W1)``, then a linear head."""

  op_names = ("none", "const", "linear")

  def config(self, **fields):
    return dict(fields)

  def weights_shape(self, config):
    del config
    return (1, 3)

  def init(self, key, config, input_shape):
    d, h, k = int(np.prod(input_shape)), 16, config["num_classes"]
    k1, k2, k3 = jax.random.split(key, 3)
    return ({"w1": jax.random.normal(k1, (d * h,)).reshape(d, h) / np.sqrt(d),
             "b": 0.1 * jax.random.normal(k2, (h,)),
             "w2": jax.random.normal(k3, (h * k,)).reshape(h, k) / np.sqrt(h),
             "c": jnp.zeros(k)}, {})

  def apply(self, params, batch_stats, weights, x, *, config, train):
    del config, train
    x = x.reshape(x.shape[0], -1)
    h = weights[0, 1] * params["b"] + weights[0, 2] * jnp.tanh(x @ params["w1"])
    return h @ params["w2"] + params["c"], batch_stats

  def derive(self, weights, config):
    del config
    return np.asarray(weights).argmax(-1).astype(np.int32)


class ToySpace:
  name = "toy"
  arch_shape = (1,)

  def validate(self, arch):
    a = np.asarray(arch, np.int32).reshape(-1)
    if a.shape != (1,) or not 0 <= a[0] < 3:
      raise ValueError(f"toy arch must be one op id in 0..2, got {arch!r}")
    return a


def toy_data(n=512, d=8, classes=4, seed=0):
  """Random 1x1xd 'images' labelled by a random linear map of the pixels."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(d, classes))

  def split(m):
    x = rng.integers(0, 256, size=(m, 1, 1, d)).astype(np.uint8)
    return x, ((x.reshape(m, d) / 255.0 - 0.5) @ w).argmax(-1).astype(np.int32)

  (xt, yt), (xv, yv), (xs, ys) = split(n), split(n), split(64)
  px = xt.reshape(-1, 1) / 255.0
  return data_lib.ImageDataset(
      name="toy", num_classes=classes, image_shape=(1, 1, d), mean=np.float32([px.mean()]),
      std=np.float32([px.std()]), images={"train": xt, "valid": xv, "test": xs},
      labels={"train": yt, "valid": yv, "test": ys}, flip=False)


_DATA = toy_data()


def toy(**config):
  return DARTS(ToySpace(), {"augment": False, "epochs": 4, **config}, data=_DATA, continuous=ToyRelaxation())


def run(method, state, steps):
  for t in range(steps):
    state, metrics = method.step(state, jax.random.key(t))
  return state, metrics


def leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.mark.parametrize("order", ["first", "second"])
def test_steps_change_alpha_and_compile_once(order):
  m = toy(order=order)
  s0 = m.init(jax.random.key(0))
  s, metrics = run(m, s0, 10)  # 8 train batches of 64 per epoch: crosses an epoch (new lr)
  assert set(metrics) == {"train_loss", "train_acc", "valid_loss", "valid_acc", "lr"}
  assert all(np.isfinite(v) for v in metrics.values())
  assert not np.allclose(np.asarray(s["alpha"]), np.asarray(s0["alpha"]))
  assert int(s["step"]) == 10 and int(s["data"]["train_epoch"]) == 1 and int(s["data"]["train_step"]) == 2
  assert metrics["lr"] == pytest.approx(0.001 + 0.5 * 0.024 * (1 + np.cos(np.pi / 4)))
  assert m._search_step._cache_size() == 1  # pylint: disable=protected-access


def test_alpha_init_and_state_shapes():
  m = toy()
  s = m.init(jax.random.key(0))
  a = np.asarray(s["alpha"])
  assert a.shape == (1, 3) and a.dtype == np.float32
  assert 0 < np.abs(a).max() < 1e-2  # DARTS: 1e-3 * N(0, 1)
  assert jax.tree.structure(s["momentum"]) == jax.tree.structure(s["params"])
  assert not leaves_equal(s, m.init(jax.random.key(1)))


def test_second_order_with_zero_xi_equals_first_order():
  first, second = toy(order="first"), toy(order="second")
  s, _ = run(second, second.init(jax.random.key(0)), 3)  # a non-zero momentum buffer
  batch = lambda split: next(data_lib.epoch_batches(_DATA, split, 64, seed=0, epoch=0))  # noqa: E731
  vb, tb = batch("valid"), batch("train")
  g1, l1 = first.arch_gradient(s, (vb["image"], vb["label"]), (tb["image"], tb["label"]))
  g0, l0 = second.arch_gradient(s, (vb["image"], vb["label"]), (tb["image"], tb["label"]), xi=0.0)
  g2, _ = second.arch_gradient(s, (vb["image"], vb["label"]), (tb["image"], tb["label"]), xi=0.1)
  np.testing.assert_allclose(np.asarray(g0), np.asarray(g1), rtol=1e-5, atol=1e-8)
  assert float(l0) == pytest.approx(float(l1), rel=1e-6)
  assert not np.allclose(np.asarray(g2), np.asarray(g1), rtol=1e-3)  # the unrolled term matters


_FD_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import jax, jax.numpy as jnp, numpy as np, optax
from test_darts import toy, _DATA
from nas_jax.data import images as data_lib

assert jax.config.jax_enable_x64
m = toy(order="second")
s = m.init(jax.random.key(0))
for t in range(4):
  s, _ = m.step(s, None)
f64 = lambda t: jax.tree.map(lambda a: np.asarray(a, np.float64) if np.issubdtype(np.asarray(a).dtype, np.floating)
                             else a, t)
s = f64(s)
batch = lambda split: next(data_lib.epoch_batches(_DATA, split, 64, seed=1, epoch=0))
vb, tb = batch("valid"), batch("train")
xv, yv, xt, yt = vb["image"].astype(np.float64), vb["label"], tb["image"].astype(np.float64), tb["label"]
xi, mu, wd = 0.05, 0.9, 3e-4
cont = m.continuous

def loss(p, alpha, x, y):
  logits, _ = cont.apply(p, {{}}, jax.nn.softmax(alpha, -1), x, config=m.net_config, train=True)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

def unrolled(alpha):  # written out here, independently of darts.py
  g_w = jax.grad(loss)(s["params"], alpha, xt, yt)
  w2 = jax.tree.map(lambda w, b, g: w - xi * (mu * b + g + wd * w), s["params"], s["momentum"], g_w)
  return loss(w2, alpha, xv, yv)

g2, _ = m.arch_gradient(s, (xv, yv), (xt, yt), xi=xi)
g1 = jax.grad(loss, argnums=1)(s["params"], s["alpha"], xv, yv)
rng = np.random.default_rng(0)
worst, gap = 0.0, np.inf
for _ in range(3):
  v = rng.normal(size=s["alpha"].shape)
  h = 1e-5
  fd = (float(unrolled(s["alpha"] + h * v)) - float(unrolled(s["alpha"] - h * v))) / (2 * h)
  exact, first = float(np.vdot(np.asarray(g2), v)), float(np.vdot(np.asarray(g1), v))
  worst = max(worst, abs(exact - fd) / abs(fd))
  gap = min(gap, abs(first - fd) / abs(fd))
print("RESULT", worst, gap)
"""


def test_second_order_gradient_matches_finite_differences():
  """Directional derivatives of the unrolled loss (float64, in a subprocess with x64 on)."""
  tests = str(pathlib.Path(__file__).parent)
  env = {**os.environ, "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", textwrap.dedent(_FD_SCRIPT.format(tests=tests))], env=env,
                       capture_output=True, text=True, timeout=300, cwd=tests, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  worst, gap = map(float, out.stdout.split("RESULT")[1].split())
  print(f"relative error of the exact second-order gradient {worst:.2e}; first order is off by {gap:.2e}")
  assert worst < 1e-6
  assert gap > 1e-3  # the check would catch a first-order gradient passed off as second order


@pytest.mark.parametrize("order", ["first", "second"])
def test_toy_alpha_moves_to_the_best_op(order):
  m = toy(order=order, arch_lr=0.03, epochs=6)
  s = m.init(jax.random.key(0))
  s, _ = run(m, s, 6 * m.steps_per_epoch())
  w = np.asarray(m.op_weights(s))[0]
  assert w.argmax() == 2 and w[2] > 0.5, w  # 'linear', the only op that can predict the labels
  assert m.derive(s).tolist() == [2]
  good, bad = m.score(s, [2], jax.random.key(0)), m.score(s, [0], jax.random.key(0))
  assert good["search_score"] > bad["search_score"] + 20
  assert set(good) == {"search_score", "valid_acc", "valid_loss", "supernet_valid_acc", "supernet_valid_loss"}
  assert m._evaluate._cache_size() == 1  # pylint: disable=protected-access
  m.one_hot_weights = lambda arch: m.op_weights(s)  # scoring the mixture itself: the two numbers agree
  same = m.score(s, [2], jax.random.key(0))
  assert same["search_score"] == same["supernet_valid_acc"] == good["supernet_valid_acc"]


def test_same_key_same_state_and_resume_equals_uninterrupted(tmp_path):
  m = toy(order="second", batch_size=128)  # 4 batches per epoch: 6 steps cross both streams' epoch ends
  full, _ = run(m, m.init(jax.random.key(3)), 6)
  again, _ = run(m, m.init(jax.random.key(3)), 6)
  assert leaves_equal(full, again)
  half, _ = run(m, m.init(jax.random.key(3)), 3)
  ckpt = checkpoint.SearchCheckpointer(tmp_path / "ckpt", fingerprint="darts-test")
  ckpt.save(3, {"method": half}, {"epoch": 0})
  fresh = toy(order="second", batch_size=128)  # a new process would build a new method
  trees, _ = ckpt.restore({"method": fresh.init(jax.random.key(3))})
  resumed, _ = run(fresh, trees["method"], 3)
  assert leaves_equal(full, resumed)
  assert int(resumed["data"]["train_epoch"]) == 1


def test_summary_is_json():
  m = toy()
  s, _ = run(m, m.init(jax.random.key(0)), 2)
  summary = json.loads(json.dumps(m.summary(s)))
  edge = summary["weights"]["cell"][0]
  assert list(edge) == ["none", "const", "linear"]
  assert sum(edge.values()) == pytest.approx(1.0, abs=2e-3)
  assert summary["num_edges"] == 1 and summary["skip_argmax_edges"] == 0
  assert 0 < summary["entropy"] <= summary["max_entropy"] + 1e-6


def test_config_errors():
  with pytest.raises(ValueError, match="unknown darts setting"):
    toy(unrolled=True)
  with pytest.raises(ValueError, match="order must be"):
    toy(order="third")
  with pytest.raises(ValueError, match="steps_per_epoch"):
    toy(steps_per_epoch=0)
  with pytest.raises(ValueError, match="lr_min"):
    toy(lr=0.01, lr_min=0.1)
  with pytest.raises(ValueError, match="batch_size=1024"):
    toy(batch_size=1024)
  with pytest.raises(ValueError, match="needs data"):
    DARTS(ToySpace(), {}, data=None, continuous=ToyRelaxation())
  assert toy(steps_per_epoch=3).steps_per_epoch() == 3
  assert toy().steps_per_epoch() == 8


def nb201_method(**config):
  data = data_lib.load_dataset("digits", seed=0, valid_fraction=0.5)
  return DARTS(registry.get_space("nb201"), {"init_channels": 4, "layers": 1, "batch_size": 32, "epochs": 2,
                                             "score_batches": 1, "eval_batch_size": 64, **config}, data=data)


def test_nb201_derive_score_summary():
  """The real nb201 relaxation: alpha -> arch, one-hot scoring, summary (no step compiled)."""
  m = nb201_method()
  assert m.continuous is networks.family("nb201").continuous
  s = m.init(jax.random.key(0))
  target = np.array([3, 1, 2, 0, 4, 1], np.int32)  # two skip_connect edges
  s["alpha"] = jnp.asarray(np.eye(5, dtype=np.float32)[target] * 3.0)
  assert m.derive(s).tolist() == target.tolist()
  record = m.score(s, target, jax.random.key(1))
  assert 0 <= record["search_score"] <= 100 and 0 <= record["supernet_valid_acc"] <= 100
  assert record["valid_acc"] == record["search_score"] and np.isfinite(record["valid_loss"])
  summary = json.loads(json.dumps(m.summary(s)))
  assert summary["num_edges"] == 6 and summary["skip_argmax_edges"] == 2
  edges = next(iter(summary["weights"].values()))
  assert list(edges[0]) == list(m.continuous.op_names)
  assert edges[0]["nor_conv_3x3"] == max(edges[0].values())


@pytest.mark.slow  # compiles the nb201 relaxation's step: ~70 s on 2 busy cores
def test_nb201_family_steps():
  m = nb201_method(steps_per_epoch=2)
  s0 = m.init(jax.random.key(0))
  s, metrics = run(m, s0, 2)
  assert np.isfinite(metrics["train_loss"])
  assert not np.allclose(np.asarray(s["alpha"]), np.asarray(s0["alpha"]))
  assert m.derive(s).shape == (6,)


def test_relaxation_without_one_hot_fails_at_construction():
  class NoOneHot(ToyRelaxation):
    def weights_shape(self, config):
      return (2, 1, 3)  # not one op per edge of ToySpace's (1,) architectures
  with pytest.raises(ValueError, match="no one_hot_weights"):
    DARTS(ToySpace(), {}, data=_DATA, continuous=NoOneHot())
