"""Hand-written CPU kernels for the ops where XLA:CPU is slow, as JAX primitives.

``build`` compiles ``depthwise.cc`` (XLA FFI handlers) once per machine and
registers it; ``depthwise`` wraps it as differentiable, batchable primitives
that fall back to XLA's own convolution where the kernels are not built or
the backend is not the CPU. ``ops.depthwise_conv`` uses them through its
"kernel" implementation.
"""
