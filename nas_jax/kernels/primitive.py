"""Shared plumbing of the kernel primitives: eager evaluation and lowering.

A kernel primitive lowers to its XLA FFI target on CPU where
``build.available()``, and to a pure-XLA function of the same maths elsewhere.

Example:
    >>> prim = Primitive("my_op")
    >>> define(prim, "my_op_target", abstract_fn, xla_fn, int_attrs=("stride",))
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from nas_jax.kernels import build


def define(prim: Primitive, target: str, abstract_fn: Callable, xla_fn: Callable,
           int_attrs: tuple[str, ...] = ()) -> None:
  """Gives ``prim`` its abstract evaluation, eager impl and lowerings.

  Args:
    prim: the primitive (its derivative and batching rules are set by the caller).
    target: the FFI target name (``build.TARGETS``).
    abstract_fn: ``(*avals, **params) -> ShapedArray``.
    xla_fn: ``(*arrays, **params) -> array``, the portable lowering.
    int_attrs: params passed to the FFI handler as int64 attributes (the
      others only shape the output).
  """
  def ffi_fn(*args, **params):
    aval = abstract_fn(*(jax.core.ShapedArray(a.shape, a.dtype) for a in args), **params)
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(aval.shape, aval.dtype))
    return call(*args, **{name: np.int64(params[name]) for name in int_attrs})

  _register(prim, abstract_fn, ffi_fn, xla_fn, multiple_results=False)


def _register(prim: Primitive, abstract_fn: Callable, ffi_fn: Callable, xla_fn: Callable,
              multiple_results: bool) -> None:
  """Abstract evaluation, eager impl, and the lowerings: ``ffi_fn`` on CPU with the kernels, else ``xla_fn``."""
  prim.def_abstract_eval(abstract_fn)
  # Outside jit a primitive runs as its own small jitted program.
  prim.def_impl(lambda *args, **params: jax.jit(functools.partial(prim.bind, **params))(*args))
  portable = mlir.lower_fun(xla_fn, multiple_results=multiple_results)
  kernel = mlir.lower_fun(ffi_fn, multiple_results=multiple_results)

  def cpu_rule(ctx, *args, **params):
    return (kernel if build.available() else portable)(ctx, *args, **params)

  mlir.register_lowering(prim, portable)
  mlir.register_lowering(prim, cpu_rule, platform="cpu")


def define_with_reference(prim: Primitive, abstract_fn: Callable, ffi_fn: Callable, reference_fn: Callable,
                          multiple_results: bool) -> None:
  """Gives ``prim`` its abstract evaluation, eager impl, lowerings and batching.

  Args:
    prim: the primitive.
    abstract_fn: ``(*avals, **params) -> ShapedArray`` (a tuple of them with
      ``multiple_results``).
    ffi_fn: ``(*arrays, **params) -> array(s)`` calling the FFI kernel (the
      CPU lowering where ``build.available()``).
    reference_fn: the same maths in XLA ops: the lowering elsewhere, and
      ``jax.vmap`` of it is the batching rule.
    multiple_results: whether the primitive returns a tuple.
  """
  _register(prim, abstract_fn, ffi_fn, reference_fn, multiple_results)

  def batched(args, dims, **params):
    out = jax.vmap(functools.partial(reference_fn, **params), in_axes=tuple(dims))(*args)
    return out, ((0,) * len(out) if multiple_results else 0)

  batching.primitive_batchers[prim] = batched


def jvp_by_reference(prim: Primitive, reference_fn: Callable) -> None:
  """Differentiates ``prim`` in forward mode through ``reference_fn`` (all operands floating)."""

  def rule(primals, tangents, **params):
    tangents = [ad.instantiate_zeros(t) for t in tangents]
    return jax.jvp(functools.partial(reference_fn, **params), tuple(primals), tuple(tangents))

  ad.primitive_jvps[prim] = rule
