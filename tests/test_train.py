"""Tests of nas_jax.train: learning curve, non-finite steps, compile once, resume."""
import importlib
import importlib.util
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nas_jax import data, train


class Tiny(nn.Module):
  """A tiny child with the build_child contract: conv-BN-ReLU, drop, 2 heads."""
  num_classes: int = 10
  width: int = 4

  @nn.compact
  def __call__(self, x, *, train: bool, drop_prob=0.0):
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(
        nn.Conv(self.width, (3, 3))(x)))
    if train:
      keep = 1.0 - drop_prob
      mask = jax.random.bernoulli(self.make_rng("drop_path"), keep,
                                  (x.shape[0], 1, 1, 1))
      x = x * mask / keep
    aux = nn.Dense(self.num_classes)(jnp.mean(x, (1, 2)))
    return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1)), aux


@pytest.fixture(scope="module")
def ds():
  return data.load_dataset("digits", train_size=320, valid_size=100,
                           test_size=100)


CFG = {"epochs": 2, "batch_size": 32, "lr": 0.1, "auxiliary": True,
       "drop_path_prob": 0.2, "eval_batch_size": 64}


def _strip(curve):
  return [{k: v for k, v in e.items() if k != "seconds"} for e in curve]


def test_curve_and_result(ds):
  seen = []
  r = train.train_child(None, None, ds, CFG, jax.random.key(0), model=Tiny(),
                        progress=lambda e, m: seen.append((e, m)))
  assert [e for e, _ in seen] == [1, 2]
  assert len(r["curve"]) == 2
  for i, e in enumerate(r["curve"]):
    assert e["epoch"] == i + 1
    for k in ("train_loss", "train_acc", "valid_loss", "valid_acc", "seconds"):
      assert np.isfinite(e[k]), k
    assert 0 <= e["valid_acc"] <= 100
  assert r["curve"][0]["lr"] == pytest.approx(0.1)
  assert r["curve"][1]["lr"] == pytest.approx(0.05)
  assert r["curve"][1]["drop_prob"] == pytest.approx(0.1)
  assert r["steps_per_epoch"] == 10
  # Tiny: conv 3*3*1*4+4, BN 2*4, dense 8*8*4*10+10, aux 4*10+10.
  assert r["params"] == 40 + 8 + 2570 + 50
  assert 0 <= r["test_acc"] <= 100 and r["nonfinite_steps"] == 0


def test_learns_and_is_deterministic(ds):
  cfg = dict(CFG, epochs=3)
  a = train.train_child(None, None, ds, cfg, jax.random.key(1), model=Tiny())
  b = train.train_child(None, None, ds, cfg, jax.random.key(1), model=Tiny())
  assert _strip(a["curve"]) == _strip(b["curve"])
  assert a["test_acc"] == b["test_acc"]
  assert a["curve"][-1]["valid_acc"] > 60.0  # chance is 10%
  assert a["curve"][-1]["train_loss"] < a["curve"][0]["train_loss"]
  c = train.train_child(None, None, ds, cfg, jax.random.key(2), model=Tiny())
  assert _strip(c["curve"]) != _strip(a["curve"])


def test_one_compilation_across_lr_and_drop_values(ds):
  model = Tiny()
  cfg = train.resolve_config(CFG)
  tx, train_step, eval_step = train.get_steps(model, cfg)
  variables = model.init({"params": jax.random.key(0)},
                         jnp.zeros((1, 8, 8, 1)), train=False)
  state = {"params": variables["params"],
           "batch_stats": variables["batch_stats"],
           "opt_state": tx.init(variables["params"])}
  for epoch in range(3):
    for step, batch in enumerate(data.epoch_batches(ds, "train", 32, seed=0,
                                                    epoch=epoch)):
      state, _ = train_step(state, jax.device_put(batch), jax.random.key(step),
                            jnp.float32(train.cosine_lr(epoch, cfg)),
                            jnp.float32(train.drop_prob_at(epoch, cfg)))
      if step == 2:
        break
  assert train_step._cache_size() == 1  # pylint: disable=protected-access
  train.evaluate(eval_step, state, ds, "valid", 64)
  train.evaluate(eval_step, state, ds, "test", 64)
  assert eval_step._cache_size() == 1  # pylint: disable=protected-access


def test_nonfinite_batch_is_skipped(ds):
  model = Tiny()
  cfg = train.resolve_config(CFG)
  tx, train_step, eval_step = train.get_steps(model, cfg)
  variables = model.init({"params": jax.random.key(0)},
                         jnp.zeros((1, 8, 8, 1)), train=False)
  state = {"params": variables["params"],
           "batch_stats": variables["batch_stats"],
           "opt_state": tx.init(variables["params"])}
  batch = next(data.epoch_batches(ds, "train", 32, seed=0, epoch=0))
  before = jax.tree.map(np.asarray, state)
  bad = dict(batch, image=batch["image"].copy())
  bad["image"][3, 2, 2, 0] = np.nan
  after, m = train_step(state, bad, jax.random.key(0), jnp.float32(0.1),
                        jnp.float32(0.0))
  assert not bool(m["finite"])
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, after))
  after2, m2 = train_step(after, batch, jax.random.key(0), jnp.float32(0.1),
                          jnp.float32(0.0))
  assert bool(m2["finite"])
  assert not np.array_equal(np.asarray(after2["params"]["Conv_0"]["kernel"]),
                            before["params"]["Conv_0"]["kernel"])


def test_divergence_counted_then_stops(ds):
  cfg = dict(CFG, epochs=1, lr=1e30, max_nonfinite=10**6)
  r = train.train_child(None, None, ds, cfg, jax.random.key(0), model=Tiny())
  assert r["nonfinite_steps"] > 0
  with pytest.raises(RuntimeError, match="non-finite.*max_nonfinite=2"):
    train.train_child(None, None, ds, dict(cfg, max_nonfinite=2),
                      jax.random.key(0), model=Tiny())


class _Crash(Exception):
  pass


def _crash_after(n):
  def progress(epoch, _):
    if epoch == n:
      raise _Crash
  return progress


def test_resume_gives_identical_run(ds, tmp_path):
  cfg = dict(CFG, epochs=3)
  key = jax.random.key(7)
  straight = train.train_child(None, None, ds, cfg, key, model=Tiny())
  with pytest.raises(_Crash):
    train.train_child(None, None, ds, cfg, key, model=Tiny(), workdir=tmp_path,
                      progress=_crash_after(2))
  epochs_run, seen = [], []
  resumed = train.train_child(None, None, ds, cfg, key, model=Tiny(),
                              workdir=tmp_path,
                              progress=lambda e, _: epochs_run.append(e),
                              callbacks=[lambda e, entry: seen.append((e, entry["valid_acc"]))])
  assert epochs_run == [3]  # epochs 1-2 came from the checkpoint
  # ... and were replayed to the callbacks, which see the whole curve
  assert seen == [(e["epoch"], e["valid_acc"]) for e in straight["curve"]]
  assert _strip(resumed["curve"]) == _strip(straight["curve"])
  assert resumed["test_acc"] == straight["test_acc"]
  assert resumed["test_loss"] == straight["test_loss"]
  # A finished run is not trained again.
  again = train.train_child(None, None, ds, cfg, key, model=Tiny(),
                            workdir=tmp_path, progress=_crash_after(1))
  assert again["test_acc"] == straight["test_acc"]
  # Another key is another run: its checkpoint is refused.
  with pytest.raises(ValueError, match="another experiment"):
    train.train_child(None, None, ds, cfg, jax.random.key(8), model=Tiny(),
                      workdir=tmp_path)


def test_corrupt_checkpoint_clear_error_earlier_kept(ds, tmp_path):
  cfg = dict(CFG, epochs=3)
  key = jax.random.key(3)
  with pytest.raises(_Crash):
    train.train_child(None, None, ds, cfg, key, model=Tiny(), workdir=tmp_path,
                      progress=_crash_after(2))
  ckpts = tmp_path / "checkpoints"
  assert sorted(p.name for p in ckpts.iterdir() if p.name.isdigit()) == ["1", "2"]
  for f in (ckpts / "2").rglob("*"):
    if f.is_file():
      f.write_bytes(b"garbage")
  with pytest.raises(ValueError, match=r"checkpoint .*2 is unreadable.*delete"):
    train.train_child(None, None, ds, cfg, key, model=Tiny(), workdir=tmp_path)
  assert (ckpts / "1").is_dir()
  # Following the advice resumes from epoch 1.
  shutil.rmtree(ckpts / "2")
  epochs_run = []
  train.train_child(None, None, ds, cfg, key, model=Tiny(), workdir=tmp_path,
                    progress=lambda e, _: epochs_run.append(e))
  assert epochs_run == [2, 3]


@pytest.mark.parametrize("cfg, match", [
    ({"epoch": 3}, "unknown training config keys"),
    ({"epochs": 0}, "epochs=0"),
    ({"lr": -1.0}, "lr=-1.0"),
    ({"lr": 0.01, "lr_min": 0.1}, "lr_min"),
    ({"momentum": 1.0}, "momentum"),
    ({"drop_path_prob": 1.5}, "drop_path_prob"),
    ({"auxiliary": "yes"}, "auxiliary"),
    ({"batch_size": 2.5}, "batch_size"),
])
def test_bad_config(cfg, match):
  with pytest.raises(ValueError, match=match):
    train.resolve_config(cfg)


def test_bad_inputs(ds):
  with pytest.raises(ValueError, match="fewer than batch_size"):
    train.train_child(None, None, ds, {"batch_size": 1000}, jax.random.key(0),
                      model=Tiny())
  with pytest.raises(ValueError, match="ImageDataset"):
    train.train_child(None, None, np.zeros(3), {}, jax.random.key(0),
                      model=Tiny())
  with pytest.raises(ValueError, match="space, arch"):
    train.train_child(None, None, ds, {}, jax.random.key(0))


def test_schedules():
  cfg = train.resolve_config({"epochs": 4, "lr": 0.1, "lr_min": 0.01,
                              "drop_path_prob": 0.2})
  assert train.cosine_lr(0, cfg) == pytest.approx(0.1)
  assert train.cosine_lr(2, cfg) == pytest.approx(0.055)
  assert train.drop_prob_at(0, cfg) == 0.0
  assert train.drop_prob_at(2, cfg) == pytest.approx(0.1)


def _has_nasnet_child():
  return (importlib.util.find_spec("nas_jax.networks.nasnet") is not None and
          hasattr(importlib.import_module("nas_jax.networks.nasnet"),
                  "build_child"))



@pytest.mark.slow  # compiling the nasnet child takes minutes on 2 busy cores
@pytest.mark.skipif(not _has_nasnet_child(),
                    reason="nas_jax.networks.nasnet.build_child not written yet")
def test_real_nasnet_child(ds):
  from nas_jax import registry
  space = registry.get_space("nasnet")
  arch = space.sample(jax.random.key(0))
  r = train.train_child(space, arch, ds,
                        {"epochs": 1, "batch_size": 32, "init_channels": 4,
                         "layers": 3, "auxiliary": True,
                         "drop_path_prob": 0.1},
                        jax.random.key(0))
  assert len(r["curve"]) == 1 and r["params"] > 0
  assert np.isfinite(r["curve"][0]["train_loss"])
  assert 0 <= r["test_acc"] <= 100


# --- stopping callbacks, warm starts ------------------------------------------------


def test_callback_stops_the_run_at_epoch_2_and_says_why(ds, tmp_path):
  cfg = dict(CFG, epochs=4)
  seen = []

  def stop_at_2(epoch, entry):
    seen.append((epoch, entry["valid_acc"]))
    return "predicted final accuracy too low" if epoch == 2 else None

  r = train.train_child(None, None, ds, cfg, jax.random.key(1), model=Tiny(),
                        callbacks=[stop_at_2], workdir=tmp_path)
  assert [e for e, _ in seen] == [1, 2]
  assert len(r["curve"]) == 2
  assert r["stopped"] == {"epoch": 2, "reason": "predicted final accuracy too low"}
  assert r["test_acc"] is None  # a stopped run is not tested
  # The stop is part of the checkpoint: a rerun does not train on.
  again = train.train_child(None, None, ds, cfg, jax.random.key(1), model=Tiny(),
                            callbacks=[], workdir=tmp_path,
                            progress=lambda e, _: pytest.fail("trained again"))
  assert again["stopped"] == r["stopped"] and _strip(again["curve"]) == _strip(r["curve"])
  with pytest.raises(ValueError, match="callbacks must be callables"):
    train.train_child(None, None, ds, cfg, jax.random.key(1), model=Tiny(), callbacks=[3])


def test_warm_start_copies_the_parent_and_rejects_shapes_that_do_not_fit(ds):
  cfg = dict(CFG, epochs=1, drop_path_prob=0.0)
  parent = train.train_child(None, None, ds, cfg, jax.random.key(2), model=Tiny(),
                             return_variables=True)
  x = jnp.asarray(ds.images["test"][:16], jnp.float32) / 255.0
  ref = Tiny().apply(parent["variables"], x, train=False)[0]
  # Zero epochs of training would need epochs=0; instead check the transfer itself.
  child_init = train.init_variables(Tiny(), jax.random.key(9), x[:1])
  moved = train.transfer_variables(parent["variables"], child_init)
  np.testing.assert_array_equal(Tiny().apply(moved, x, train=False)[0], ref)
  # A wider child cannot take the parent's conv: one line naming the path and the fix.
  with pytest.raises(ValueError, match=r"warm start: \[.*\] has shape \(4,.* in the parent "
                                       r"and \(6,.* in the child; pass train_child\(transfer=fn\)"):
    train.train_child(None, None, ds, cfg, jax.random.key(3), model=Tiny(width=6),
                      warm_start=parent["variables"])
  # A transfer function that returns another structure is refused too.
  with pytest.raises(ValueError, match="do not fit the child"):
    train.train_child(None, None, ds, cfg, jax.random.key(3), model=Tiny(),
                      warm_start=parent["variables"],
                      transfer=lambda p, c: {"params": c["params"]})


def _grow_nb201(parent_arch, child_arch):
  """A transfer that keeps the parent's function: copy shared leaves, zero the BN of new convs."""
  from nas_jax.networks.nb201 import useful_edges  # pylint: disable=import-outside-toplevel
  old, new = useful_edges(parent_arch), useful_edges(child_arch)
  grown = [e for e in range(6) if new[e] and not old[e]]

  def transfer(parent, child):
    out = train.transfer_variables(parent, child)

    def zero(path, leaf):
      name = jax.tree_util.keystr(path)
      if any(f"'e{e}'" in name for e in grown) and "'params'" in name and "bn" in name.lower():
        return jnp.zeros_like(leaf)
      return leaf

    return jax.tree_util.tree_map_with_path(zero, out)

  return transfer


def test_warm_started_grown_nb201_child_reproduces_its_parent(ds):
  from nas_jax.spaces import get_space  # pylint: disable=import-outside-toplevel
  space = get_space("nb201")
  parent_arch = np.array([3, 0, 0, 1, 0, 3], np.int32)   # edge 2 (2<-1) is none
  child_arch = np.array([3, 0, 3, 1, 0, 3], np.int32)    # ... now a conv3x3
  cfg = {"epochs": 1, "batch_size": 32, "init_channels": 4, "layers": 1, "eval_batch_size": 64}
  parent = train.train_child(space, parent_arch, ds, cfg, jax.random.key(4), return_variables=True)
  from nas_jax import networks  # pylint: disable=import-outside-toplevel
  x = (jnp.asarray(ds.images["test"][:32], jnp.float32) / 255.0 - ds.mean) / ds.std
  net = lambda arch: networks.build_child(space, arch, num_classes=10, init_channels=4, layers=1)
  want = net(parent_arch).apply(parent["variables"], x, train=False)[0]
  child_init = train.init_variables(net(child_arch), jax.random.key(5), x[:1])
  grown = _grow_nb201(parent_arch, child_arch)(parent["variables"], child_init)
  got = net(child_arch).apply(grown, x, train=False)[0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # train_child starts from the same function: with a vanishing learning rate its trained child
  # still computes the parent's function (train-mode BN: the running statistics moved).
  r = train.train_child(space, child_arch, ds, dict(cfg, lr=1e-12), jax.random.key(6),
                        warm_start=parent["variables"],
                        transfer=_grow_nb201(parent_arch, child_arch), return_variables=True)
  want_t = net(parent_arch).apply(parent["variables"], x, train=True, mutable=["batch_stats"])[0][0]
  got_t = net(child_arch).apply(r["variables"], x, train=True, mutable=["batch_stats"])[0][0]
  np.testing.assert_allclose(got_t, want_t, rtol=1e-4, atol=1e-4)
