"""Tests of nas_jax.cost: MAC and parameter counts checked by hand."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import cost, ops
from nas_jax.networks import nasnet as N


def test_plain_conv_layer_by_hand():
  conv = nn.Conv(8, (3, 3), padding="SAME")
  x = jnp.zeros((1, 10, 10, 3))
  variables = jax.eval_shape(lambda: conv.init(jax.random.key(0), x))
  # 10*10 outputs x 8 channels x (3*3*3) MACs each; params 3*3*3*8 + 8 bias.
  assert cost.function_macs(conv.apply, variables, x) == 10 * 10 * 8 * 27
  assert cost.count_params(variables["params"]) == 3 * 3 * 3 * 8 + 8


def test_strided_conv_dense_and_depthwise_by_hand():
  w = jnp.zeros((3, 3, 4, 6))
  x = jnp.zeros((1, 8, 8, 4))
  assert cost.function_macs(lambda x, w: ops.conv2d(x, w, stride=2), x, w) == 4 * 4 * 6 * 36
  assert cost.function_macs(lambda a, b: a @ b, jnp.zeros((2, 5)), jnp.zeros((5, 7))) == 2 * 5 * 7
  dw = jnp.zeros((5, 5, 4))
  # depthwise counts k*k per output element whatever the run-time implementation
  for impl in ("auto", "shift", "grouped"):
    with ops.implementation(depthwise=impl):
      assert cost.function_macs(lambda x, w: ops.depthwise_conv(x, w), x, dw) == 8 * 8 * 4 * 25
  assert ops.current_implementation() == ops.Implementation()  # function_macs restored the choice


class _Space:
  name = "nasnet"

  def validate(self, arch):
    return N.check_arch(arch)


def test_nasnet_cost_grows_with_convs():
  base = np.zeros((2, 5, 4), np.int32)
  base[:, :, 1] = base[:, :, 3] = 4  # identities only
  pools = base.copy()
  pools[:, :, 1] = pools[:, :, 3] = 2
  convs = base.copy()
  convs[:, :, 1] = convs[:, :, 3] = 0
  cfg = dict(num_classes=10, init_channels=4, layers=3, input_shape=(8, 8, 1))
  c_id, c_pool, c_conv = (cost.count_cost(_Space(), a, **cfg) for a in (base, pools, convs))
  assert c_pool == c_id or c_pool["flops"] < c_id["flops"]  # strided identity uses factorized reduce
  assert c_conv["flops"] > c_id["flops"] and c_conv["params"] > c_id["params"]
  assert c_id["params"] > 0
  with pytest.raises(ValueError, match="input_shape"):
    cost.count_cost(_Space(), base, input_shape=(8, 8), **{k: v for k, v in cfg.items() if k != "input_shape"})
