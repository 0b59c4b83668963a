"""Data parallelism over every local device with ``jax.sharding``: one code path for 1 to N devices.

The step builders (the supernet train step ``networks.supernet.make_train_step``
and its batched evaluation, and the child network's steps in
``nas_jax.tasks.images.make_steps``, which ``train.train_child`` runs) jit
their step functions with ``data_parallel_jit``: over a ``Mesh`` of all
devices with one axis ``"data"``, the batch arguments are split along their
leading (batch) axis and everything else (parameters, optimizer state,
BatchNorm statistics, the architecture, keys, learning rates) is replicated;
outputs are replicated. The program is the single-device program: XLA's SPMD
partitioner inserts the all-reduces of the gradients, the loss and the
BatchNorm batch statistics, so the results equal the single-device ones up to
the order of float additions. The same code runs on 1 CPU, 8 TPU cores or
several GPUs; on one device ``data_parallel_jit`` is plain ``jax.jit``
(nothing changes, nothing is slower).

Architecture decisions (a strategy's ``ask``, sampling an architecture for a
supernet step, deriving or scoring) are made on the host, once, and reach
every device as the same replicated argument, so every device trains and
scores the same architecture.

A batch whose size the device count does not divide is replicated instead of
split (correct, not parallel; one extra compilation): a padded last
evaluation batch costs nothing, but choose training batch sizes divisible by
``jax.device_count()`` (64 on 8 TPU cores: 8 per core).

Multi-host (a TPU pod slice, several GPU machines): start the same program
in every process and call ``jax.distributed.initialize()`` (arguments from
the cluster's environment on Cloud TPU, SLURM and Kubernetes; else
``coordinator_address``, ``num_processes``, ``process_id``) before anything
else touches JAX. ``jax.devices()`` then lists every process's devices, and
``default_mesh()`` spans them all. Each process loads its own share of every
batch (e.g. ``dataset`` shards by ``jax.process_index()``) and hands it to
the step as a global array made by ``shard_batch`` (which calls
``jax.make_array_from_process_local_data``); host numpy arrays, as the
library's own loops pass, are only valid within one process. Every process
must draw the same architectures: they do, because the keys are functions of
the seed alone. Multi-host runs are documented here but not tested (no such
machine in CI).

``NAS_JAX_DEVICES=1`` (or ``k``) restricts the default mesh to the first
``k`` devices; CPU tests simulate devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before JAX is
imported).

Example:
    >>> mesh = default_mesh()
    >>> mesh.axis_names, mesh.size == jax.device_count()  # NAS_JAX_DEVICES unset
    (('data',), True)
    >>> def step(w, batch):
    ...   x, y = batch
    ...   loss = lambda w: jnp.mean((x @ w - y) ** 2)
    ...   return w - 0.1 * jax.grad(loss)(w), loss(w)
    >>> step = data_parallel_jit(step, batch_argnums=(1,))
    >>> w, loss = step(jnp.zeros(3), (np.ones((8, 3), np.float32), np.ones(8, np.float32)))
    >>> float(loss)  # the mean over the whole batch, however many devices hold it
    1.0
"""
from __future__ import annotations

import functools
import inspect
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: The mesh axis the batch is split along.
AXIS = "data"
#: Environment variable: use only the first k devices in ``default_mesh``.
DEVICES_VAR = "NAS_JAX_DEVICES"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis (``"data"``) mesh over ``devices`` (default: ``jax.devices()``)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("make_mesh: no devices; pass a non-empty list such as jax.devices()")
  return Mesh(np.asarray(devices, dtype=object), (AXIS,))


@functools.lru_cache(maxsize=None)
def _default_mesh(limit: int | None) -> Mesh:
  devices = jax.devices()
  return make_mesh(devices if limit is None else devices[:limit])


def default_mesh() -> Mesh:
  """The mesh over every device (the first ``$NAS_JAX_DEVICES`` when set)."""
  value = os.environ.get(DEVICES_VAR, "").strip()
  if value and (not value.isdigit() or int(value) < 1):
    raise ValueError(f"{DEVICES_VAR}={value!r} must be a positive number of devices")
  return _default_mesh(int(value) if value else None)


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole value (parameters, states, architectures, keys)."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """The leading axis split over the mesh's ``"data"`` axis."""
  return NamedSharding(mesh, PartitionSpec(AXIS))


def _divisible(tree: Any, n: int) -> bool:
  leaves = jax.tree.leaves(tree)
  return all(np.ndim(a) >= 1 and np.shape(a)[0] % n == 0 for a in leaves)


def shard_batch(batch: Any, mesh: Mesh | None = None) -> Any:
  """Places a batch (a pytree, batch axis first) split over the mesh.

  Within one process ``batch`` is the whole batch. With several processes
  (``jax.distributed.initialize``) each passes its own share and gets the
  global array (``jax.make_array_from_process_local_data``).

  Raises:
    ValueError: a leaf whose leading axis the mesh's device count does not divide.
  """
  mesh = default_mesh() if mesh is None else mesh
  per_process = mesh.size // jax.process_count()
  if not _divisible(batch, per_process):
    shapes = [np.shape(a) for a in jax.tree.leaves(batch)]
    raise ValueError(f"shard_batch: batch shapes {shapes} do not split over {per_process} local "
                     "device(s); use a batch size divisible by the device count")
  sharding = batch_sharding(mesh)
  if jax.process_count() > 1:
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), batch)
  return jax.device_put(batch, sharding)


def replicate(tree: Any, mesh: Mesh | None = None) -> Any:
  """Places ``tree`` on every device of the mesh."""
  return jax.device_put(tree, replicated(default_mesh() if mesh is None else mesh))


def data_parallel_jit(fn: Callable, *, batch_argnums: Sequence[int], donate_argnums: Sequence[int] = (),
                      mesh: Mesh | None = None) -> Callable:
  """``jax.jit(fn)``, data-parallel over ``mesh`` (default ``default_mesh()``).

  Args:
    fn: a step function of positional arguments only.
    batch_argnums: the arguments holding the batch (pytrees whose leaves all
      have the batch axis first); they are split over the devices.
    donate_argnums: as for ``jax.jit``.
    mesh: the device mesh; on a one-device mesh the result is ``jax.jit(fn,
      donate_argnums=...)`` itself.

  Returns:
    A function with ``fn``'s signature and outputs (replicated on every
    device). It compiles once per batch layout: split, or replicated when
    the device count does not divide the batch size (see the module doc).
  """
  mesh = default_mesh() if mesh is None else mesh
  donate = tuple(donate_argnums)
  params = inspect.signature(fn).parameters.values()
  nargs = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
  batch_argnums = tuple(batch_argnums)
  if not batch_argnums or any(not 0 <= i < nargs for i in batch_argnums):
    raise ValueError(f"data_parallel_jit: batch_argnums={batch_argnums} must name some of the "
                     f"{nargs} positional arguments of {getattr(fn, '__name__', fn)}")
  if mesh.size == 1:
    return jax.jit(fn, donate_argnums=donate)
  rep, split = replicated(mesh), batch_sharding(mesh)

  def jit_with(batch_spec):
    shardings = tuple(batch_spec if i in batch_argnums else rep for i in range(nargs))
    return jax.jit(fn, in_shardings=shardings, out_shardings=rep, donate_argnums=donate)

  jitted = {"split": jit_with(split), "replicated": jit_with(rep)}

  def place(arg, sharding):
    # A device array placed otherwise (a state fresh from ``init`` on device 0) is moved
    # here once: handed to the jitted function as it is, it would cost a second compilation.
    if any(isinstance(a, jax.Array) and a.sharding != sharding for a in jax.tree.leaves(arg)):
      return jax.device_put(arg, sharding)
    return arg

  @functools.wraps(fn)
  def step(*args):
    layout = "split" if all(_divisible(args[i], mesh.size) for i in batch_argnums) else "replicated"
    batch_spec = split if layout == "split" else rep
    args = tuple(place(a, batch_spec if i in batch_argnums else rep) for i, a in enumerate(args))
    return jitted[layout](*args)

  step._cache_size = lambda: sum(j._cache_size() for j in jitted.values())  # pylint: disable=protected-access
  step.lower = jitted["split"].lower
  step.mesh = mesh
  return step
