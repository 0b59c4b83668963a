"""Data parallelism (nas_jax.parallel): 4 simulated CPU devices give the 1-device results.

XLA's host-device count is read when JAX starts, so the 4-device runs happen
in a subprocess started with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``;
inside it the same steps run on a 1-device mesh and on the 4-device mesh.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from nas_jax import parallel

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Runs the generic supernet step of ``networks.supernet`` (the one every space's family uses)
# on a 1-device mesh and on the 4-device mesh. APPLY is a toy supernet: a dense layer, batch
# statistics as BatchNorm's, a traced switch over activations and a traced choice of output
# map (``arch``), drop-path-like random masks (``rng``); SETUP builds the real nb201 one.
SUPERNET = """
import functools, json
import jax, jax.numpy as jnp, numpy as np
from jax import lax
from nas_jax import parallel
from nas_jax.networks import supernet as supernet_lib

assert jax.device_count() == 4, jax.devices()
compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: compiles.append(event)
    if event == "/jax/core/compile/backend_compile_duration" else None)
rng = np.random.default_rng(0)
SETUP
x = rng.standard_normal((5, 16) + SHAPE).astype(np.float32)   # 5 batches of 16
y = rng.integers(0, 10, (5, 16)).astype(np.int32)
archs = SAMPLE(5)                                               # drawn once, on the host
candidates = SAMPLE(8)
xv = rng.standard_normal((32,) + SHAPE).astype(np.float32)
yv = rng.integers(0, 10, 32).astype(np.int32)
out = {}
for name, mesh in (("one", parallel.make_mesh(jax.devices()[:1])), ("four", parallel.make_mesh())):
  tx = supernet_lib.default_optimizer(0.1)
  state = supernet_lib.init_train_state(*jax.tree.map(jnp.array, (params, stats)), tx)  # copies: donated
  step = supernet_lib.make_train_step(apply, tx, mesh=mesh, drop_path=0.2)
  losses, recompiles = [], 0
  for i in range(5):
    batch, key = (x[i], y[i]), jax.random.key(i)
    n0 = len(compiles)
    state, m = step(state, archs[i], batch, key)
    recompiles += (len(compiles) - n0) if i else 0  # steps after the first compile nothing
    losses.append(float(m["loss"]))
  acc, loss = supernet_lib.make_eval_archs(apply, arch_rank=archs.ndim - 1, mesh=mesh)(
      state["params"], state["batch_stats"], candidates, xv, yv)
  out[name] = {"losses": losses, "acc": np.asarray(acc).tolist(), "eval_loss": np.asarray(loss).tolist(),
               "derived": candidates[int(np.argmin(np.asarray(loss)))].tolist(),
               "params": [np.asarray(p).tolist() for p in jax.tree.leaves(state["params"])][:2],
               "param_sum": float(sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(state["params"]))),
               "param_devices": min(len(p.sharding.device_set) for p in jax.tree.leaves(state["params"])),
               "metric_devices": len(m["loss"].sharding.device_set),
               "recompiles": recompiles}
print("RESULT" + json.dumps(out))
"""

TOY = """
SHAPE = (4, 4, 1)
params = {"w1": jnp.asarray(rng.standard_normal((16, 32)) * 0.3, jnp.float32),
          "w2": jnp.asarray(rng.standard_normal((3, 32, 10)) * 0.3, jnp.float32)}
stats = {"mean": jnp.zeros(32), "var": jnp.ones(32)}
SAMPLE = lambda n: np.stack([rng.integers(0, 3, n), rng.integers(0, 3, n)], 1).astype(np.int32)

def apply(params, batch_stats, arch, x, train, rng=None, drop_prob=0.0):
  h = x.reshape(len(x), -1) @ params["w1"]
  mean, var = (h.mean(0), h.var(0)) if train else (batch_stats["mean"], batch_stats["var"])
  h = lax.switch(arch[0], [jax.nn.relu, jnp.tanh, jax.nn.gelu], (h - mean) / jnp.sqrt(var + 1e-5))
  if rng is not None:  # a drop-path-like mask per example, drawn from the step's key
    h = h * jax.random.bernoulli(rng, 1 - drop_prob, (len(x), 1)) / (1 - drop_prob)
  new = {"mean": 0.9 * batch_stats["mean"] + 0.1 * mean, "var": 0.9 * batch_stats["var"] + 0.1 * var}
  return h @ params["w2"][arch[1]], new
"""

NB201 = """
from nas_jax.networks.nb201 import supernet as nb201
SHAPE = (8, 8, 1)
cfg = nb201.SupernetConfig(num_classes=10, init_channels=4, layers=1)
params, stats = nb201.init_supernet(jax.random.key(0), cfg, SHAPE)
apply = functools.partial(nb201.supernet_apply, config=cfg)
SAMPLE = lambda n: rng.integers(0, 5, (n, 6)).astype(np.int32)
"""

# train_child of a tiny flax child on 64 digits, 2 epochs, on 1 device and then on 4
# (NAS_JAX_DEVICES picks the default mesh; the compiled steps are cached per mesh).
CHILD = """
import json, os
import flax.linen as nn
import jax, jax.numpy as jnp
from nas_jax.data import load_dataset
from nas_jax.train import train_child

assert jax.device_count() == 4, jax.devices()

class Tiny(nn.Module):
  @nn.compact
  def __call__(self, x, *, train, drop_prob=0.0):
    h = nn.Conv(8, (3, 3))(x)
    h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
    return nn.Dense(10)(h.mean((1, 2))), None

data = load_dataset("digits", train_size=64, valid_size=32)
out = {}
for n in ("1", "4"):
  os.environ["NAS_JAX_DEVICES"] = n
  r = train_child(None, None, data, {"epochs": 2, "batch_size": 16, "eval_batch_size": 20, "augment": False},
                  jax.random.key(0), model=Tiny(), return_variables=True)
  out[n] = {"curve": [{k: e[k] for k in ("train_loss", "valid_loss", "valid_acc")} for e in r["curve"]],
            "test_acc": r["test_acc"],
            "devices": min(len(p.sharding.device_set) for p in jax.tree.leaves(r["variables"]["params"]))}
print("RESULT" + json.dumps(out))
"""


def run_on_4_devices(script: str) -> dict:
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
  env.pop("NAS_JAX_DEVICES", None)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  return json.loads(line[len("RESULT"):])


def check_supernet(out, rtol):
  one, four = out["one"], out["four"]
  assert four["metric_devices"] == 4 and one["metric_devices"] == 1  # really ran on 4 devices
  assert four["param_devices"] == 4  # parameters replicated on every device
  np.testing.assert_allclose(four["losses"], one["losses"], rtol=rtol, atol=1e-6)
  for p4, p1 in zip(four["params"], one["params"]):
    np.testing.assert_allclose(p4, p1, rtol=rtol, atol=1e-6)
  np.testing.assert_allclose(four["param_sum"], one["param_sum"], rtol=rtol)
  np.testing.assert_allclose(four["eval_loss"], one["eval_loss"], rtol=rtol, atol=1e-6)
  assert four["acc"] == one["acc"]
  assert four["derived"] == one["derived"]  # the same architecture is derived
  assert four["recompiles"] == one["recompiles"] == 0  # one compilation serves every architecture


def test_supernet_step_sharded_equals_one_device():
  check_supernet(run_on_4_devices(SUPERNET.replace("SETUP", TOY)), rtol=1e-5)


@pytest.mark.slow
def test_nb201_supernet_sharded_equals_one_device():
  check_supernet(run_on_4_devices(SUPERNET.replace("SETUP", NB201)), rtol=2e-5)


@pytest.mark.slow  # ~17 s of compiles; the sharded supernet step above is the fast check
def test_train_child_sharded_equals_one_device():
  out = run_on_4_devices(CHILD)
  one, four = out["1"], out["4"]
  assert one["devices"] == 1 and four["devices"] == 4
  for e1, e4 in zip(one["curve"], four["curve"], strict=True):
    np.testing.assert_allclose([e4[k] for k in sorted(e4)], [e1[k] for k in sorted(e1)], rtol=1e-5)
  assert four["test_acc"] == one["test_acc"]


def test_one_device_mesh_is_plain_jit():
  def f(a, b):
    return a + b
  step = parallel.data_parallel_jit(f, batch_argnums=(1,), mesh=parallel.make_mesh(jax.devices()[:1]))
  assert type(step) is type(jax.jit(f))  # pylint: disable=unidiomatic-typecheck
  with pytest.raises(ValueError, match="batch_argnums=.5,. must name"):
    parallel.data_parallel_jit(f, batch_argnums=(5,), mesh=parallel.make_mesh(jax.devices()[:1]))


def test_default_mesh_env(monkeypatch):
  monkeypatch.setenv(parallel.DEVICES_VAR, "1")
  assert parallel.default_mesh().size == 1
  monkeypatch.setenv(parallel.DEVICES_VAR, "zero")
  with pytest.raises(ValueError, match="NAS_JAX_DEVICES='zero' must be a positive number"):
    parallel.default_mesh()
