"""FLOPs and parameter counts of architectures of any space.

Convention: ``flops`` counts the **multiply-accumulates** (MACs, one multiply
plus one add = 1) of the convolutions and matrix products of the child
network's inference forward pass on **one image** (batch 1, eval-mode BN);
batch norm, activations, pooling and element-wise additions are not counted
(the usual "FLOPs" of NAS papers, e.g. DARTS's "multi-adds"). ``params``
counts every trainable parameter (conv/dense weights and biases, BN scale and
bias; not the BN running statistics).

How: the child network of the space (``nas_jax.networks.build_child``) is
traced abstractly (``jax.make_jaxpr``/``jax.eval_shape``: nothing runs) and
every ``conv_general_dilated`` and ``dot_general`` of the jaxpr is counted,
recursing into nested jaxprs (jit, custom_vjp, remat; ``scan`` bodies times
their length; the largest branch of a ``cond``). Depthwise convolutions are
traced with the grouped implementation (``ops.implementation``, for this
trace only) so that they count ``k*k*C*H'*W'`` whatever implementation
``nas_jax.ops`` uses at run time. So the model works
for every space whose network module provides ``build_child``.

Example:
    >>> count_cost(space, arch, num_classes=10, init_channels=16, layers=8,
    ...            input_shape=(32, 32, 3))
    {'flops': ..., 'params': ...}
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax import ops


def conv_macs(eqn: Any) -> int:
  """MACs of one ``conv_general_dilated`` equation."""
  lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
  out = eqn.outvars[0].aval
  dn = eqn.params["dimension_numbers"]
  groups = eqn.params.get("feature_group_count", 1) * eqn.params.get("batch_group_count", 1)
  rhs_spec = dn.rhs_spec  # (out_feature, in_feature, *spatial)
  kernel = math.prod(rhs.shape[d] for d in rhs_spec[2:])
  c_in_per_group = rhs.shape[rhs_spec[1]]
  del lhs, groups
  # Every output element needs kernel * (C_in / groups) MACs.
  return int(math.prod(out.shape) * kernel * c_in_per_group)


def dot_macs(eqn: Any) -> int:
  """MACs of one ``dot_general`` equation."""
  (lc, _), (lb, _) = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval
  out = eqn.outvars[0].aval
  contract = math.prod(lhs.shape[d] for d in lc)
  del lb
  return int(math.prod(out.shape) * contract)


def _sub_jaxprs(value: Any):
  if isinstance(value, jax.extend.core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax.extend.core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def jaxpr_macs(jaxpr: Any) -> int:
  """MACs of convs and dots in a (closed) jaxpr, recursively."""
  if isinstance(jaxpr, jax.extend.core.ClosedJaxpr):
    jaxpr = jaxpr.jaxpr
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
      total += conv_macs(eqn)
    elif name == "dot_general":
      total += dot_macs(eqn)
    elif name == "cond":
      total += max((jaxpr_macs(b) for b in eqn.params["branches"]), default=0)
    else:
      sub = [j for v in eqn.params.values() for j in _sub_jaxprs(v)]
      if name in ("custom_vjp_call", "custom_vjp_call_jaxpr", "custom_jvp_call"):
        sub = sub[:1]  # the primal function only, not the fwd/bwd rules
      inner = sum(jaxpr_macs(j) for j in sub)
      if name == "scan":
        inner *= int(eqn.params["length"])
      total += inner
  return total


def function_macs(fn: Callable, *args: Any) -> int:
  """MACs of ``fn(*args)`` (args may be ``jax.ShapeDtypeStruct``); nothing runs.

  Depthwise convolutions are traced with ``feature_group_count`` and 1x1
  convolutions as XLA dots (not as the CPU kernels' opaque primitives), so
  they count as ``k*k`` and ``C_in`` MACs per output element.

  Example:
      >>> function_macs(lambda x, w: x @ w, jnp.zeros((2, 3)), jnp.zeros((3, 4)))
      24
  """
  with ops.implementation(depthwise="grouped", pointwise="einsum"):
    return jaxpr_macs(jax.make_jaxpr(fn)(*args))


def count_params(params: Any) -> int:
  """Number of scalars in a parameter pytree."""
  return int(sum(np.prod(np.shape(leaf)) for leaf in jax.tree.leaves(params)))


def count_cost(space: Any, arch: Any, *, input_shape: tuple[int, int, int] = (32, 32, 3),
               **network_config: Any) -> dict[str, int]:
  """FLOPs (MACs per image) and parameter count of ``arch``'s child network.

  Args:
    space: a ``SearchSpace`` (its ``name`` selects the network family).
    arch: an architecture of that space.
    input_shape: ``(H, W, C)`` of one image.
    **network_config: ``build_child`` settings (``num_classes``,
      ``init_channels``, ``layers``, ...). ``auxiliary`` is ignored (the
      auxiliary head is a training device, not part of the final network).

  Returns:
    ``{"flops": int, "params": int}`` (see the module docstring).
  """
  from nas_jax.networks import build_child  # pylint: disable=import-outside-toplevel
  if len(tuple(input_shape)) != 3:
    raise ValueError(f"input_shape must be (H, W, C), got {input_shape}")
  network_config = dict(network_config)
  network_config["auxiliary"] = False
  model = build_child(space, arch, **network_config)
  x = jax.ShapeDtypeStruct((1,) + tuple(int(v) for v in input_shape), jnp.float32)
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros(x.shape), train=False))
  flops = function_macs(lambda v, x: model.apply(v, x, train=False), variables, x)
  return {"flops": int(flops), "params": count_params(variables["params"])}
