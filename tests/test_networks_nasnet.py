"""Tests of the nasnet supernets and child network (tiny shapes)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import ops
from nas_jax.kernels import build
from nas_jax.networks import nasnet as N
from nas_jax.networks import supernet as supernet_lib
from nas_jax.networks.nasnet import common as NC
from nas_jax.networks.nasnet import supernet as NS

CFG = N.SupernetConfig(num_classes=3, init_channels=2, layers=3)  # normal, reduction, reduction
SHAPE = (8, 8, 1)


class _Space:
  name = "nasnet"

  def validate(self, arch):
    return N.check_arch(arch)


def _archs(n, seed=0):
  return np.stack([np.asarray(N.random_arch(k)) for k in jax.random.split(jax.random.key(seed), n)])


@pytest.fixture(scope="module")
def supernet():
  params, stats = N.init_supernet(jax.random.key(0), CFG, SHAPE)
  x = jax.random.normal(jax.random.key(1), (4,) + SHAPE)
  y = jnp.array([0, 1, 2, 1], jnp.int32)
  return params, stats, x, y


def test_one_compilation_serves_50_archs(supernet):
  """50 architectures and 50 drop-path probabilities (a schedule of the step), one compilation."""
  params, stats, x, y = supernet
  tx = N.default_optimizer(0.05)
  state = N.init_train_state(params, stats, tx)
  step = N.make_train_step(CFG, tx, donate=False, drop_path=lambda t: 0.01 * t)
  before = jax.tree.map(np.asarray, state["params"])
  losses = []
  for t, arch in enumerate(_archs(50, seed=1)):
    state, metrics = step(state, arch, (x, y), jax.random.key(t))
    losses.append(float(metrics["loss"]))
  # The key draws the drop-path masks: the same key repeats a step, another one changes it.
  again = [float(step(state, arch, (x, y), jax.random.key(k))[1]["loss"]) for k in (0, 0, 1)]
  assert again[0] == again[1] != again[2]
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert np.all(np.isfinite(losses))
  assert int(state["step"]) == 50
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), state["params"], before)
  assert all(jax.tree.leaves(changed["cell_0"]["edges"]["sep3"]))


@pytest.mark.parametrize("reduction, drop", [pytest.param(False, False, marks=pytest.mark.slow), (True, True)])
def test_custom_backward_equals_autodiff(reduction, drop):
  """The hand-written backward scan of a cell gives autodiff's gradients
  (with drop-path factors on the edges in the reduction case)."""
  # The custom scan's forward is undifferentiated, so with fusion it runs the
  # fused sep-conv kernel (double-precision BN moments) where autodiff runs the
  # unfused ops: equal to float rounding, not to this test's tolerance. The
  # fused kernel is tested against the unfused ops in test_kernels.py.
  with ops.implementation(fusion=False):
    _check_custom_backward(reduction, drop)


def _check_custom_backward(reduction, drop):
  c = 3
  p, s = NC.stacked(lambda k: NC.init_edge(k, c, reduction, True),
                    jax.random.split(jax.random.key(0), 10))
  x0 = jax.random.normal(jax.random.key(1), (2, 6, 6, c))
  x1 = jax.random.normal(jax.random.key(2), (2, 6, 6, c))

  def loss(cell_fn, p, x0, x1, cell_arch):
    idx = jnp.stack([cell_arch[:, 0], cell_arch[:, 2]], axis=1).reshape(-1)
    op = jnp.stack([cell_arch[:, 1], cell_arch[:, 3]], axis=1).reshape(-1)
    mask = N.loose_end_mask(cell_arch)
    scale = N.drop_path_scale(jax.random.key(5), cell_arch, reduction, 0.4, x0.shape[0]) if drop else None
    out, _ = cell_fn(reduction, 5, True, p, s, x0, x1, idx, op, mask, scale)  # 5 nodes along channels
    return jnp.sum(jnp.sin(out) * jnp.arange(1, out.shape[-1] + 1))

  custom = jax.jit(jax.grad(functools.partial(loss, NS._cell_scan), argnums=(0, 1, 2)))
  reference = jax.jit(jax.grad(functools.partial(loss, NS._cell_scan_forward), argnums=(0, 1, 2)))
  for arch in _archs(3, seed=7):
    cell_arch = jnp.asarray(arch[int(reduction)])
    got, want = custom(p, x0, x1, cell_arch), reference(p, x0, x1, cell_arch)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    pairs = list(zip(jax.tree.leaves(got), jax.tree.leaves(want)))
    assert sum(float(jnp.abs(b).sum()) > 0 for _, b in pairs) > 5
    for a, b in pairs:
      np.testing.assert_allclose(a, b, atol=2e-5, rtol=2e-4)
  assert custom._cache_size() == 1  # pylint: disable=protected-access


def test_drop_path_scale():
  arch = np.array(N.random_arch(jax.random.key(3)))
  arch[:, 0, 1] = N.IDENTITY  # node 0, slot 0: identity on cell input 0 or 1
  arch[:, 1, 1] = N.IDENTITY
  arch[:, 1, 0] = 2           # node 1, slot 0: identity on node 0 (never dropped)
  arch[:, 2, 1] = N.SEP3
  for reduction in (False, True):
    cell_arch = arch[int(reduction)]
    scale = np.asarray(N.drop_path_scale(jax.random.key(0), cell_arch, reduction, 0.25, 4000))
    assert scale.shape == (10, 4000)
    np.testing.assert_array_equal(scale[2], 1.0)  # edge 2 = node 1 slot 0
    assert set(np.unique(scale[4])) == {0.0, np.float32(1 / 0.75)}  # sep_conv edge
    assert abs(np.mean(scale[4] == 0) - 0.25) < 0.03
    # identity on a cell input: kept in normal cells, a factorized reduce (dropped) in reduction cells
    assert (set(np.unique(scale[0])) == {0.0, np.float32(1 / 0.75)}) == reduction
    np.testing.assert_array_equal(N.drop_path_scale(jax.random.key(0), cell_arch, reduction, 0.0, 8), 1.0)


def _reference_cell(p, s, x0, x1, cell_arch, reduction, train, scale=None):
  """A supernet cell restated for one concrete architecture with plain Python loops: each edge's
  op called directly from ``ops``, times its drop-path factors; the output is the concatenation of
  all nodes, each times its loose-end flag."""
  cell_arch = np.asarray(cell_arch)
  states = [x0, x1]
  for n in range(cell_arch.shape[0]):
    node = 0.0
    for slot in range(2):
      e, inp, op = 2 * n + slot, int(cell_arch[n, 2 * slot]), int(cell_arch[n, 2 * slot + 1])
      pe, se = jax.tree.map(lambda a, e=e: a[e], (p, s))
      stride = 2 if reduction and inp < 2 else 1
      h = states[inp]
      if op in (N.SEP3, N.SEP5):
        name = "sep3" if op == N.SEP3 else "sep5"
        y = ops.sep_conv(pe[name], se[name], h, train=train, stride=stride)[0]
      elif op == N.AVG:
        y = ops.avg_pool(h, stride)
      elif op == N.MAX:
        y = ops.max_pool(h, stride)
      elif stride == 1:
        y = h
      else:
        y = ops.factorized_reduce(pe["fr"], se["fr"], h, train=train)[0]
      if scale is not None:
        y = y * scale[e][:, None, None, None]
      node = node + y
    states.append(node)
  used = {int(v) for v in cell_arch[:, [0, 2]].ravel()}
  return jnp.concatenate([states[2 + j] * float(2 + j not in used) for j in range(cell_arch.shape[0])], axis=-1)


def test_drop_path_and_scan_cell_equal_plain_restatement(supernet):
  params, stats, x, _ = supernet
  apply = jax.jit(functools.partial(N.supernet_apply, config=CFG, train=True))
  arch = _archs(1, seed=9)[0]
  plain, _ = apply(params, stats, arch, x)
  off, _ = apply(params, stats, arch, x, rng=jax.random.key(1), drop_prob=0.0)
  np.testing.assert_allclose(off, plain, atol=1e-6)
  dropped, _ = apply(params, stats, arch, x, rng=jax.random.key(1), drop_prob=0.5)
  assert np.abs(np.asarray(dropped) - np.asarray(plain)).max() > 1e-3
  # The scan cell (traced arch, switch, state buffer) against a plain restatement of the same cell
  # for the concrete arch (independent edge code), on a normal and a reduction cell with drop-path.
  c = 3
  x0, x1 = (jax.random.normal(jax.random.key(k), (4, 6, 6, c)) for k in (1, 2))
  for reduction in (False, True):
    p, s = NC.stacked(lambda k, r=reduction: NC.init_edge(k, c, r, True),
                      jax.random.split(jax.random.key(0), 10))
    cell_arch = jnp.asarray(arch[int(reduction)])
    scale = N.drop_path_scale(jax.random.key(5), cell_arch, reduction, 0.5, 4)
    assert 0 < float(jnp.mean(scale == 0)) < 1
    scan_out, _ = jax.jit(NS._supernet_cell_scan, static_argnums=(5, 6, 7))(  # pylint: disable=protected-access
        p, s, x0, x1, cell_arch, reduction, 5, True, scale)
    want = jax.jit(_reference_cell, static_argnums=(4, 5, 6))(p, s, x0, x1, tuple(map(tuple, arch[int(reduction)])),
                                                              reduction, True, scale)
    assert np.abs(np.asarray(want)).max() > 0
    np.testing.assert_allclose(scan_out, want, atol=1e-5, rtol=1e-5)
  with pytest.raises(ValueError, match="drop_path must be a probability"):
    N.make_train_step(CFG, N.default_optimizer(0.05), drop_path=1.0)


@pytest.mark.skipif(not build.available(), reason="the fused kernel needs nas_jax.kernels")
def test_a_new_trace_reads_the_current_ops_implementation(supernet):
  """The cell scan is a nested jit that JAX caches across traces: it is keyed on ops.implementation."""
  params, stats, x, _ = supernet
  arch = _archs(1)[0]
  hlo = lambda: jax.jit(lambda p, s, a: N.supernet_apply(p, s, a, x, config=CFG, train=True)[0]).lower(  # noqa: E731
      params, stats, arch).as_text()
  assert "nas_jax_fused" in hlo()
  with ops.implementation(fusion=False):
    assert "nas_jax_fused" not in hlo()
  assert "nas_jax_fused" in hlo()


def test_child_from_supernet_matches_supernet(supernet):
  params, stats, x, _ = supernet
  # Make running statistics non-trivial so eval mode is a real check.
  stats = jax.tree.map(lambda a: a + 0.1 * jax.random.uniform(jax.random.key(3), a.shape), stats)
  apply = jax.jit(functools.partial(N.supernet_apply, config=CFG), static_argnames="train")
  for arch in _archs(2, seed=2):  # each child compiles anew (its arch is static)
    child = N.build_child(_Space(), arch, num_classes=3, init_channels=2, layers=3)
    variables = N.child_variables_from_supernet(arch, params, stats, CFG)
    ref = jax.eval_shape(functools.partial(child.init, train=False), {"params": jax.random.key(0)}, x)
    assert jax.tree.structure(ref) == jax.tree.structure(variables)
    child_apply = jax.jit(functools.partial(child.apply, mutable=["batch_stats"]), static_argnames="train")
    for train in (False, True):
      want, _ = apply(params, stats, arch, x, train=train)
      (got, aux), _ = child_apply(variables, x, train=train)
      assert aux is None
      np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # heavy compile; CI runs the fast tier (python -m pytest -m slow runs it)
def test_eval_archs_scores_each_arch(supernet):
  params, stats, x, y = supernet
  archs = _archs(3, seed=4)
  acc, loss = N.make_eval_archs(CFG, method="map")(params, stats, archs, x, y)
  assert acc.shape == loss.shape == (3,)
  for k in range(3):
    logits, _ = N.supernet_apply(params, stats, archs[k], x, config=CFG, train=True)
    want = np.mean(np.argmax(logits, -1) == np.asarray(y))
    assert abs(float(acc[k]) - want) < 1e-6
  assert len(set(np.round(np.asarray(loss), 5))) == 3


def test_bad_inputs_rejected():
  with pytest.raises(ValueError, match="input"):
    N.check_arch(np.array([[[2, 0, 0, 0]] + [[0, 0, 0, 0]] * 4] * 2))
  with pytest.raises(ValueError, match="op"):
    N.check_arch(np.array([[[0, 5, 0, 0]] + [[0, 0, 0, 0]] * 4] * 2))
  with pytest.raises(ValueError, match="shape"):
    N.check_arch(np.zeros((2, 4, 4)))
  with pytest.raises(ValueError, match="eval method"):
    N.make_eval_archs(CFG, method="pmap")
  with pytest.raises(ValueError, match="layers"):
    N.SupernetConfig(layers=0)


def test_loose_end_mask_and_derive_arch():
  cell = np.array([[0, 0, 1, 0], [2, 1, 0, 1], [3, 2, 1, 2], [0, 3, 1, 3], [2, 4, 0, 4]])
  np.testing.assert_array_equal(N.loose_end_mask(jnp.asarray(cell)), [0, 0, 1, 1, 1])
  w = np.zeros((2, N.num_mixed_edges(), 5))
  w[0, N.edge_index(3, 4), 1] = 2.0
  w[0, N.edge_index(3, 0), 2] = 1.0
  arch = N.derive_arch(w)
  assert list(arch[0, 3]) == [4, 1, 0, 2]
  N.check_arch(arch)


@pytest.mark.slow  # heavy compile; CI runs the fast tier (python -m pytest -m slow runs it)
def test_continuous_gradients_finite_and_nonzero():
  cfg = N.SupernetConfig(num_classes=3, init_channels=2, layers=2)
  params, stats = N.init_continuous(jax.random.key(0), cfg, SHAPE)
  x = jax.random.normal(jax.random.key(1), (2,) + SHAPE)
  y = jnp.array([0, 2])

  @jax.jit
  def grads(a_soft, a_switch):
    out = []
    for a, mode in ((a_soft, "softmax"), (a_switch, "switch")):
      f = lambda a, mode=mode: jnp.mean(supernet_lib.cross_entropy(
          N.continuous_apply(params, stats, a, x, config=cfg, train=True, mode=mode)[0], y))
      out.append(jax.grad(f)(a))
    return out

  for g in grads(N.init_arch_params(cfg, "softmax", key=jax.random.key(2)),
                 N.init_arch_params(cfg, "switch")):
    assert g.shape == (2, N.num_mixed_edges(), 5)
    assert bool(jnp.all(jnp.isfinite(g)))
    # layers=2: both cells are reduction cells, so only arch_params[1] is used.
    assert float(jnp.mean(jnp.abs(g[1]) > 0)) > 0.9
    assert float(jnp.abs(g[0]).max()) == 0.0


def _reference_continuous_cell(p, s, x0, x1, z, reduction):
  """The relaxed cell restated with plain Python loops: node n sums, over its inputs i, the 5 ops
  of edge (n, i) applied directly from ``ops``, each times its weight ``z[edge_index(n, i), op]``."""
  states = [x0, x1]
  for n in range(5):
    node = 0.0
    for inp in range(n + 2):
      e = N.edge_index(n, inp)
      pe, se = jax.tree.map(lambda a, e=e: a[e], (p, s))
      stride = 2 if reduction and inp < 2 else 1
      h = states[inp]
      outs = [ops.sep_conv(pe["sep3"], se["sep3"], h, train=True, stride=stride)[0],
              ops.sep_conv(pe["sep5"], se["sep5"], h, train=True, stride=stride)[0],
              ops.avg_pool(h, stride), ops.max_pool(h, stride),
              h if stride == 1 else ops.factorized_reduce(pe["fr"], se["fr"], h, train=True)[0]]
      node = node + sum(z[e, o] * outs[o] for o in range(5))
    states.append(node)
  return jnp.concatenate(states[2:], axis=-1)


@pytest.mark.slow  # heavy compile; CI runs the fast tier (python -m pytest -m slow runs it)
def test_continuous_cell_hessian_wrt_switches():
  params, stats = N.init_continuous(jax.random.key(0), N.SupernetConfig(num_classes=2, init_channels=2,
                                                                        layers=1), SHAPE)
  p, s = params["cell_0"]["edges"], stats["cell_0"]["edges"]
  x0 = jax.random.normal(jax.random.key(1), (2, 4, 4, 4))
  z = jax.random.uniform(jax.random.key(2), (N.num_mixed_edges(), 5))
  scan_cell = jax.jit(lambda z: N.continuous_cell(p, s, x0, 0.5 * x0, z, reduction=True, num_nodes=5,
                                                  train=True)[0])
  want = jax.jit(lambda z: _reference_continuous_cell(p, s, x0, 0.5 * x0, z, True))(z)
  np.testing.assert_allclose(scan_cell(z), want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))
  cell = lambda z: jnp.sum(N.continuous_cell(p, s, x0, 0.5 * x0, z, reduction=True, num_nodes=5, train=True)[0] ** 2)
  h = jax.jit(jax.hessian(cell))(z)
  assert h.shape == z.shape * 2
  assert bool(jnp.all(jnp.isfinite(h))) and float(jnp.abs(h).max()) > 0
  hm = np.asarray(h).reshape(z.size, z.size)
  np.testing.assert_allclose(hm, hm.T, atol=1e-3 * np.abs(hm).max())


def test_child_any_input_and_aux_and_drop_path():
  arch = _archs(1, seed=5)[0]
  child = N.build_child(_Space(), arch, num_classes=4, init_channels=4, layers=3, auxiliary=True)
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 3))
  variables = child.init({"params": jax.random.key(1)}, x, train=False)
  (logits, aux), _ = child.apply(variables, x, train=True, drop_prob=0.2, rngs={"drop_path": jax.random.key(2)},
                                 mutable=["batch_stats"])
  assert logits.shape == aux.shape == (2, 4)
  logits, aux = child.apply(variables, x, train=False)
  assert logits.shape == (2, 4) and aux is None


def test_eval_apply_equals_supernet_apply():
  """The forward-only evaluation path (kernels reading the states in place, cell outputs kept as
  node lists, stem shared by the archs) computes supernet_apply's logits, in both BN modes."""
  cfg = N.SupernetConfig(num_classes=5, init_channels=8, layers=3)  # normal, reduction, reduction
  params, stats = N.init_supernet(jax.random.key(2), cfg, (8, 8, 3))
  stats = jax.tree.map(lambda v: v + 0.2 * jnp.abs(jax.random.normal(jax.random.key(3), v.shape)), stats)
  x = jax.random.normal(jax.random.key(4), (6, 8, 8, 3))
  y = jnp.arange(6, dtype=jnp.int32) % 5
  archs = _archs(3, seed=9)
  archs[0, :, :, 1] = archs[0, :, :, 3] = N.IDENTITY  # identities: factorized reduces on reduction inputs
  archs[1, :, :, 1] = N.MAX
  archs[1, :, :, 3] = N.AVG
  # Running statistics: the logits of each arch (one compilation for all).
  fast = jax.jit(lambda a: N.supernet_eval_apply(params, stats, a, x, config=cfg, train=False))
  ref = jax.jit(lambda a: N.supernet_apply(params, stats, a, x, config=cfg, train=False)[0])
  for arch in archs:
    want = np.asarray(ref(arch))
    np.testing.assert_allclose(np.asarray(fast(arch)), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  assert fast._cache_size() == 1
  # Batch statistics: eval_archs' losses (a smooth function of the logits) and accuracies.
  got = N.make_eval_archs(cfg, fast=True)(params, stats, archs, x, y)
  want = N.make_eval_archs(cfg, fast=False)(params, stats, archs, x, y)
  for u, v in zip(got, want):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-5)
  assert len(set(np.round(np.asarray(got[1]), 4))) == len(archs)
  with pytest.raises(ValueError, match="method='map'"):
    N.make_eval_archs(cfg, method="vmap", fast=True)
