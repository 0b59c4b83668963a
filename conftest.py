"""Settings for the docstring examples of ``nas_jax/`` (run by ``python -m pytest``).

``setup.cfg`` adds ``nas_jax`` to the test paths with ``--doctest-modules``
and the flags ``NORMALIZE_WHITESPACE ELLIPSIS NUMBER`` (``NUMBER``: a float in
the expected output is matched to the digits written). Here every example
gets ``jax``, ``jnp`` and ``np`` without importing them, and runs in a fresh
temporary directory, so an example that writes files leaves nothing in the
repository.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Examples not run, each with the reason. Keep it short.
SKIP = {
}


@pytest.fixture(autouse=True)
def _doctest_setup(request, doctest_namespace, tmp_path, monkeypatch):
  if not isinstance(request.node, pytest.DoctestItem):
    yield
    return
  reason = SKIP.get(request.node.name)
  if reason:
    pytest.skip(reason)
  doctest_namespace.update(jax=jax, jnp=jnp, np=np)
  monkeypatch.chdir(tmp_path)
  yield
