"""The C++ depthwise, pointwise and fused kernels against pure JAX, to every order and under vmap."""
import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import ops
from nas_jax.kernels import build
from nas_jax.kernels import depthwise as K
from nas_jax.kernels import pointwise as P

needs_kernels = pytest.mark.skipif(not build.available(), reason=f"kernels not built: {build.unavailable_reason()}")

# (N, H, W, C, k, stride, dilation): odd sizes, strides, dilations, and channel
# counts both compiled in (8, 16, 32: the register-blocked rows, and the input
# gradient as a flipped forward at stride 1) and not (3, 5); the last two are
# widths the default supernets run (C=16: stem 48, cells 16, 32 and 64).
SHAPES = [(2, 7, 9, 5, 3, 1, 1), (2, 8, 8, 16, 5, 2, 1), (3, 9, 7, 3, 3, 2, 2), (1, 5, 5, 8, 1, 1, 2),
          (2, 7, 9, 16, 3, 1, 1), (1, 6, 5, 32, 5, 1, 2), (2, 5, 6, 48, 3, 1, 1), (2, 6, 5, 64, 5, 2, 1)]


def _close(a, b, tol=1e-4):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol * (float(jnp.abs(v).max()) + 1e-6))


def _inputs(shape):
  n, h, w, c, k, _, _ = shape
  return jax.random.normal(jax.random.key(1), (n, h, w, c)), jax.random.normal(jax.random.key(2), (k, k, c))


def _loss(conv):
  return lambda x, w: jnp.sum(jnp.tanh(conv(x, w)) ** 2)


@needs_kernels
@pytest.mark.parametrize("shape", SHAPES)
def test_values_and_gradients_match_pure_jax(shape):
  x, w = _inputs(shape)
  s, d = shape[5], shape[6]
  ref = functools.partial(ops.depthwise_conv, stride=s, dilation=d, impl="shift")
  new = functools.partial(K.depthwise_conv, stride=s, dilation=d)
  y_ref = jax.jit(ref)(x, w)
  _close(new(x, w), y_ref)  # eager: the primitive's own jitted impl
  _close(jax.jit(new)(x, w), y_ref)
  grad = lambda conv: jax.jit(jax.grad(_loss(conv), (0, 1)))
  _close(grad(new)(x, w), grad(ref)(x, w))


@needs_kernels
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2]])
def test_second_derivatives_in_both_modes(shape):
  x, w = _inputs(shape)
  s, d = shape[5], shape[6]
  ref = functools.partial(ops.depthwise_conv, stride=s, dilation=d, impl="shift")
  new = functools.partial(K.depthwise_conv, stride=s, dilation=d)
  h_ref = jax.jit(jax.hessian(_loss(ref), 1))(x, w)
  _close(jax.jit(jax.hessian(_loss(new), 1))(x, w), h_ref, 1e-3)  # forward over reverse
  _close(jax.jit(jax.jacrev(jax.grad(_loss(new), 1), 1))(x, w), h_ref, 1e-3)  # reverse over reverse
  # Hessian-vector product in x (the input gradient's own derivatives).
  v = jax.random.normal(jax.random.key(3), x.shape)
  hvp = lambda conv: jax.jit(lambda x: jax.jvp(jax.grad(_loss(conv)), (x, w), (v, jnp.zeros_like(w)))[1])
  _close(hvp(new)(x), hvp(ref)(x), 1e-3)


@needs_kernels
def test_vmap_folds_the_mapped_axis_into_channels():
  x, w = _inputs((2, 6, 6, 4, 3, 2, 1))
  ref = functools.partial(ops.depthwise_conv, stride=2, impl="shift")
  new = functools.partial(K.depthwise_conv, stride=2)
  xs, ws = jnp.stack([x, 2 * x, -x]), jnp.stack([w, 0.5 * w, w ** 2])
  _close(jax.vmap(new, (0, None))(xs, w), jax.vmap(ref, (0, None))(xs, w))
  _close(jax.vmap(new, (None, 0))(x, ws), jax.vmap(ref, (None, 0))(x, ws))
  _close(jax.vmap(new, (2, 0))(jnp.moveaxis(xs, 0, 2), ws), jax.vmap(ref)(xs, ws))
  vgrad = lambda conv: jax.jit(jax.vmap(jax.grad(_loss(conv), (0, 1))))
  _close(vgrad(new)(xs, ws), vgrad(ref)(xs, ws))


@needs_kernels
def test_weight_gradient_is_bitwise_deterministic():
  x = jax.random.normal(jax.random.key(0), (33, 16, 16, 16))
  w = jax.random.normal(jax.random.key(1), (5, 5, 16))
  grad = jax.jit(jax.grad(lambda w: jnp.sum(K.depthwise_conv(x, w) ** 2)))
  first = np.asarray(grad(w))
  for _ in range(4):
    np.testing.assert_array_equal(np.asarray(grad(w)), first)


@needs_kernels
def test_auto_picks_the_kernel_on_cpu_and_ops_use_it():
  assert ops.depthwise_impl() == "kernel"
  hlo = jax.jit(lambda x, w: ops.depthwise_conv(x, w)).lower(*_inputs(SHAPES[0])).as_text()
  assert "nas_jax_depthwise_forward" in hlo


def test_bad_arguments_are_rejected():
  x, w = _inputs(SHAPES[0])
  with pytest.raises(ValueError, match="odd"):
    K.depthwise_conv(x, jnp.zeros((2, 2, 5)))
  with pytest.raises(ValueError, match="stride"):
    K.depthwise_conv(x, w, stride=0)
  with pytest.raises(ValueError, match=r"w \[k, k, C\]"):
    K.depthwise_conv(x, w[..., :2])


@pytest.mark.parametrize("env, reason", [({"NAS_JAX_KERNELS": "0"}, "NAS_JAX_KERNELS=0"),
                                         ({"CXX": "false"}, "kernel build failed"),
                                         ({"CXX": "/nonexistent/cxx", "PATH": "/nonexistent"}, "no C++ compiler")])
def test_without_kernels_auto_falls_back_and_kernel_says_why(env, reason, tmp_path):
  # A fresh process with an empty cache: a failed build must leave the library usable.
  code = ("import jax, jax.numpy as jnp\n"
          "from nas_jax import ops\n"
          "from nas_jax.kernels import build\n"
          "print(ops.depthwise_impl(), '|', build.unavailable_reason())\n"
          "y = ops.depthwise_conv(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2)))\n"
          "print(float(y[0, 1, 1, 0]))\n"
          "try:\n"
          "  with ops.implementation(depthwise='kernel'):\n"
          "    ops.depthwise_conv(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2)))\n"
          "except RuntimeError as e:\n"
          "  print('error:', e)\n")
  full_env = {**os.environ, "NAS_JAX_KERNEL_CACHE": str(tmp_path), "JAX_PLATFORMS": "cpu", **env}
  if "PATH" in env:
    full_env["PATH"] = env["PATH"]
  out = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, check=True,
                       timeout=120).stdout.splitlines()
  assert out[0].startswith("shift |") and reason in out[0]
  assert out[1] == "9.0"
  assert out[2].startswith("error: depthwise impl 'kernel' is not available") and reason in out[2]
  assert not list(tmp_path.glob("*.so"))


@needs_kernels
def test_library_is_cached_per_source_and_reused(tmp_path, monkeypatch):
  monkeypatch.setenv("NAS_JAX_KERNEL_CACHE", str(tmp_path))
  cxx = build.compiler()
  path = build.library_path(cxx)
  assert path.parent == tmp_path and path.name.startswith("nas_jax_kernels-")
  assert build.library_path(cxx) == path  # the same key on every call
  other = tmp_path / "other.cc"
  other.write_text(build.SOURCES[0].read_text() + "\n// x\n")
  monkeypatch.setattr(build, "SOURCES", (other, *build.SOURCES[1:]))
  assert build.library_path(cxx) != path  # another source, another library


# --- pointwise ------------------------------------------------------------------------------
def _einsum(x, w):
  return jnp.einsum("...k,kn->...n", x, w)


@needs_kernels
@pytest.mark.parametrize("x_shape, n", [((2, 5, 5, 16), 16), ((3, 4, 80), 16), ((7, 5), 3), ((2, 3, 3, 24), 40),
                                        ((1, 2, 2, 160), 32)])
def test_pointwise_values_gradients_and_second_derivatives(x_shape, n):
  # Widths: the AVX paths (16, 32), column blocks (40), plain loops (3).
  x = jax.random.normal(jax.random.key(1), x_shape)
  w = jax.random.normal(jax.random.key(2), (x_shape[-1], n))
  _close(P.pointwise_conv(x, w), _einsum(x, w))
  grad = lambda f: jax.jit(jax.grad(_loss(f), (0, 1)))
  _close(grad(P.pointwise_conv)(x, w), grad(_einsum)(x, w))
  hess = lambda f: jax.jit(jax.hessian(_loss(f), 1))
  _close(hess(P.pointwise_conv)(x, w), hess(_einsum)(x, w), 1e-3)
  rev2 = jax.jit(jax.jacrev(jax.grad(_loss(P.pointwise_conv), 1), 1))
  _close(rev2(x, w), hess(_einsum)(x, w), 1e-3)


@needs_kernels
@pytest.mark.parametrize("x_shape, n", [((2, 3, 3, 27), 48), ((2, 3, 3, 48), 16), ((2, 3, 3, 64), 64)])
def test_pointwise_supernet_widths(x_shape, n):
  """Widths the default supernets run (C=16): the stem as im2col (27 -> 48), a cell's 1x1 preprocessing of
  the stem (48 -> 16), the last stage (64 -> 64). Second derivatives are checked on the shapes above."""
  x = jax.random.normal(jax.random.key(1), x_shape)
  w = jax.random.normal(jax.random.key(2), (x_shape[-1], n))
  _close(jax.jit(P.pointwise_conv)(x, w), _einsum(x, w))
  grad = lambda f: jax.jit(jax.grad(_loss(f), (0, 1)))
  _close(grad(P.pointwise_conv)(x, w), grad(_einsum)(x, w))


@needs_kernels
def test_pointwise_vmap_shared_and_mapped_weights():
  xs = jax.random.normal(jax.random.key(1), (3, 2, 4, 4, 8))
  w = jax.random.normal(jax.random.key(2), (8, 16))
  ws = jnp.stack([w, -w, 2 * w])
  _close(jax.vmap(P.pointwise_conv, (0, None))(xs, w), jax.vmap(_einsum, (0, None))(xs, w))
  _close(jax.vmap(P.pointwise_conv, (3, None))(jnp.moveaxis(xs, 0, 3), w), jax.vmap(_einsum, (0, None))(xs, w))
  _close(jax.vmap(P.pointwise_conv)(xs, ws), jax.vmap(_einsum)(xs, ws))
  _close(jax.vmap(P.pointwise_conv, (None, 0))(xs[0], ws), jax.vmap(_einsum, (None, 0))(xs[0], ws))
  vgrad = lambda f, axes: jax.jit(jax.vmap(jax.grad(_loss(f), (0, 1)), axes))
  _close(vgrad(P.pointwise_conv, (0, None))(xs, w), vgrad(_einsum, (0, None))(xs, w))
  _close(vgrad(P.pointwise_conv, (0, 0))(xs, ws), vgrad(_einsum, (0, 0))(xs, ws))


@needs_kernels
def test_pointwise_auto_uses_the_kernel_and_rejects_bad_shapes():
  assert ops.pointwise_impl() == "kernel"
  x, w = jnp.ones((2, 3, 3, 4)), jnp.ones((4, 8))
  hlo = lambda: jax.jit(lambda x, w: ops.pointwise_conv(x, w)).lower(x, w).as_text()  # traced afresh
  assert "nas_jax_pointwise_forward" in hlo()
  with ops.implementation(pointwise="einsum"):
    assert "nas_jax_pointwise" not in hlo()
  assert ops.pointwise_impl() == "kernel"  # restored on exit
  with pytest.raises(ValueError, match=r"x \[\.\.\., K\] and w \[K, N\]"):
    P.pointwise_conv(x, jnp.ones((5, 8)))
  with pytest.raises(ValueError, match="unknown pointwise impl"):
    with ops.implementation(pointwise="fast"):
      pass


def test_portable_lowering_without_kernels_matches(monkeypatch):
  # What the primitives lower to off the CPU, or where the build failed: XLA's grouped conv and dot.
  monkeypatch.setitem(build._state, "ok", False)  # pylint: disable=protected-access
  monkeypatch.setitem(build._state, "reason", "test")  # pylint: disable=protected-access
  x, w = _inputs(SHAPES[2])
  ref = lambda x, w: ops.depthwise_conv(x, w, stride=2, dilation=2, impl="shift") @ jnp.eye(3)
  new = lambda x, w: P.pointwise_conv(K.depthwise_conv(x, w, stride=2, dilation=2), jnp.eye(3))
  hlo = jax.jit(new).lower(x, w).as_text()
  assert "nas_jax_" not in hlo and "custom_call" not in hlo
  grad = lambda conv: jax.jit(jax.grad(_loss(conv), (0, 1)))
  _close(jax.jit(new)(x, w), jax.jit(ref)(x, w))
  _close(grad(new)(x, w), grad(ref)(x, w))


# --- the fused forward of separable-conv halves ----------------------------------------
from nas_jax.kernels import fused as F  # noqa: E402

# (N, H, W, C, C_out, k (0: 1x1 only), stride, dilation, affine): AVX widths and
# generic ones (12 -> 20, 5 -> 3), strides, a dilation, the 1x1 variant (with
# and without the input affine map; sep_conv's first half, without, is in
# test_ops_with_fusion_equal_ops_without); the last three are widths the
# default supernets run (C=16): the 1x1 preprocessing of the stem (48 -> 16)
# and separable convs of the last stage (64), strided as on a reduction cell's input.
FUSED_SHAPES = [(2, 8, 8, 16, 16, 5, 2, 1, True), (2, 7, 7, 32, 32, 3, 1, 2, True),
                (2, 6, 5, 12, 20, 3, 2, 1, True), (3, 6, 6, 80, 16, 0, 1, 1, False), (2, 5, 5, 5, 3, 0, 1, 1, True),
                (2, 5, 5, 48, 16, 0, 1, 1, False), (2, 5, 5, 64, 64, 3, 1, 1, True), (2, 6, 6, 64, 64, 5, 2, 1, False)]


def _fused_inputs(shape):
  n, h, w, c, co, k, _, _, affine = shape
  keys = jax.random.split(jax.random.key(3), 5)
  x = jax.random.normal(keys[0], (n, h, w, c))
  a, b = (jax.random.normal(keys[1], (c,)), jax.random.normal(keys[2], (c,))) if affine else (None, None)
  pw = jax.random.normal(keys[4], (c, co)) * 0.3
  return x, a, b, ((jax.random.normal(keys[3], (k, k, c)), pw) if k else (pw,))


@needs_kernels
@pytest.mark.parametrize("shape", FUSED_SHAPES)
def test_fused_half_matches_unfused_values_and_gradients(shape):
  x, a, b, weights = _fused_inputs(shape)
  stride, dilation, affine = shape[6:]
  fused = jax.jit(lambda x, a, b, w: F.relu_conv_moments(x, a, b, w, stride=stride, dilation=dilation))
  ca, cb = (a, b) if affine else (jnp.zeros(x.shape[-1]), jnp.zeros(x.shape[-1]))
  ref = jax.jit(lambda x, a, b, w: F.reference(x, ca if a is None else a, cb if b is None else b, *w, stride=stride,
                                                 dilation=dilation, affine=affine))
  assert "nas_jax_fused" in fused.lower(x, a, b, weights).compile().as_text()
  y, mean, var = fused(x, a, b, weights)
  _close((y, mean, var), ref(x, a, b, weights), tol=1e-5)
  _close((mean, var), F.batch_moments(np.asarray(y, np.float64)), tol=1e-5)
  assert float(jnp.min(var)) >= 0

  def loss(f):
    return lambda x, a, b, w: (jnp.sum(jnp.tanh(f(x, a, b, w)[0]) ** 2)
                               + jnp.sum(f(x, a, b, w)[1] * f(x, a, b, w)[2]))
  # Reverse mode runs the fused backward kernel (the transpose of the JVP); the
  # cotangents of y, mean and var all reach it.
  argnums = (0, 1, 2, 3) if affine else (0, 3)
  grad_fused = jax.jit(jax.grad(loss(fused), argnums=argnums))
  assert "backward" in grad_fused.lower(x, a, b, weights).compile().as_text()
  _close(grad_fused(x, a, b, weights), jax.grad(loss(ref), argnums=argnums)(x, a, b, weights), tol=1e-4)


@needs_kernels
@pytest.mark.parametrize("shape", [FUSED_SHAPES[0], FUSED_SHAPES[3]])
def test_fused_backward_kernel_matches_reference_and_higher_orders_still_work(shape):
  """``vjp_p`` (the kernel) vs ``vjp_reference``; forward mode, HVPs and vmap(grad) through the references."""
  x, a, b, weights = _fused_inputs(shape)
  stride, dilation, affine = shape[6:]
  ka, kb = a, b  # relu_conv_moments' arguments (None: no input affine map)
  if not affine:
    a = b = jnp.zeros(x.shape[-1])
  y = F.relu_conv_moments(x, ka, kb, weights, stride=stride, dilation=dilation)[0]
  co = y.shape[-1]
  gy = jax.random.normal(jax.random.key(7), y.shape)
  c0, c1 = jnp.linspace(-0.2, 0.3, co), jnp.linspace(0.01, -0.02, co)
  params = dict(stride=stride, dilation=dilation, affine=affine)
  got = jax.jit(lambda *args: F.vjp_p.bind(*args, **params))(x, a, b, *weights, y, gy, c0, c1)
  _close(got, F.vjp_reference(x, a, b, *weights, y, gy, c0, c1, **params), tol=1e-4)
  assert jax.tree.structure(tuple(got)) == jax.tree.structure((x, a, b, *weights))

  def f(s):  # a scalar path through the kernel: y, mean and var all used
    y, mean, var = F.relu_conv_moments(x * s, ka, kb, weights, stride=stride, dilation=dilation)
    return jnp.sum(jnp.tanh(y) ** 2) + jnp.sum(mean * var)

  def f_ref(s):
    return jnp.sum(jnp.tanh(F.reference(x * s, a, b, *weights, **params)[0]) ** 2) + jnp.sum(
        jnp.prod(jnp.stack(F.reference(x * s, a, b, *weights, **params)[1:]), axis=0))

  s = jnp.float32(1.3)
  _close(jax.jvp(f, (s,), (jnp.float32(1.0),)), jax.jvp(f_ref, (s,), (jnp.float32(1.0),)), tol=1e-4)
  _close(jax.hessian(f)(s), jax.hessian(f_ref)(s), tol=1e-3)
  ss = jnp.array([0.7, 1.3])
  _close(jax.vmap(jax.grad(f))(ss), jax.vmap(jax.grad(f_ref))(ss), tol=1e-4)


@needs_kernels
def test_fused_half_vmap_and_bad_arguments():
  shape = FUSED_SHAPES[0]
  x, a, b, weights = _fused_inputs(shape)
  xs = jnp.stack([x, 2 * x + 1])
  got = jax.vmap(lambda x: F.relu_conv_moments(x, a, b, weights, stride=2))(xs)
  for i in range(2):
    _close([o[i] for o in got], F.relu_conv_moments(xs[i], a, b, weights, stride=2), tol=1e-5)
  with pytest.raises(ValueError, match="stride 1"):
    F.relu_conv_moments(x, a, b, weights[1:], stride=2)
  with pytest.raises(ValueError, match="both a and b"):
    F.relu_conv_moments(x, a, None, weights)
  with pytest.raises(ValueError, match="k odd"):
    F.relu_conv_moments(x, a, b, (jnp.ones((2, 2, 16)), weights[1]))


@needs_kernels
@pytest.mark.parametrize("train", [True, False])
def test_ops_with_fusion_equal_ops_without(train):
  """sep_conv, dil_conv and 1x1 relu_conv_bn: same outputs, statistics and gradients with the fused kernel."""
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 16))
  layers = [(ops.init_sep_conv(jax.random.key(1), 16, 16, 3), functools.partial(ops.sep_conv, stride=2)),
            (ops.init_dil_conv(jax.random.key(2), 16, 16, 3), ops.dil_conv),
            (ops.init_relu_conv_bn(jax.random.key(3), 16, 8, 1), ops.relu_conv_bn)]
  for (params, stats), layer in layers:
    def run(params):
      y, new_stats = layer(params, stats, x, train=train)
      return jnp.sum(jnp.tanh(y) ** 2), (y, new_stats)
    results = {}
    for on in (True, False):
      with ops.implementation(fusion=on):
        assert ops.fusion_active() == on
        f = jax.jit(lambda p: run(p)[1])
        assert ("nas_jax_fused" in f.lower(params).compile().as_text()) == on
        results[on] = (f(params), jax.grad(lambda p: run(p)[0])(params))
    _close(results[True], results[False], tol=1e-5)


# --- kernels that read a cell's states in place (kernels/pick.py) ------------------------
from nas_jax.kernels import pick as PK  # noqa: E402


def _candidates(n, shape, seed):
  return tuple(jax.random.normal(k, shape) for k in jax.random.split(jax.random.key(seed), n))


@needs_kernels
@pytest.mark.parametrize("shape, k, stride, dilation", [((2, 9, 9, 16), 3, 2, 1), ((2, 7, 8, 12), 5, 1, 1),
                                                        ((1, 8, 8, 8), 7, 1, 1), ((2, 9, 7, 32), 3, 1, 2)])
def test_conv_pick_matches_reference(shape, k, stride, dilation):
  cands = _candidates(3, shape, 5)
  c = shape[-1]
  keys = jax.random.split(jax.random.key(6), 4)
  dw, pw = jax.random.normal(keys[0], (k, k, c)), jax.random.normal(keys[1], (c, 2 * c)) * 0.3
  a, b = jax.random.normal(keys[2], (c,)), jax.random.normal(keys[3], (c,))
  f = jax.jit(lambda i, cs, a, b: PK.relu_conv_moments_pick(i, cs, a, b, (dw, pw), stride=stride, dilation=dilation))
  assert "nas_jax_fused_depthwise_pointwise_pick" in f.lower(0, cands, a, b).compile().as_text()
  for affine in (True, False):
    ref = jax.jit(functools.partial(PK.reference_conv_pick, stride=stride, dilation=dilation, affine=affine))
    for i in range(3):
      _close(f(i, cands, *((a, b) if affine else (None, None))), ref(i, a, b, dw, pw, *cands), tol=1e-5)
  if k != 3 or stride != 2:
    return
  # Derivatives differentiate the reference maths (one shape: each one compiles its gradients).
  loss = lambda fn: lambda x1, a: jnp.sum(jnp.sin(fn(x1, a)[0]))
  got = loss(lambda x1, a: PK.relu_conv_moments_pick(1, (cands[0], x1), a, b, (dw, pw), stride=stride,
                                                    dilation=dilation))
  ref = loss(lambda x1, a: PK.reference_conv_pick(1, a, b, dw, pw, cands[0], x1, stride=stride, dilation=dilation,
                                                 affine=True))
  _close(jax.grad(got, argnums=(0, 1))(cands[1], a), jax.grad(ref, argnums=(0, 1))(cands[1], a), tol=1e-4)


@needs_kernels
@pytest.mark.parametrize("shape", [(2, 9, 7, 16), (3, 8, 8, 5)])
def test_pointwise_slots_matches_reference(shape):
  slots = _candidates(4, shape, 8)
  pw = jax.random.normal(jax.random.key(9), (4 * shape[-1], 24)) * 0.3
  f = jax.jit(lambda m, s, st, off: PK.relu_pointwise_slots(m, pw, s, stride=st, offset=off), static_argnums=(2, 3))
  assert "nas_jax_fused_pointwise_slots" in f.lower(jnp.ones(4), slots, 1, 0).compile().as_text()
  for mask in ([1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.5, 2.0, 0.0, 1.0]):
    m = jnp.asarray(mask)
    for st, off in ((1, 0), (2, 0), (2, 1)):
      _close(f(m, slots, st, off), PK.reference_slots(m, pw, *slots, stride=st, offset=off), tol=1e-5)
  # The stride-2 halves are those of ops.factorized_reduce on the masked concatenation.
  x = jnp.concatenate([s * v for s, v in zip(slots, [1.0, 0.0, 1.0, 1.0])], axis=-1)
  y0 = f(jnp.asarray([1.0, 0.0, 1.0, 1.0]), slots, 2, 0)[0]
  y1 = f(jnp.asarray([1.0, 0.0, 1.0, 1.0]), slots, 2, 1)[0]
  xr = jax.nn.relu(x)
  xp = jnp.pad(xr, ((0, 0), (0, 1), (0, 1), (0, 0)))
  _close(y0, xr[:, ::2, ::2] @ pw, tol=1e-5)
  _close(y1, xp[:, 1::2, 1::2] @ pw, tol=1e-5)


def test_pick_bad_arguments():
  cands = _candidates(2, (1, 4, 4, 8), 1)
  dw, pw = jnp.ones((3, 3, 8)), jnp.ones((8, 8))
  with pytest.raises(ValueError, match="one shape"):
    PK.relu_conv_moments_pick(0, (cands[0], cands[1][:, :2]), None, None, (dw, pw))
  with pytest.raises(ValueError, match="weights"):
    PK.relu_conv_moments_pick(0, cands, None, None, (dw, jnp.ones((4, 8))))
  with pytest.raises(ValueError, match="both a and b"):
    PK.relu_conv_moments_pick(0, cands, jnp.ones(8), None, (dw, pw))
  with pytest.raises(ValueError, match="mask"):
    PK.relu_pointwise_slots(jnp.ones(3), jnp.ones((16, 4)), cands)
  with pytest.raises(ValueError, match="offset"):
    PK.relu_pointwise_slots(jnp.ones(2), jnp.ones((16, 4)), cands, stride=2, offset=2)


@needs_kernels
@pytest.mark.parametrize("c, h", [(16, 9), (5, 8)])
def test_node_sum_matches_reference(c, h):
  """A node of edges that are affine maps of y, or pools / copies of states at stride 1 or 2."""
  ho = (h - 1) // 2 + 1
  keys = jax.random.split(jax.random.key(11), 8)
  states = _candidates(2, (2, h, h, c), 12) + _candidates(2, (2, ho, ho, c), 13)  # cell inputs, nodes
  y0, y1 = (jax.random.normal(k, (2, ho, ho, c)) for k in keys[:2])
  a0, b0, a1, b1 = (jax.random.normal(k, (c,)) for k in keys[2:6])
  f = jax.jit(lambda k, i, y0, y1: PK.node_sum(k, i, (y0, a0, b0), (y1, a1, b1), states))
  assert "nas_jax_pool_node_sum" in f.lower(jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.int32), y0, y1).compile().as_text()
  for kinds, idxs in [((0, 0), (0, 0)), ((1, 2), (0, 3)), ((3, 0), (2, 1)), ((2, 1), (1, 2)), ((0, 3), (0, 3)),
                      ((1, 1), (3, 2))]:
    k, i = jnp.asarray(kinds), jnp.asarray(idxs)
    want = PK.reference_node_sum(k, i, y0, a0, b0, y1, a1, b1, *states)
    np.testing.assert_allclose(np.asarray(f(k, i, y0, y1)), np.asarray(want), rtol=1e-5, atol=1e-5)
  # A pool edge's y is a placeholder that is never read.
  g = jax.jit(lambda: PK.node_sum(jnp.array([2, 3]), jnp.array([0, 2]), (PK.placeholder(y0.shape), a0, b0),
                                  (PK.placeholder(y0.shape), a1, b1), states))
  want = PK.reference_node_sum(jnp.array([2, 3]), jnp.array([0, 2]), y0, a0, b0, y1, a1, b1, *states)
  np.testing.assert_allclose(np.asarray(g()), np.asarray(want), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="maps to the node"):
    PK.node_sum(jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.int32), (y0, a0, b0), (y1, a1, b1),
                (jnp.zeros((2, ho - 1, ho - 1, c)),))
