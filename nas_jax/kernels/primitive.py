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
from jax.interpreters import mlir

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
  prim.def_abstract_eval(abstract_fn)
  # Outside jit a primitive runs as its own small jitted program.
  prim.def_impl(lambda *args, **params: jax.jit(functools.partial(prim.bind, **params))(*args))

  def ffi_fn(*args, **params):
    aval = abstract_fn(*(jax.core.ShapedArray(a.shape, a.dtype) for a in args), **params)
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(aval.shape, aval.dtype))
    return call(*args, **{name: np.int64(params[name]) for name in int_attrs})

  portable = mlir.lower_fun(xla_fn, multiple_results=False)
  kernel = mlir.lower_fun(ffi_fn, multiple_results=False)

  def cpu_rule(ctx, *args, **params):
    return (kernel if build.available() else portable)(ctx, *args, **params)

  mlir.register_lowering(prim, portable)
  mlir.register_lowering(prim, cpu_rule, platform="cpu")
