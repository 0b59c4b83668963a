"""Test-wide settings.

XLA:CPU (jaxlib 0.10) takes seconds to compile ``jax.random.normal`` /
``uniform`` for some multi-dimensional shapes: measured on a 2-core CPU, a
first draw of shape ``(2, 7, 8, 12)`` took 12.7 s, ``(2, 8, 8, 16)`` 2.6 s,
the same values drawn flat 0.4-0.5 s. With the partitionable threefry (JAX's
default) a draw of shape S is the flat draw reshaped, bit for bit (checked for
both), so the tests draw flat and reshape: the same numbers without that
compile. ``pytest -n 2 tests/test_kernels.py``: 158 s -> 98 s.
"""
import math

import jax
import pytest

_normal, _uniform = jax.random.normal, jax.random.uniform


def _flat(draw):
  def wrapped(key, shape=(), *args, **kwargs):
    shape = tuple(shape) if not isinstance(shape, int) else (shape,)
    if len(shape) < 2 or not jax.config.jax_threefry_partitionable:
      return draw(key, shape, *args, **kwargs)
    return draw(key, (math.prod(shape),), *args, **kwargs).reshape(shape)
  return wrapped


@pytest.fixture(autouse=True, scope="session")
def _flat_random_draws():
  jax.random.normal, jax.random.uniform = _flat(_normal), _flat(_uniform)
  yield
  jax.random.normal, jax.random.uniform = _normal, _uniform


@pytest.fixture(autouse=True, scope="session")
def _shared_compile_cache(tmp_path_factory):
  """One persistent XLA compilation cache for the whole run (both xdist workers).

  Many tests build the same tiny networks (a new closure each time, so the
  in-memory jit cache misses); the on-disk cache, keyed by the program, serves
  the repeats. ``$NAS_JAX_TEST_COMPILE_CACHE=0`` turns it off.
  """
  import os  # pylint: disable=import-outside-toplevel
  if os.environ.get("NAS_JAX_TEST_COMPILE_CACHE", "1") == "0":
    yield
    return
  root = tmp_path_factory.getbasetemp()
  root = root.parent if root.name.startswith("popen-gw") else root  # shared by the xdist workers
  old = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", str(root / "xla-cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  yield
  jax.config.update("jax_compilation_cache_dir", old[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
