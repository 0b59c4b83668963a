"""Tests of the darts network family: the evaluation network (child) and the
continuous relaxation (tiny shapes)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nas_jax import ops
from nas_jax.networks import base
from nas_jax.networks import darts as N
from nas_jax.spaces.darts import NUM_OPS, OPS, PUBLISHED, DartsSpace

SPACE = DartsSpace()
V2 = SPACE.from_genotype(PUBLISHED["DARTS_V2"])


def _images(n, size, seed=0):
  return jax.random.normal(jax.random.key(seed), (n * size * size * 3,)).reshape(n, size, size, 3)


def _random_archs(n, seed=0):
  return np.stack([np.asarray(SPACE.sample(k)) for k in jax.random.split(jax.random.key(seed), n)])


def _loss(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def test_family_satisfies_the_protocols():
  assert isinstance(N.FAMILY, base.NetworkFamily)
  assert isinstance(N.FAMILY.continuous, base.ContinuousRelaxation)
  assert N.FAMILY.name == "darts" and N.FAMILY.tasks == ("images",) and N.FAMILY.supernet is None
  assert N.CONTINUOUS.op_names == ("none",) + OPS
  cfg = N.CONTINUOUS.config(init_channels=4, layers=3)
  assert N.CONTINUOUS.weights_shape(cfg) == (2, 14, 8)
  with pytest.raises(ValueError, match=r"unknown darts network setting\(s\) \['nodes'\]"):
    N.CONTINUOUS.config(nodes=5)
  with pytest.raises(ValueError, match="edge_loop must be 'scan' or 'unroll'"):
    N.CONTINUOUS.config(edge_loop="map")
  assert [N.edge_index(n, i) for n in range(4) for i in range(n + 2)] == list(range(14))


# --- evaluation network --------------------------------------------------------------
def _shapes(model, size):
  """The child's variables as shapes (nothing runs)."""
  return jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, size, size, 3)),
                                           train=False))


def test_child_forward_aux_head_and_drop_path():
  model = N.FAMILY.build_child(SPACE, V2, num_classes=5, init_channels=4, layers=3, auxiliary=True,
                               unknown_setting=1)
  x = _images(3, 16)
  variables = jax.jit(lambda k, x: model.init({"params": k}, x, train=False))(jax.random.key(0), x)
  assert set(variables) == {"params", "batch_stats"} and "aux" in variables["params"]
  logits, aux = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert logits.shape == (3, 5) and aux is None

  @jax.jit
  def train_apply(key, p):
    return model.apply(variables, x, train=True, drop_prob=p, rngs={"drop_path": key}, mutable=["batch_stats"])

  (logits, aux), new_vars = train_apply(jax.random.key(1), 0.3)
  assert logits.shape == (3, 5) and aux.shape == (3, 5) and np.isfinite(logits).all() and np.isfinite(aux).all()
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), new_vars["batch_stats"],
                       variables["batch_stats"])
  assert all(jax.tree.leaves(moved["cell_0"])) and all(jax.tree.leaves(moved["aux"]))
  # Drop-path: another key, other logits; probability 0, the same logits whatever the key.
  run = lambda k, p: np.asarray(train_apply(jax.random.key(k), p)[0][0])
  assert not np.allclose(run(1, 0.3), run(2, 0.3))
  np.testing.assert_array_equal(run(1, 0.0), run(2, 0.0))


def test_child_parameters_follow_darts():
  """Op parameters as in DARTS (``cnn/operations.py``, ``cnn/model.py``)."""
  params = _shapes(N.FAMILY.build_child(SPACE, V2, num_classes=10, init_channels=4, layers=3), 8)["params"]
  cell0 = params["cell_0"]
  assert set(cell0["op0"]) == {"dw1", "pw1", "bn1", "dw2", "pw2", "bn2"} and cell0["op0"]["dw1"].shape == (3, 3, 4)
  assert set(cell0["op7"]) == {"dw", "pw", "bn"} and cell0["op7"]["dw"].shape == (3, 3, 4)  # dil_conv_3x3
  assert "op5" not in cell0 and "op6" not in cell0  # stride-1 skip connections
  assert set(params["cell_2"]) == {"pre0", "pre1"}  # V2's reduction cell: max pools, skip(node 0)
  assert set(params["cell_2"]["pre0"]) == {"w1", "w2", "bn"}  # factorized reduce after a reduction
  assert _count(params) == N.child_cost(V2, num_classes=10, init_channels=4, layers=3)["params"]
  # A skip connection from a cell input of a reduction cell is a factorized reduce.
  arch = V2.copy()
  arch[1, 0] = [0, OPS.index("skip_connect"), 1, OPS.index("sep_conv_5x5")]
  params = _shapes(N.FAMILY.build_child(SPACE, arch, num_classes=10, init_channels=4, layers=3), 8)["params"]
  cell1 = params["cell_1"]
  assert set(cell1["op0"]) == {"w1", "w2", "bn"} and cell1["op1"]["dw1"].shape == (5, 5, 8)
  assert _count(params) == N.child_cost(arch, num_classes=10, init_channels=4, layers=3)["params"]


def test_aux_head_as_darts_at_32x32():
  """DARTS's auxiliary head: 8x8 map -> avgpool 5/3 -> 2x2 -> conv 2x2 (768) -> 1x1 -> linear."""
  aux = _shapes(N.FAMILY.build_child(SPACE, V2, num_classes=10, init_channels=2, layers=3, auxiliary=True),
                32)["params"]["aux"]
  assert aux["conv1"]["w"].shape == (1, 1, 4 * 4 * 2, 128) and aux["conv2"]["w"].shape == (2, 2, 128, 768)
  assert aux["classifier"]["w"].shape == (768, 10)


def _count(params):
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))


def test_closed_form_cost_equals_the_traced_count():
  """``FAMILY.cost`` (closed form) equals ``cost.count_cost`` (traced); DARTS V2 at C=36, 20 cells (the
  paper's CIFAR-10 network): 3,349,342 parameters (the paper's 3.3 M) and 528,359,040 multiply-adds."""
  from nas_jax import cost, networks  # pylint: disable=import-outside-toplevel
  assert networks.family("darts") is N.FAMILY
  arch = V2.copy()
  arch[1, 0] = [0, OPS.index("skip_connect"), 1, OPS.index("dil_conv_5x5")]  # a factorized-reduce skip
  for a in [arch] + list(_random_archs(2, seed=7)):
    for size in (16, 9):  # odd sizes: 'same' padding rounds up on strided ops
      config = {"num_classes": 7, "init_channels": 4, "layers": 4, "input_shape": (size, size, 3)}
      assert N.FAMILY.cost(a, **config) == cost.count_cost(SPACE, a, **config), (a, size)
  assert N.child_cost(V2, init_channels=36, layers=20) == {"flops": 528_359_040, "params": 3_349_342}


# --- continuous relaxation -------------------------------------------------------------
def _weights(rows: dict[tuple[int, int], dict[int, float]]) -> np.ndarray:
  """float[2, 14, 8] with 0.01 everywhere, plus given values at (cell, edge) -> {op: value}."""
  w = np.full((2, 14, 8), 0.01)
  for (c, e), values in rows.items():
    for o, v in values.items():
      w[c, e, o] = v
  return w


def test_derive_follows_the_darts_rule():
  e = N.edge_index
  w = _weights({
      (0, e(0, 0)): {0: 0.9, 4: 0.3},  # 'none' is ignored: strength 0.3 (sep_conv_3x3)
      (0, e(0, 1)): {5: 0.2},
      (0, e(2, 3)): {7: 0.5, 6: 0.5},  # tie between ops: the lower index (dil_conv_3x3)
      (0, e(2, 1)): {2: 0.4},
      (0, e(3, 4)): {1: 0.6},
      (0, e(3, 2)): {1: 0.6},  # tie between edges: both kept, the stronger order keeps the lower input first
      (1, e(1, 2)): {3: 0.7},
      (1, e(1, 0)): {8 - 1: 0.2},
  })
  arch = N.CONTINUOUS.derive(w, None)
  assert arch.dtype == np.int32 and arch.shape == (2, 4, 4)
  o = lambda name: OPS.index(name)
  np.testing.assert_array_equal(arch[0, 0], [0, o("sep_conv_3x3"), 1, o("sep_conv_5x5")])
  np.testing.assert_array_equal(arch[0, 2], [3, o("dil_conv_3x3"), 1, o("avg_pool_3x3")])
  np.testing.assert_array_equal(arch[0, 3], [2, o("max_pool_3x3"), 4, o("max_pool_3x3")])
  np.testing.assert_array_equal(arch[1, 1], [2, o("skip_connect"), 0, o("dil_conv_5x5")])
  # Untouched nodes: all ties at 0.01 -> inputs 0 and 1 with the first non-'none' op.
  np.testing.assert_array_equal(arch[0, 1], [0, 0, 1, 0])
  with pytest.raises(ValueError, match=r"shape \(2, 14, 8\)"):
    N.derive(np.zeros((2, 14, 7)))


def _distinct_input_archs(n, seed=0):
  rng = np.random.default_rng(seed)
  archs = np.zeros((n, 2, 4, 4), np.int32)
  for a in archs:
    for c in range(2):
      for node in range(4):
        a[c, node, 0::2] = rng.choice(node + 2, 2, replace=False)
        a[c, node, 1::2] = rng.integers(0, NUM_OPS, 2)
  return archs


def test_one_hot_weights_and_derive_invert_each_other():
  archs = _random_archs(100, seed=1)
  one_hot = np.asarray(jax.jit(jax.vmap(N.one_hot_weights))(archs))
  assert one_hot.shape == (100, 2, 14, 8) and (one_hot[..., 0] == 0).all()
  np.testing.assert_array_equal(one_hot.sum(axis=(2, 3)), 8)
  for a, w in zip(archs[:10], one_hot):
    np.testing.assert_array_equal(np.asarray(N.one_hot_weights(a)), w)
  for a in _distinct_input_archs(200):
    np.testing.assert_array_equal(N.derive(N.one_hot_weights(a)), SPACE.canonical(a))
  # Two branches on the same state share one edge.
  a = V2.copy()
  a[0, 2] = [1, OPS.index("avg_pool_3x3"), 1, OPS.index("sep_conv_5x5")]
  w = np.asarray(N.one_hot_weights(a))
  assert w[0, N.edge_index(2, 1)].tolist() == [0, 0, 1, 0, 0, 1, 0, 0]
  a[0, 2, 3] = a[0, 2, 1]
  assert np.asarray(N.one_hot_weights(a))[0, N.edge_index(2, 1), 2] == 2
  with pytest.raises(ValueError, match="out of range"):
    N.one_hot_weights(np.full((2, 4, 4), 9))


CFG = N.CONTINUOUS.config(num_classes=3, init_channels=4, layers=3)  # normal, reduction, reduction
X = _images(4, 8, seed=2)
Y = jnp.array([0, 1, 2, 1])


@pytest.fixture(scope="module")
def relaxed():
  params, stats = N.CONTINUOUS.init(jax.random.key(0), CFG, X.shape[1:])
  return params, stats


def test_relaxed_gradients_and_one_compilation(relaxed):
  params, stats = relaxed
  # DARTS's parameters: no affine BN parameters in the search network but the stem's.
  assert set(params["cell_0"]["pre0"]) == {"w"} and set(params["stem"]) == {"w", "bn"}
  assert set(params["cell_1"]["input_edges"]) == set(OPS) - {"max_pool_3x3", "avg_pool_3x3"}
  assert "skip_connect" not in params["cell_1"]["node_edges"] and "skip_connect" not in params["cell_0"]["input_edges"]
  assert params["cell_1"]["input_edges"]["sep_conv_5x5"]["dw1"].shape == (8, 5, 5, 8)
  assert set(stats["cell_0"]["node_edges"]["max_pool_3x3"]) == {"bn"}  # a BN after each pool

  def loss(p, w, s):
    logits, new_s = N.CONTINUOUS.apply(p, s, w, X, config=CFG, train=True)
    return _loss(logits, Y), new_s

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
  alphas = [0.5 * jax.random.normal(jax.random.key(k), (224,)).reshape(2, 14, 8) for k in range(3)]
  results = [step(params, jax.nn.softmax(a, -1), stats) for a in alphas]
  assert step._cache_size() == 1  # pylint: disable=protected-access
  (value, new_stats), (g_params, g_w) = results[0]
  g_w = np.asarray(g_w)
  assert np.isfinite(float(value)) and np.isfinite(g_w).all()
  assert (g_w[..., 0] == 0).all()  # 'none' adds zeros
  assert (np.abs(g_w[..., 1:]) > 0).all()  # every other op of every edge of both cells matters
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(g_params))
  assert float(results[1][0][0]) != float(value)
  assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
  moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), new_stats, stats)
  assert all(jax.tree.leaves(moved))


TINY = N.CONTINUOUS.config(num_classes=3, init_channels=4, layers=1)  # one reduction cell


def _unrolled_objective(cast=lambda tree: tree):
  """DARTS eq. 7: the validation loss after one virtual SGD step of the weights, as f(w, xi)."""
  params, stats = cast(N.CONTINUOUS.init(jax.random.key(0), TINY, X.shape[1:]))
  x, y = cast(X), Y
  x_train, x_val, y_train, y_val = x[:2], x[2:], y[:2], y[2:]

  def loss(p, w, x, y):
    return _loss(N.CONTINUOUS.apply(p, stats, w, x, config=TINY, train=True)[0], y)

  def unrolled(w, xi):
    g = jax.grad(loss)(params, w, x_train, y_train)
    return loss(jax.tree.map(lambda p, d: p - xi * d, params, g), w, x_val, y_val)

  return unrolled


@pytest.mark.slow  # heavy compile; CI runs the fast tier (python -m pytest -m slow runs it)
def test_second_order_darts_gradient():
  """grad w.r.t. the weights through one virtual step (a grad inside a grad) compiles and runs."""
  w = jax.nn.softmax(0.3 * jax.random.normal(jax.random.key(3), (224,)).reshape(2, 14, 8), -1)
  grad = jax.jit(jax.grad(_unrolled_objective())).lower(w, 0.5).compile()  # fused kernels on
  g2, g1 = np.asarray(grad(w, 0.5)), np.asarray(grad(w, 0.0))
  assert np.isfinite(g2).all() and (np.abs(g2[1, :, 1:]) > 0).all()
  assert (g2[0] == 0).all() and (g2[..., 0] == 0).all()  # one reduction cell; 'none'
  assert np.abs(g2 - g1).max() > 1e-3 * np.abs(g1).max()  # the second-order term is there


_FLOAT64_CHECK = """
import sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
sys.path.insert(0, {tests!r})
import test_networks_darts as T
from nas_jax import ops
f64 = lambda t: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), t)
w = jnp.asarray(jax.nn.softmax(0.3 * jax.random.normal(jax.random.key(3), (224,)).reshape(2, 14, 8), -1))
v = np.zeros((2, 14, 8)); v[1, :, 1:] = np.random.default_rng(0).standard_normal((14, 7))
with ops.implementation(depthwise="grouped", pointwise="einsum", fusion=False):
  vg = jax.jit(jax.value_and_grad(T._unrolled_objective(f64)))
  g = np.asarray(vg(w, 0.5)[1])
  eps = 1e-6
  fd = (float(vg(w + eps * v, 0.5)[0]) - float(vg(w - eps * v, 0.5)[0])) / (2 * eps)
print(fd, float(np.sum(g * v)))
"""


@pytest.mark.slow
def test_second_order_gradient_matches_finite_differences_in_float64():
  """Directional derivative of the unrolled objective (float64, XLA's ops, in a subprocess), and the CPU
  kernels' second-order gradient equal to XLA's (float32). Measured: agreement to ~1e-9 and ~2e-6."""
  import pathlib  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  out = subprocess.run([sys.executable, "-c", _FLOAT64_CHECK.format(tests=str(pathlib.Path(__file__).parent))],
                       capture_output=True, text=True, check=True).stdout.split()
  fd, exact = float(out[-2]), float(out[-1])
  np.testing.assert_allclose(fd, exact, rtol=1e-6)
  w = jax.nn.softmax(0.3 * jax.random.normal(jax.random.key(3), (224,)).reshape(2, 14, 8), -1)
  grads = []
  for impl in ({}, {"depthwise": "grouped", "pointwise": "einsum"}):
    with ops.implementation(fusion=False, **impl):
      grads.append(np.asarray(jax.jit(jax.grad(_unrolled_objective()))(w, 0.5)))
  np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5 * np.abs(grads[1]).max())


@pytest.mark.slow
def test_second_order_with_fused_kernels_equals_unfused():
  """A derivative of a derivative inside the relaxed cell's scan reaches the fused primitive's own
  JVP rule (kernels.fused, through the unfused reference): same gradient as without fusion."""
  w = jax.nn.softmax(0.3 * jax.random.normal(jax.random.key(3), (224,)).reshape(2, 14, 8), -1)
  fused = np.asarray(jax.jit(jax.grad(_unrolled_objective()))(w, 0.5))
  with ops.implementation(fusion=False):
    plain = np.asarray(jax.jit(jax.grad(_unrolled_objective()))(w, 0.5))
  np.testing.assert_allclose(fused, plain, rtol=1e-4, atol=1e-5 * np.abs(plain).max())


def test_hessian_on_a_tiny_config():
  """``jax.hessian`` (forward over reverse) w.r.t. the op weights of one edge (BayesNAS)."""
  params, stats = N.CONTINUOUS.init(jax.random.key(0), TINY, X.shape[1:])
  base_w = jnp.full((2, 14, 8), 1.0 / 8)

  def loss(edge_w):
    w = base_w.at[1, N.edge_index(1, 2)].set(edge_w)
    return _loss(N.CONTINUOUS.apply(params, stats, w, X, config=TINY, train=True)[0], Y)

  h = np.asarray(jax.jit(jax.hessian(loss))(base_w[1, 0]))  # fused kernels on
  assert h.shape == (8, 8) and np.isfinite(h).all()
  assert (h[0] == 0).all() and (h[:, 0] == 0).all()  # 'none'
  assert np.abs(h[1:, 1:]).max() > 0
  np.testing.assert_allclose(h, h.T, rtol=1e-3, atol=1e-6 * np.abs(h).max())
