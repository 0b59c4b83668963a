"""NAS-Bench-201 child network and weight-sharing supernet (tiny shapes)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import networks, ops
from nas_jax.kernels import build
from nas_jax.networks import nb201 as net
from nas_jax.networks.nb201 import continuous as nb201_continuous
from nas_jax.spaces import get_space

SPACE = get_space("nb201")
CFG = net.SupernetConfig(num_classes=10, init_channels=4, layers=1)
ARCHS = np.array([
    [3, 1, 2, 0, 4, 3],  # a typical cell
    [0, 3, 2, 1, 3, 0],  # node 1 empty (its convs output their BN shift), node 2 unused
    [3, 3, 0, 1, 3, 0],  # node 2 computed but unused
    [0, 0, 0, 0, 0, 0],  # empty cell: output zero
    [4, 4, 4, 4, 4, 4],
], np.int32)


@pytest.fixture(scope="module")
def data():
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  return x, jnp.array([0, 1, 2, 3], jnp.int32)


@pytest.fixture(scope="module")
def supernet(data):
  params, stats = net.init_supernet(jax.random.key(1), CFG, data[0].shape)
  # Non-trivial running statistics, so that eval mode is a real check.
  stats = jax.tree.map(lambda v: v + 0.1 * jax.random.uniform(jax.random.key(2), v.shape), stats)

  @jax.jit
  def forward(params, stats, arch, x):
    eval_logits, _ = net.supernet_apply(params, stats, arch, x, config=CFG, train=False)
    train_logits, new_stats = net.supernet_apply(params, stats, arch, x, config=CFG, train=True)
    return eval_logits, train_logits, new_stats

  return params, stats, forward


def _child(arch, **kw):
  return networks.build_child(SPACE, arch, **{"num_classes": 10, "init_channels": 4, "layers": 1, **kw})


def test_child_shapes_and_parameters(data):
  # Shapes only (jax.eval_shape): eager flax is slow on these CPUs.
  x, _ = data
  model = _child(ARCHS[0], auxiliary=True, drop_path_prob=0.2)
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, train=False))
  logits, aux = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert logits.shape == (4, 10) and aux is None
  # blocks: 3 cells, 2 residual blocks; a cell holds only its conv edges
  assert sorted(variables["params"]) == ["block_0", "block_1", "block_2", "block_3", "block_4",
                                         "head", "stem"]
  cell = variables["params"]["block_0"]
  assert sorted(cell) == ["e0", "e2", "e5"] and sorted(cell["e2"]) == ["c1"]
  assert cell["e0"]["c3"]["w"].shape == (3, 3, 4, 4)
  assert variables["params"]["block_2"]["e0"]["c3"]["w"].shape == (3, 3, 8, 8)
  assert variables["params"]["block_1"]["short"]["w"].shape == (1, 1, 4, 8)
  assert variables["params"]["head"]["dense"]["w"].shape == (16, 10)
  # node 2 of ARCHS[2] feeds nothing: its conv edge gets no parameters
  dead = _child(ARCHS[2])
  v = jax.eval_shape(lambda: dead.init({"params": jax.random.key(0)}, x, train=False))
  assert sorted(v["params"]["block_0"]) == ["e0", "e4"]


def test_child_train_mode_drop_path_and_odd_sizes(supernet):
  x = jax.random.normal(jax.random.key(3), (2, 7, 7, 3))
  model = _child(ARCHS[0])
  # Variables from the supernet (their shapes do not depend on the image size):
  # no separate compilation of model.init.
  variables = net.child_variables_from_supernet(ARCHS[0], supernet[0], supernet[1], CFG)

  @jax.jit
  def run(variables):
    (dropped, _), _ = model.apply(variables, x, train=True, drop_prob=0.5, mutable=["batch_stats"],
                                  rngs={"drop_path": jax.random.key(1)})
    (plain, _), upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
    return dropped, plain, upd

  dropped, plain, upd = run(variables)
  assert dropped.shape == (2, 10) and bool(jnp.isfinite(dropped).all())
  changed = jax.tree.map(lambda a, b: bool((a != b).any()), upd["batch_stats"], variables["batch_stats"])
  assert all(jax.tree.leaves(changed))  # every BN updated its running statistics
  assert not np.allclose(dropped, plain)


def test_child_from_supernet_equals_supernet_one_compilation(data, supernet):
  x, _ = data
  params, stats, forward = supernet
  for k, arch in enumerate(ARCHS):
    eval_logits, train_logits, new_stats = forward(params, stats, jnp.asarray(arch), x)
    if k not in (0, 1):
      continue  # the supernet runs every cell (one compilation); a child compiles per cell
    child = _child(arch)
    variables = net.child_variables_from_supernet(arch, params, stats, CFG)

    @jax.jit
    def run(variables, child=child):
      child_eval, _ = child.apply(variables, x, train=False)
      (child_train, _), upd = child.apply(variables, x, train=True, mutable=["batch_stats"])
      return child_eval, child_train, upd

    child_eval, child_train, upd = run(variables)
    np.testing.assert_allclose(child_eval, eval_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(child_train, train_logits, rtol=1e-4, atol=1e-5)
    # the child's updated statistics are the supernet's for the ops it has
    mine = net.child_variables_from_supernet(arch, params, new_stats, CFG)["batch_stats"]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 upd["batch_stats"], mine)
  assert forward._cache_size() == 1  # pylint: disable=protected-access
  # different cells give different functions
  a, _, _ = forward(params, stats, jnp.asarray(ARCHS[0]), x)
  b, _, _ = forward(params, stats, jnp.asarray(ARCHS[4]), x)
  assert not np.allclose(a, b)


@pytest.mark.skipif(not build.available(), reason="needs nas_jax.kernels")
def test_a_new_trace_reads_the_current_ops_implementation(data, supernet):
  """The op switch's branches are cached across traces: they are keyed on ops.implementation."""
  x, _ = data
  params, stats = supernet[:2]
  hlo = lambda: jax.jit(lambda a: net.supernet_apply(params, stats, a, x, config=CFG, train=True)[0]).lower(  # noqa: E731
      jnp.asarray(ARCHS[0])).as_text()
  assert "nas_jax_" in hlo()  # the 1x1 convolutions and the stem's im2col run on the kernels
  with ops.implementation(pointwise="einsum"):
    assert "nas_jax_" not in hlo()
  assert "nas_jax_" in hlo()


def test_eval_archs_scores_k_architectures(data, supernet):
  x, y = data
  params, stats, forward = supernet
  eval_archs = net.make_eval_archs(CFG, bn="running")
  acc, loss = eval_archs(params, stats, jnp.asarray(ARCHS[:3]), x, y)
  assert acc.shape == (3,) and loss.shape == (3,)
  for k in range(3):
    logits, _, _ = forward(params, stats, jnp.asarray(ARCHS[k]), x)
    expected = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y])
    np.testing.assert_allclose(loss[k], expected, rtol=1e-4)
    np.testing.assert_allclose(acc[k], jnp.mean(jnp.argmax(logits, -1) == y))
  with pytest.raises(ValueError, match="bn must be"):
    net.make_eval_archs(CFG, bn="mixed")


def test_bad_settings_are_rejected():
  with pytest.raises(ValueError, match="out of range"):
    net.build_child(SPACE, [0, 1, 2, 3, 4, 5], num_classes=10)
  with pytest.raises(ValueError, match="layers must be >= 1"):
    net.build_child(SPACE, [0] * 6, num_classes=10, layers=0)
  with pytest.raises(ValueError, match="6 op ids"):
    net.child_variables_from_supernet([0] * 5, {}, {}, CFG)


def test_useful_edges():
  assert net.useful_edges([3, 3, 0, 1, 0, 0]) == [False, False, False, True, False, False]
  assert net.useful_edges([3, 3, 0, 1, 3, 0]) == [True, False, False, True, True, False]
  assert net.useful_edges([0] * 6) == [False] * 6
  assert net.useful_edges([1, 0, 1, 0, 0, 1]) == [True, False, True, False, False, True]


@pytest.mark.slow
def test_supernet_trains_50_archs_with_one_compilation(data):
  x, y = data
  params, stats = net.init_supernet(jax.random.key(1), CFG, x.shape)
  tx = net.default_optimizer(0.05)
  state = net.init_train_state(params, stats, tx)
  step = net.make_train_step(CFG, tx)
  archs = jax.vmap(SPACE.sample)(jax.random.split(jax.random.key(4), 50))
  losses = []
  for arch in archs:
    state, metrics = step(state, arch, (x, y), jax.random.key(0))
    losses.append(float(metrics["loss"]))
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert np.isfinite(losses).all() and np.mean(losses[-10:]) < np.mean(losses[:10])


def test_supernet_drop_path(data, supernet):
  """Drop-path multiplies conv and pool edges only: with a probability near 1
  they are all dropped, which is the architecture with those edges set to none."""
  x, _ = data
  params, stats = supernet[:2]
  apply = jax.jit(lambda arch, rng, p: net.supernet_apply(params, stats, arch, x, config=CFG, train=True,
                                                          rng=rng, drop_prob=p)[0])
  plain = jax.jit(lambda arch: net.supernet_apply(params, stats, arch, x, config=CFG, train=True)[0])
  for arch in ARCHS:
    np.testing.assert_allclose(apply(arch, jax.random.key(0), 0.0), plain(arch), atol=1e-6)
    nothing_left = np.where(np.isin(arch, [net.CONV1, net.CONV3, net.AVG]), net.NONE, arch)
    np.testing.assert_allclose(apply(arch, jax.random.key(0), 1 - 1e-7), plain(nothing_left), atol=1e-5)
  half = apply(ARCHS[0], jax.random.key(0), 0.5)
  assert np.abs(np.asarray(half) - np.asarray(plain(ARCHS[0]))).max() > 1e-4
  assert apply._cache_size() == 1  # pylint: disable=protected-access


# --- continuous relaxation ---------------------------------------------------------------
RELAXED = networks.family("nb201").continuous


def _without_cell_bn(params, cfg):
  """The supernet's parameters in the default relaxed layout: the cells' convolutions without BN scale/bias."""
  out = dict(params)
  for i, block in enumerate(cfg.plan()):
    if block["kind"] == "cell":
      out[f"block_{i}"] = {e: {name: {"w": conv["w"]} for name, conv in edge.items()}
                           for e, edge in params[f"block_{i}"].items()}
  return out


def test_relaxed_with_one_hot_weights_is_the_supernet(data, supernet):
  """One-hot weights select an architecture: the relaxed network then computes the weight-sharing
  supernet's function for it, given the same convolution weights."""
  x, _ = data
  params, stats, forward = supernet
  full = RELAXED.config(num_classes=10, init_channels=4, layers=1, cell_bn_affine=True, cell_bn_running_stats=True)
  plain = RELAXED.config(num_classes=10, init_channels=4, layers=1)  # the authors' default: no affine, batch stats
  # Same layout (and, for the same key, the same weights) as the supernet with cell BN affine + running statistics.
  ref_params, ref_stats = net.init_supernet(jax.random.key(1), CFG, x.shape)
  got_params, got_stats = RELAXED.init(jax.random.key(1), full, x.shape)
  assert jax.tree.structure((got_params, got_stats)) == jax.tree.structure((ref_params, ref_stats))
  jax.tree.map(np.testing.assert_array_equal, got_params, ref_params)
  plain_params, plain_stats = RELAXED.init(jax.random.key(1), plain, x.shape)
  assert jax.tree.structure(plain_params) == jax.tree.structure(_without_cell_bn(ref_params, CFG))
  assert plain_stats["block_0"] == {}

  @jax.jit
  def relaxed(w, params, stats, fresh):
    return (RELAXED.apply(params, stats, w, x, config=full, train=False)[0],
            RELAXED.apply(params, stats, w, x, config=full, train=True)[0],
            RELAXED.apply(_without_cell_bn(fresh, CFG), plain_stats, w, x, config=plain, train=True)[0])

  fresh_train = jax.jit(lambda arch: net.supernet_apply(ref_params, ref_stats, arch, x, config=CFG, train=True)[0])
  for arch in ARCHS[:3]:
    w = RELAXED.one_hot_weights(arch)
    eval_logits, train_logits, _ = forward(params, stats, jnp.asarray(arch), x)
    got_eval, got_train, got_plain = relaxed(w, params, stats, ref_params)
    np.testing.assert_allclose(got_eval, eval_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_train, train_logits, rtol=1e-4, atol=1e-5)
    # Default cells' BN (no scale/bias, batch statistics) = the supernet's at its initial scale 1, bias 0.
    np.testing.assert_allclose(got_plain, fresh_train(jnp.asarray(arch)), rtol=1e-4, atol=1e-5)
    assert RELAXED.derive(w).tolist() == arch.tolist()
  assert relaxed._cache_size() == 1  # pylint: disable=protected-access
  # Mixed weights are another function.
  mixed, _, _ = relaxed(jnp.full((6, 5), 0.2), params, stats, ref_params)
  assert np.abs(np.asarray(mixed) - np.asarray(got_eval)).max() > 1e-4


@pytest.mark.slow  # heavy compile; CI runs the fast tier (python -m pytest -m slow runs it)
def test_relaxed_gradients_and_hessian_wrt_weights(data):
  x, y = data
  cfg = RELAXED.config(num_classes=10, init_channels=4, layers=1)
  params, stats = RELAXED.init(jax.random.key(3), cfg, x.shape)
  assert RELAXED.weights_shape(cfg) == (6, 5)

  def loss(w):
    logits, _ = RELAXED.apply(params, stats, w, x, config=cfg, train=True)
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y])

  w = jax.nn.softmax(0.1 * jax.random.normal(jax.random.key(4), (6, 5)), -1)
  g = np.asarray(jax.jit(jax.grad(loss))(w))
  assert g.shape == (6, 5) and np.isfinite(g).all() and (np.abs(g[:, 1:]) > 0).all()
  np.testing.assert_array_equal(g[:, 0], 0.0)  # none contributes nothing
  # Second derivatives (BayesNAS): jax.hessian w.r.t. one edge's weights, through a relaxed cell
  # (every op, the 1x1 convolutions on the fused kernel) in the graph of all its edges.
  h_in = jax.random.normal(jax.random.key(5), (2, 5, 5, 4))
  cell = lambda we: jnp.sum(jnp.sin(nb201_continuous.continuous_cell(  # noqa: E731
      params["block_0"], stats["block_0"], h_in, w.at[4].set(we), config=cfg, train=True)[0]))
  h = np.asarray(jax.jit(jax.hessian(cell))(w[4]))
  assert h.shape == (5, 5) and np.isfinite(h).all() and np.abs(h[1:, 1:]).max() > 0
  np.testing.assert_allclose(h, h.T, atol=1e-3 * np.abs(h).max())
  np.testing.assert_array_equal(h[0], 0.0)


def test_relaxed_derive_and_bad_inputs():
  w = np.zeros((6, 5))
  w[np.arange(6), [0, 1, 2, 3, 4, 0]] = [0.9, 0.3, 0.5, 0.2, 0.8, 0.4]  # none wins two edges
  assert RELAXED.derive(w).tolist() == [0, 1, 2, 3, 4, 0]
  SPACE.validate(RELAXED.derive(w))
  with pytest.raises(ValueError, match=r"shape \(6, 5\)"):
    RELAXED.derive(np.zeros((6, 4)))
  with pytest.raises(ValueError, match="6 op ids"):
    RELAXED.one_hot_weights([0, 1, 2])
  with pytest.raises(ValueError, match="cell_bn_affine must be True or False"):
    RELAXED.config(cell_bn_affine="yes")
  with pytest.raises(ValueError, match="unknown"):
    RELAXED.config(affine=False)
