"""Hand-written CPU kernels for the ops where XLA:CPU is slow, as JAX primitives.

``build`` compiles ``depthwise.cc`` and ``pointwise.cc`` (XLA FFI handlers)
once per machine and registers them; ``depthwise`` and ``pointwise`` wrap them
as differentiable, batchable primitives (``primitive`` holds their shared
lowering) that fall back to XLA's own ops where the kernels are not built or
the backend is not the CPU. ``ops.depthwise_conv`` and ``ops.pointwise_conv``
use them through their "kernel" implementations.
"""
