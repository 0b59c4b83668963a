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
