"""Hand-written CPU kernels for the ops where XLA:CPU is slow, as JAX primitives.

``build`` compiles ``depthwise.cc``, ``pointwise.cc``, ``fused.cc`` and
``pool.cc`` (XLA FFI handlers) once per machine and registers them;
``depthwise`` and ``pointwise`` wrap the first two as differentiable, batchable
primitives (``primitive`` holds their shared lowering) that fall back to XLA's
own ops where the kernels are not built or the backend is not the CPU.
``ops.depthwise_conv`` and ``ops.pointwise_conv`` use them through their
"kernel" implementations. ``fused`` is the forward pass of a separable-conv
half (ReLU, depthwise, 1x1, batch-norm statistics) in one pass over memory;
its derivatives run the unfused primitives, so only undifferentiated forwards
use it (``ops.implementation(fusion=...)``). ``pick`` holds forward kernels that read a
supernet cell's states in place (a fused half of ``states[idx]``, a 1x1
convolution of the masked node concatenation without building it, a node's sum
with its pools), used by ``networks.nasnet.supernet_eval_apply``.
"""
