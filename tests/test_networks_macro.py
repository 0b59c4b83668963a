"""The ``macro`` networks: supernet == child with shared weights, one compilation, costs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import cost, networks
from nas_jax.networks import macro
from nas_jax.networks.base import NetworkFamily, WeightSharing
from nas_jax.spaces.macro import MacroSpace

SPACE = MacroSpace(3)  # pools after layers 0 and 1 (ENAS pool_layers for L = 3)
CFG = macro.MacroConfig(num_classes=5, init_channels=4, num_layers=3)
ARCHS = [[0, 4, 1, 3, 0, 1],   # conv3, avg (+stem), sep5 (+layer0)
         [5, 1, 0, 2, 1, 1],   # max, sep3, conv5 (+stem +layer0)
         [2, 5, 1, 4, 1, 0]]


@pytest.fixture(scope="module")
def supernet():
  params, stats = macro.init_supernet(jax.random.key(0), CFG, (8, 8, 1))
  # non-trivial running statistics, so that eval mode checks them too
  stats = jax.tree.map(lambda v: v + 0.1 * jax.random.uniform(jax.random.key(1), v.shape), stats)
  x = jax.random.normal(jax.random.key(2), (6, 8, 8, 1))
  return params, stats, x


def test_family_registered():
  fam = networks.family("macro")
  assert isinstance(fam, NetworkFamily) and isinstance(fam.supernet, WeightSharing)
  assert fam.tasks == ("images",) and fam.continuous is None
  cfg = fam.supernet.config(num_classes=3, init_channels=8, layers=5, num_nodes=5)  # as the evaluator calls it
  assert cfg.num_layers == 12 and cfg.double_channels is False  # ENAS search: C constant
  with pytest.raises(ValueError, match="even"):
    fam.supernet.config(init_channels=5)


@pytest.mark.parametrize("train", [pytest.param(False, marks=pytest.mark.slow), True])
def test_supernet_equals_child_with_shared_weights(supernet, train):
  params, stats, x = supernet
  # forward_only: XLA convolutions in the branches (faster to compile than the training taps)
  apply = jax.jit(lambda a: macro.supernet_apply(params, stats, a, x, config=CFG, train=train,
                                                 forward_only=True)[0])
  for arch in ARCHS:
    want = apply(jnp.asarray(arch))
    model = macro.build_child(SPACE, arch, num_classes=5, init_channels=4, double_channels=False)
    variables = macro.child_variables_from_supernet(arch, params, stats, CFG)
    got = model.apply(variables, x, train=train, mutable=["batch_stats"])[0][0] if train else \
        model.apply(variables, x, train=False)[0]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  assert apply._cache_size() == 1  # one compilation for every architecture
  # the architecture matters: different archs give different logits
  assert float(jnp.abs(apply(jnp.asarray(ARCHS[0])) - apply(jnp.asarray(ARCHS[1]))).max()) > 1e-3


def test_gradients_finite_and_only_chosen_branches_trained():
  cfg = macro.MacroConfig(num_classes=5, init_channels=2, num_layers=2)  # the training path, kept small
  params, stats = macro.init_supernet(jax.random.key(0), cfg, (4, 4, 1))
  x, y = jax.random.normal(jax.random.key(2), (4, 4, 4, 1)), jnp.arange(4)

  def loss(p, a):
    logits, _ = macro.supernet_apply(p, stats, a, x, config=cfg, train=True)
    return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y])

  grad = jax.jit(jax.grad(loss))
  grads = grad(params, jnp.array([3, 2, 1]))  # sep5, then conv5 + the stem
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
  norm = lambda t: sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(t))
  assert norm(grads["layer_0"]["b3"]) > 0 and norm(grads["layer_1"]["b2"]) > 0
  assert norm(grads["layer_0"]["b1"]) == 0 and norm(grads["layer_1"]["b0"]) == 0  # not chosen
  grads = grad(params, jnp.array([5, 4, 0]))
  assert norm(grads["layer_0"]["b5"]) > 0 and norm(grads["layer_0"]["b3"]) == 0
  assert grad._cache_size() == 1


def test_closed_form_cost_equals_traced_count():
  for arch in ARCHS:
    for double in (True, False):
      got = macro.child_cost(arch, num_classes=5, init_channels=4, double_channels=double, input_shape=(8, 8, 1))
      want = cost.count_cost(SPACE, arch, num_classes=5, init_channels=4, double_channels=double,
                             input_shape=(8, 8, 1))
      assert got == want, (arch, double)


def test_child_reduces_only_what_is_read_and_checks_shapes():
  assert macro.needed_reductions([0, 0, 0, 0, 0, 0], CFG) == {0: [1], 1: [2]}
  assert macro.needed_reductions([0, 0, 1, 0, 1, 0], CFG) == {0: [0, 1], 1: [0, 2]}
  with pytest.raises(ValueError, match="num_layers=3"):
    macro.supernet_apply({}, {}, jnp.zeros(10, jnp.int32), jnp.zeros((1, 8, 8, 1)), config=CFG, train=False)


@pytest.mark.slow  # compiles the 12-layer supernet (about 2 minutes of a loaded 2-core CPU)
def test_supernet_evaluator_drives_the_registered_space_unchanged():
  from nas_jax import registry
  from nas_jax.evaluators.supernet import SupernetEvaluator
  space = registry.get_space("macro")
  evaluator = SupernetEvaluator(space, {"dataset": "digits", "train_size": 96, "batch_size": 32, "init_channels": 4,
                                        "steps_per_round": 3, "eval_batch_size": 64})
  state = evaluator.init(jax.random.key(0))
  archs = np.asarray(jax.vmap(space.sample)(jax.random.split(jax.random.key(1), 3)))
  result, state = evaluator.evaluate(state, archs, jax.random.key(2))
  assert result.scores.shape == (3,) and np.isfinite(result.scores).all()
  assert int(state["net"]["step"]) == 3
