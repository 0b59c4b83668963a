"""Atomic save/restore of a whole search state with orbax-checkpoint.

The experiment loop (``nas_jax.experiment``) checkpoints a dict of pytrees
(strategy state, evaluator state such as supernet parameters and optimizer
state, RNG key) together with a small JSON record (round counter, number of
history lines, wall-clock totals, the experiment fingerprint).

Any pytree whose leaves are arrays (numpy or jax, typed PRNG keys included),
numpy scalars or Python ``bool`` / ``int`` / ``float`` / ``str`` round-trips
bit for bit. Restoring needs a *template*: a pytree of the same structure (e.g.
a fresh ``strategy.init(key)``), so custom nodes (NamedTuples, dataclasses) come
back as themselves and leaves keep their types.

Atomicity: orbax writes each step into a temporary directory and renames it
when complete; a process killed mid-save leaves only a temporary directory that
the next ``CheckpointManager`` removes, so ``latest_step`` is always a complete
checkpoint. The last ``keep`` checkpoints are kept. A checkpoint that cannot be
read, or that was written by another experiment (different fingerprint or state
structure), raises ``ValueError`` and nothing is deleted.

Example:
    >>> ckpt = SearchCheckpointer("run/checkpoints", fingerprint="abc")
    >>> print(ckpt.restore({"strategy": {"key": jax.random.key(0), "n": 0}}))  # nothing yet
    None
    >>> state = {"key": jax.random.key(1), "pool": np.arange(3), "n": 7}
    >>> ckpt.save(1, {"strategy": state}, {"round": 1})
    >>> trees, meta = ckpt.restore({"strategy": {"key": jax.random.key(0), "pool": np.zeros(3, int), "n": 0}})
    >>> trees["strategy"]["pool"], trees["strategy"]["n"], meta
    (array([0, 1, 2]), 7, {'round': 1})
    >>> bool((jax.random.key_data(trees["strategy"]["key"]) == jax.random.key_data(state["key"])).all())
    True
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)

_META_FORMAT = 1


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes JSON atomically (a temporary file, fsync, then a rename over ``path``).

  Example:
    >>> write_json("report.json", {"acc": 97.5})
    >>> json.loads(pathlib.Path("report.json").read_text())
    {'acc': 97.5}
  """
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def encode_tree(tree: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Splits a pytree into orbax-savable arrays and a JSON spec.

  Args:
    tree: any pytree with array / scalar / str leaves.

  Returns:
    ``(arrays, spec)``: ``arrays`` maps ``"leaf_<i>"`` to non-empty numpy
    arrays; ``spec`` is JSON-serialisable (tree structure string and, per leaf,
    its kind, dtype, shape and, for Python scalars, the value).

  Raises:
    ValueError: a leaf of an unsupported type.

  Example:
    >>> arrays, spec = encode_tree({"a": np.arange(3), "n": 4})
    >>> arrays
    {'leaf_0': array([0, 1, 2])}
    >>> [leaf["kind"] for leaf in spec["leaves"]]
    ['numpy', 'int']
  """
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  arrays: dict[str, np.ndarray] = {}
  leaf_specs = []
  for i, leaf in enumerate(leaves):
    name = f"leaf_{i}"
    if isinstance(leaf, (bool, int, float, str)) and not isinstance(leaf, np.generic):
      leaf_specs.append({"kind": type(leaf).__name__, "value": leaf})
      continue
    if _is_key(leaf):
      kind, value = "key", np.asarray(jax.random.key_data(leaf))
    elif isinstance(leaf, jax.Array):
      kind, value = "jax", np.asarray(leaf)
    elif isinstance(leaf, np.ndarray):
      kind, value = "numpy", leaf
    elif isinstance(leaf, np.generic):
      kind, value = "scalar", np.asarray(leaf)
    else:
      raise ValueError(
          f"cannot checkpoint a leaf of type {type(leaf).__name__} at position {i}; "
          "state pytrees may hold arrays, numpy scalars, bool, int, float or str")
    leaf_specs.append({"kind": kind, "dtype": value.dtype.name, "shape": list(value.shape)})
    if value.size:
      # flat: orbax does not round-trip 0-d numpy arrays; the spec keeps the shape.
      arrays[name] = np.ascontiguousarray(value).reshape(-1)
  return arrays, {"treedef": str(treedef), "leaves": leaf_specs}


def decode_tree(template: Any, arrays: dict[str, np.ndarray], spec: dict[str, Any]) -> Any:
  """Inverse of ``encode_tree``, shaped like ``template``.

  Args:
    template: a pytree of the same structure as the saved one.
    arrays: the saved arrays (``"leaf_<i>"``).
    spec: the saved spec.

  Returns:
    The saved pytree with the template's node types and leaf types.

  Raises:
    ValueError: the template's structure or a leaf's kind, dtype or shape
      differs from the saved one.

  Example:
    >>> tree = {"a": np.arange(3), "n": 4}
    >>> decode_tree({"a": np.zeros(3, int), "n": 0}, *encode_tree(tree))
    {'a': array([0, 1, 2]), 'n': 4}
  """
  leaves, treedef = jax.tree_util.tree_flatten(template)
  if str(treedef) != spec["treedef"] or len(leaves) != len(spec["leaves"]):
    raise ValueError("saved state has a different structure than this experiment's "
                     f"(saved {spec['treedef'][:200]}, expected {str(treedef)[:200]})")
  out = []
  for i, (leaf, ls) in enumerate(zip(leaves, spec["leaves"])):
    kind = ls["kind"]
    if "value" in ls:
      out.append(ls["value"])
      continue
    value = arrays.get(f"leaf_{i}")
    if value is None:
      value = np.zeros(ls["shape"], dtype=np.dtype(ls["dtype"]))
    value = np.asarray(value)
    if value.size != int(np.prod(ls["shape"])) or value.dtype.name != ls["dtype"]:
      raise ValueError(f"saved leaf {i} is {value.dtype.name}{list(value.shape)}, "
                       f"its spec says {ls['dtype']}{ls['shape']}")
    value = value.reshape(ls["shape"])
    if kind == "key":
      if not _is_key(leaf):
        raise ValueError(f"saved leaf {i} is a PRNG key but the template's is not")
      out.append(jax.random.wrap_key_data(jnp.asarray(value), impl=jax.random.key_impl(leaf)))
    elif kind == "jax":
      out.append(jnp.asarray(value))
    elif kind == "numpy":
      out.append(value)
    elif kind == "scalar":
      out.append(value[()])
    else:
      raise ValueError(f"saved leaf {i} has unknown kind {kind!r}")
  return jax.tree_util.tree_unflatten(treedef, out)


class SearchCheckpointer:
  """Numbered, atomic checkpoints of named pytrees plus a JSON record.

  Args:
    directory: where the step directories live (created if missing).
    fingerprint: identifies the experiment; a checkpoint carrying another
      fingerprint is refused on restore.
    keep: how many of the latest checkpoints to keep (>= 1).

  Example:
    >>> ckpt = SearchCheckpointer("workdir/checkpoints", fingerprint="fp", keep=2)
    >>> for step in (1, 2, 3):
    ...   ckpt.save(step, {"strategy": {"round": step}}, {"round": step})
    >>> ckpt.steps()  # the last two
    [2, 3]
    >>> ckpt.restore({"strategy": {"round": 0}}, step=2)
    ({'strategy': {'round': 2}}, {'round': 2})
  """

  def __init__(self, directory: str | os.PathLike, fingerprint: str, keep: int = 2):
    if keep < 1:
      raise ValueError(f"checkpoint keep must be >= 1, got {keep}")
    self.directory = pathlib.Path(directory).resolve()
    self.fingerprint = fingerprint
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=False, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    """Complete checkpoint steps on disk, ascending."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest complete step, or None."""
    steps = self.steps()
    return steps[-1] if steps else None

  def save(self, step: int, trees: dict[str, Any], meta: dict[str, Any]) -> None:
    """Writes checkpoint ``step`` atomically (returns when it is on disk).

    Checkpoints numbered ``step`` or higher are deleted first: they belong to
    a future the run abandoned when it resumed from an older checkpoint (a
    damaged history), and they would shadow this one.

    Args:
      step: the checkpoint's number (normally larger than every existing one).
      trees: name -> pytree.
      meta: JSON-serialisable record (round counter, history length, ...).
    """
    arrays, specs = {}, {}
    for name, tree in trees.items():
      arrays[name], specs[name] = encode_tree(tree)
    record = {"format": _META_FORMAT, "fingerprint": self.fingerprint, "specs": specs,
              "meta": meta}
    json.dumps(record)  # fail before writing anything if not serialisable
    for stale in [s for s in self.steps() if s >= step]:
      self._manager.delete(stale)
    # orbax refuses empty trees; a dummy leaf keeps every item present.
    items = {f"tree_{name}": ocp.args.StandardSave({"_": np.zeros(1, np.int8), **arr})
             for name, arr in arrays.items()}
    self._manager.save(step, args=ocp.args.Composite(record=ocp.args.JsonSave(record), **items),
                       force=True)
    self._manager.wait_until_finished()

  def restore(self, templates: dict[str, Any],
              step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Restores the latest (or the given) step into the templates' shapes.

    Args:
      templates: name -> pytree of the same structure as saved.
      step: which step; default the latest.

    Returns:
      ``(trees, meta)`` or None when there is no checkpoint.

    Raises:
      ValueError: unreadable checkpoint, another experiment's checkpoint, or a
        state of another structure. Nothing on disk is changed.
    """
    steps = self.steps()
    if not steps:
      return None
    step = steps[-1] if step is None else step
    path = self.directory / str(step)
    earlier = [s for s in steps if s < step]
    hint = (f"delete {path} to resume from checkpoint {earlier[-1]}" if earlier
            else "use a fresh --workdir")
    try:
      record = self._manager.restore(
          step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))["record"]
      if not isinstance(record, dict) or "fingerprint" not in record:
        raise ValueError("missing record")
    except Exception as e:  # orbax raises many types for damaged files
      raise ValueError(f"checkpoint {path} is unreadable ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else ''}); {hint}") from None
    if record.get("fingerprint") != self.fingerprint:
      raise ValueError(f"checkpoint {path} belongs to another experiment (config fingerprint "
                       f"{record.get('fingerprint')!r}, this run's is {self.fingerprint!r}); "
                       "use a fresh --workdir")
    if set(record["specs"]) != set(templates):
      raise ValueError(f"checkpoint {path} holds {sorted(record['specs'])}, "
                       f"expected {sorted(templates)}; use a fresh --workdir")
    try:
      targets = {}
      for name, spec in record["specs"].items():
        target = {"_": np.zeros(1, np.int8)}
        for i, ls in enumerate(spec["leaves"]):
          if "value" not in ls and int(np.prod(ls["shape"])) > 0:
            target[f"leaf_{i}"] = np.zeros(int(np.prod(ls["shape"])), np.dtype(ls["dtype"]))
        targets[f"tree_{name}"] = ocp.args.StandardRestore(target)
      raw = self._manager.restore(step, args=ocp.args.Composite(**targets))
      trees = {}
      for name, spec in record["specs"].items():
        arrays = {k: np.asarray(v) for k, v in raw[f"tree_{name}"].items() if k != "_"}
        trees[name] = decode_tree(templates[name], arrays, spec)
    except Exception as e:
      raise ValueError(f"checkpoint {path} is unreadable or does not match this experiment "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                       f"{hint}") from None
    return trees, record["meta"]
