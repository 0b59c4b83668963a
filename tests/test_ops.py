"""Tests of nas_jax.ops: implementations agree, shapes, BN modes, pooling."""
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import ops


@pytest.mark.parametrize("stride,dilation,kernel,size", [(1, 1, 3, 8), (2, 1, 3, 8),
                                                         pytest.param(2, 1, 5, 7, marks=pytest.mark.slow),
                                                         (1, 2, 3, 9), (2, 2, 5, 8)])
def test_depthwise_shift_matches_grouped_conv_and_gradients(stride, dilation, kernel, size):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  w = jax.random.normal(jax.random.key(1), (kernel, kernel, 3))
  a = ops.depthwise_conv(x, w, stride, dilation, impl="shift")
  b = ops.depthwise_conv(x, w, stride, dilation, impl="grouped")
  o = ops.out_size(size, kernel, stride, dilation)
  assert a.shape == b.shape == (2, o, o, 3)
  np.testing.assert_allclose(a, b, atol=1e-5)
  loss = lambda impl: (lambda x, w: jnp.sum(jnp.sin(ops.depthwise_conv(x, w, stride, dilation, impl))))
  ga = jax.grad(loss("shift"), (0, 1))(x, w)
  gb = jax.grad(loss("grouped"), (0, 1))(x, w)
  for u, v in zip(ga, gb):
    np.testing.assert_allclose(u, v, atol=1e-4)


def test_unknown_depthwise_impl_rejected():
  with pytest.raises(ValueError, match="depthwise impl"):
    with ops.implementation(depthwise="fast"):
      pass


def test_implementation_is_scoped_nested_and_per_thread():
  default = ops.current_implementation()
  seen = {}
  with ops.implementation(depthwise="grouped", pointwise="einsum"):
    with ops.implementation(fusion=False) as inner:
      assert inner == ops.Implementation("grouped", "einsum", False)
      assert (ops.depthwise_impl(), ops.pointwise_impl(), ops.fusion_active()) == ("grouped", "einsum", False)
      thread = threading.Thread(target=lambda: seen.update(impl=ops.current_implementation()))
      thread.start()
      thread.join()
    assert ops.current_implementation() == ops.Implementation("grouped", "einsum", True)
    assert not ops.fusion_active()  # fusion needs both kernels
    with pytest.raises(RuntimeError, match="boom"):
      with ops.implementation(depthwise="shift"):
        raise RuntimeError("boom")
    assert ops.depthwise_impl() == "grouped"  # restored after the error
  assert seen["impl"] == default == ops.Implementation()  # another thread keeps its own (default) choice
  with pytest.raises(ValueError, match="fusion must be True or False"):
    with ops.implementation(fusion="off"):
      pass


def test_the_choice_is_read_at_trace_time():
  x, w = jnp.ones((1, 6, 6, 2)), jnp.ones((3, 3, 2))
  conv = lambda x, w: ops.depthwise_conv(x, w)  # noqa: E731
  f = jax.jit(conv)
  with ops.implementation(depthwise="grouped"):
    assert "feature_group_count" in f.lower(x, w).as_text()
  with ops.implementation(depthwise="shift"):
    assert "feature_group_count" in f.lower(x, w).as_text()  # f keeps the trace it made under "grouped"
    # JAX caches traces by function object, so also jax.jit(conv) would reuse it; a new function reads "shift".
    assert "feature_group_count" not in jax.jit(lambda x, w: conv(x, w)).lower(x, w).as_text()


@pytest.mark.parametrize("stride,dilation,kernel,size", [(1, 1, 3, 8), (2, 1, 3, 7), (1, 2, 5, 9)])
def test_conv2d_taps_matches_lax_and_gradients(stride, dilation, kernel, size):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  w = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 4))
  impls = ("taps", "im2col", "lax")
  conv = {impl: jax.jit(lambda x, w, impl=impl: ops.conv2d(x, w, stride, dilation, impl)) for impl in impls}
  o = ops.out_size(size, kernel, stride, dilation)
  grad = {impl: jax.jit(jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))), (0, 1))) for impl, f in conv.items()}
  for impl in ("taps", "im2col"):
    a, b = conv[impl](x, w), conv["lax"](x, w)
    assert a.shape == b.shape == (2, o, o, 4)
    np.testing.assert_allclose(a, b, atol=1e-4)
    for u, v in zip(grad[impl](x, w), grad["lax"](x, w)):
      np.testing.assert_allclose(u, v, atol=1e-4)
  with pytest.raises(ValueError, match="conv impl"):
    ops.conv2d(x, w, impl="winograd")


def test_pooling_matches_reference():
  x = jax.random.normal(jax.random.key(0), (1, 5, 5, 2))
  # max pool vs reduce_window
  ref = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), [(0, 0), (1, 1), (1, 1), (0, 0)])
  np.testing.assert_allclose(ops.max_pool(x, 2), ref, atol=1e-6)
  # avg pool excludes padding: corner of stride-1 pool averages 4 values
  y = ops.avg_pool(x, 1)
  np.testing.assert_allclose(y[0, 0, 0], x[0, :2, :2].mean(axis=(0, 1)), atol=1e-6)
  np.testing.assert_allclose(y[0, 2, 2], x[0, 1:4, 1:4].mean(axis=(0, 1)), atol=1e-6)
  assert ops.avg_pool(x, 2).shape == (1, 3, 3, 2)


@pytest.mark.parametrize("stride,size", [(1, 5), (2, 5), (2, 6), (1, 6)])
def test_pooling_gradients_match_autodiff_of_reference(stride, size):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  g = jax.random.normal(jax.random.key(1), (2, ops.out_size(size, 3, stride), ops.out_size(size, 3, stride), 3))
  pads = [(0, 0), (1, 1), (1, 1), (0, 0)]
  ref_max = lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pads)
  got = jax.vjp(lambda x: ops.max_pool(x, stride), x)[1](g)[0]
  want = jax.vjp(ref_max, x)[1](g)[0]
  np.testing.assert_allclose(got, want, atol=1e-6)
  # Ties: every gradient goes to one tap per window (the first), none is duplicated.
  flat = jnp.zeros((1, size, size, 1))
  dflat = jax.grad(lambda x: jnp.sum(ops.max_pool(x, stride)))(flat)
  assert float(dflat.sum()) == ops.out_size(size, 3, stride) ** 2
  # avg pool: the custom backward equals autodiff of the same windows written directly.
  ones = jnp.pad(jnp.ones((1, size, size, 1)), pads)
  counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, stride, stride, 1), "VALID")
  ref_avg = lambda x: jax.lax.reduce_window(jnp.pad(x, pads), 0.0, jax.lax.add, (1, 3, 3, 1),
                                            (1, stride, stride, 1), "VALID") / counts
  np.testing.assert_allclose(ops.avg_pool(x, stride), ref_avg(x), atol=1e-6)
  got = jax.vjp(lambda x: ops.avg_pool(x, stride), x)[1](g)[0]
  want = jax.vjp(ref_avg, x)[1](g)[0]
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_batch_norm_modes():
  p, s = ops.init_bn(3)
  x = 2.0 + 3.0 * jax.random.normal(jax.random.key(0), (4, 4, 4, 3))
  y, s1 = ops.batch_norm(p, s, x, train=True)
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, atol=1e-2)
  assert np.all(np.asarray(s1["mean"]) > 0.1)  # moved towards the batch mean
  y2, s2 = ops.batch_norm(p, s, x, train=False)
  np.testing.assert_allclose(y2, x / np.sqrt(1 + ops.BN_EPS), rtol=1e-5)
  assert s2 is s


def test_composite_op_shapes():
  key = jax.random.key(0)
  x = jax.random.normal(key, (2, 7, 7, 4))
  p, s = ops.init_sep_conv(key, 4, 6, 5)
  assert ops.sep_conv(p, s, x, train=True, stride=2)[0].shape == (2, 4, 4, 6)
  p, s = ops.init_dil_conv(key, 4, 6, 3)
  assert ops.dil_conv(p, s, x, train=True)[0].shape == (2, 7, 7, 6)
  p, s = ops.init_factorized_reduce(key, 4, 6)
  assert ops.factorized_reduce(p, s, x, train=True)[0].shape == (2, 4, 4, 6)
  p, s = ops.init_relu_conv_bn(key, 4, 6, 3)
  assert ops.relu_conv_bn(p, s, x, train=False, stride=2)[0].shape == (2, 4, 4, 6)
  assert ops.zero(x, 2).shape == (2, 4, 4, 4) and float(jnp.abs(ops.zero(x)).max()) == 0.0
  assert ops.identity(x) is x


def test_drop_path_drops_whole_samples_and_rescales():
  x = jnp.ones((1000, 2, 2, 1))
  y = ops.drop_path(jax.random.key(0), x, 0.25)
  per_sample = np.asarray(y[:, 0, 0, 0])
  assert np.all(np.isclose(per_sample, 0.0) | np.isclose(per_sample, 1 / 0.75))
  assert np.all(np.asarray(y) == per_sample[:, None, None, None])
  assert 0.2 < np.mean(per_sample == 0) < 0.3
