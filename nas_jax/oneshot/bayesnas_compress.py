"""BayesNAS's prior as network compression: switches on the filters and neurons of LeNet-5.

The paper (Zhou et al., ICML 2019, section 5) applies the same hierarchical
ARD prior to an ordinary CNN to prune whole filters and neurons (structural
sparsity). Here every conv filter and every hidden neuron of LeNet-5 gets a
scalar switch multiplying its output; the switches carry the ARD prior of
``nas_jax.oneshot.bayesnas`` (``ard_update``: ``C``, ``omega``, ``gamma``; the
re-weighted penalty ``lambda * sum omega |s|``), updated after each epoch of
joint training from the exact Hessian diagonal w.r.t. the switches (a few
hundred switches on a small network: ``hessian_diagonal(mode="exact")``). A
switch whose ``gamma`` falls below ``prune_threshold`` removes its filter or
neuron, and with it the weights that feed it and the weights it feeds; the
pruned network is then fine-tuned with the survivors' switches folded in.

LeNet-5 (LeCun et al. 1998) sized for 8x8 digits: conv5x5(6, same)-ReLU-
maxpool2, conv5x5(16, same)-ReLU-maxpool2, dense 120-ReLU, dense 84-ReLU,
dense 10 (21,150 weights; the 32x32 original has 61,470).

Measured on digits (2 busy cores, seed 0; ``python experiments/compress.py``
with the defaults, about 4 minutes): dense LeNet-5 96.66 % test accuracy;
the outer iterations stop at 25 with 90.6 % of the weights pruned (conv1 6,
conv2 4 filters, fc1 30, fc2 19 neurons: 1,990 of 21,150 weights), 78.27 %
right after pruning, 96.38 % after 120 fine-tuning epochs (-0.28 points;
40 epochs: 94.15 %). Other ``lam``: 0.05 prunes nothing in 12 iterations,
0.5 collapses the network in the first; at 0.15 pruning starts after ~10
iterations and accelerates (36 % at 15, 94 % at 30 without the target).
Seeds 1 and 2 (``--set seed=S``; the seed draws the initial weights, the
batch order and the Hessian's samples; same digits split), load 11-18:
90.0 % pruned, 95.82 -> 96.38 %; 92.0 % pruned, 96.10 -> 97.77 %. On another CPU the same
code gives seed 0 92.5 % pruned at outer iteration 26, 96.66 -> 77.16 -> 94.71 % (the dense
network identical; rounding in the outer iterations differs between machines).

A CPU-sized VGG on the CIFAR-10 JPEGs (``model="vgg_small"``: 204,208 weights;
``python experiments/compress.py --model vgg_small --dataset imagefolder:DIR --set
train_size=5000 --set lam=0.039 --set finetune_epochs=60``, 5,000 random training
images, no augmentation; 2 cores shared with one other job, 28 min): dense 50.79 %
test accuracy; pruning starts at outer iteration 8 and reaches 91.1 % at 14 (conv
filters 11/16, 8/16, 14/32, 12/32, 15/64, 13/64 and 51 of 128 neurons kept);
31.03 % right after pruning, 50.92 % after 60 fine-tuning epochs (46.68 % after 20).

``compress(data, config)`` returns a report: test accuracy before and after,
weights kept per layer, the fraction pruned, and the sparsity/accuracy curve
over the outer iterations; ``plot_report`` draws it.

Resuming: ``compress(data, config, checkpoint_dir=DIR)`` saves the whole state
atomically (``nas_jax.checkpoint.SearchCheckpointer``) after the dense
training, every outer iteration and the fine-tuning (and every
``checkpoint_every_s`` seconds inside those two); called again with ``DIR`` it
goes on from the latest checkpoint and returns the report an uninterrupted run
returns, without recomputing what was saved (a finished run returns its saved
report at once); another config or other data on ``DIR`` raise ``ValueError``
and change nothing. ``experiments/compress.py --workdir W`` checkpoints into
``W/checkpoints``::

    report = compress(data, cfg, checkpoint_dir="w/checkpoints")  # Ctrl-C at outer iteration 12
    report = compress(data, cfg, checkpoint_dir="w/checkpoints")  # resumes at outer iteration 13

Example:
    >>> cfg = default_config()
    >>> cfg["lam"], cfg["target_pruned"]
    (0.15, 0.9)
"""
from __future__ import annotations

import hashlib
import json
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax.checkpoint import SearchCheckpointer, write_json
from nas_jax.data import images as data_lib
from nas_jax.oneshot import bayesnas

# A model is a chain of layers (name, kind, units, kernel, pool): ``conv`` layers
# ('same' padding, ReLU, then a 2x2 max pool where ``pool``), ``fc`` layers (ReLU),
# and a last ``fc`` classifier (``units`` None = the number of classes, no
# ReLU, no switches). Every other layer's output units carry switches.
MODELS = {
    # LeNet-5 (LeCun et al. 1998) sized for 8x8 digits: 21,150 weights (the 32x32 original 61,470).
    "lenet5": (("conv1", "conv", 6, 5, True), ("conv2", "conv", 16, 5, True), ("fc1", "fc", 120, 0, False),
               ("fc2", "fc", 84, 0, False), ("fc3", "fc", None, 0, False)),
    # A small VGG (Simonyan & Zisserman 2015: 3x3 convolutions in pairs, max pools between stages) for
    # 32x32 CIFAR-10: 2 x 16, 2 x 32, 2 x 64 channels, a 128 hidden layer (204,208 weights, 10.0 M
    # multiply-adds per image). The paper compresses VGG-16; this is a CPU-sized shape of it (no batch
    # norm: the switches act on plain ReLU units, as in LeNet-5).
    "vgg_small": (("conv1", "conv", 16, 3, False), ("conv2", "conv", 16, 3, True),
                  ("conv3", "conv", 32, 3, False), ("conv4", "conv", 32, 3, True),
                  ("conv5", "conv", 64, 3, False), ("conv6", "conv", 64, 3, True),
                  ("fc1", "fc", 128, 0, False), ("fc2", "fc", None, 0, False)),
}
UNITS = {layer[0]: layer[2] for layer in MODELS["lenet5"][:-1]}  # LeNet-5's switched layers and their units


def default_config() -> dict[str, Any]:
  """Settings of ``compress``; sources in the comments."""
  return {
      # lambda: the NAS presets (0.01 / 0.007 / 0.005) prune nothing here in 12 iterations; 0.15 measured on
      # LeNet-5 with digits' 1,294 training images (docstring). It weighs a penalty on the *mean* loss, so its
      # pull per epoch grows with the steps per epoch: for N images use about 0.15 * 1294 / N (measured on the
      # VGG: 0.039 at N = 5,000 prunes 91 %; 0.15 at N = 10,000 zeroes every switch in the first joint epoch).
      "lam": 0.15,
      "outer_iterations": 30,   # epochs of joint training, each followed by the prior update (measured)
      "pretrain_epochs": 10,    # weights only first (the paper's schedule: weights, then weights + switches)
      "finetune_epochs": 120,   # after pruning (measured: 40 epochs leave 2.5 points, 120 recover them)
      "batch_size": 64,
      "lr": 1e-3,               # AdamW on the weights (the paper's compression runs do not state one; ours)
      "switch_lr": 0.05,        # proximal SGD on the switches (soft threshold: pruned switches are exact zeros)
      "weight_decay": 1e-4,     # AdamW on the weights: keeps them from growing to undo the switches' shrinkage
      "prune_threshold": 1e-3,  # on gamma, as nas_jax.oneshot.bayesnas
      "target_pruned": 0.9,     # stop the outer iterations once this fraction of the weights is pruned (issue: 90 %)
      "seed": 0,
      "model": "lenet5",        # a name in MODELS
      "train_size": None,       # None: the whole training split; an int: N images drawn at random (CPU runs)
      # Hessian diagonal per prior update: "exact" (one HVP per switch), "hutchinson" (hessian_probes
      # Rademacher probes, unbiased), "auto" (exact up to exact_max_switches switches).
      "hessian": "auto",
      "exact_max_switches": 256,  # LeNet-5's 226 switches: exact
      "hessian_probes": 8,
      "hessian_samples": 512,   # training images per Hessian evaluation
  }


def _spec(model: str) -> tuple:
  if model not in MODELS:
    raise ValueError(f"unknown model {model!r} for compression; choose one of {sorted(MODELS)}")
  return MODELS[model]


def model_units(model: str) -> dict[str, int]:
  """Switched layers of ``model`` and their output units (filters or neurons).

  Example:
    >>> model_units("lenet5")
    {'conv1': 6, 'conv2': 16, 'fc1': 120, 'fc2': 84}
  """
  return {name: units for name, _, units, _, _ in _spec(model)[:-1]}


def _shapes(model: str, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, tuple[int, ...]]:
  """Weight shapes per layer (conv HWIO, fc in x out) for inputs of ``image_shape``."""
  h, w, c = image_shape
  shapes, flat = {}, None
  for name, kind, units, kernel, pool in _spec(model):
    units = num_classes if units is None else units
    if kind == "conv":
      shapes[name] = (kernel, kernel, c, units)
      c = units
      if pool:
        h, w = h // 2, w // 2
    else:
      flat = h * w * c if flat is None else flat
      shapes[name] = (flat, units)
      flat = units
  return shapes


def init_model(model: str, key: jax.Array, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
  """Weights of ``model`` (He-normal, zero biases) for ``image_shape`` inputs."""
  shapes = _shapes(model, image_shape, num_classes)
  params = {}
  for k, (name, s) in zip(jax.random.split(key, len(shapes)), shapes.items()):
    fan_in = math.prod(s[:-1])
    params[name] = {"w": jax.random.normal(k, (math.prod(s),)).reshape(s) * math.sqrt(2.0 / fan_in),
                    "b": jnp.zeros(s[-1])}
  return params


def apply_model(model: str, params: dict[str, Any], switches: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """Logits; every unit of a switched layer is multiplied by its switch after the ReLU (before the pool)."""
  spec = _spec(model)
  h = x
  for name, kind, _, _, pool in spec[:-1]:
    p = params[name]
    if kind == "conv":
      h = jax.lax.conv_general_dilated(h, p["w"], (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["b"]
      h = jax.nn.relu(h) * switches[name]
      if pool:
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    else:
      h = h.reshape(h.shape[0], -1)
      h = jax.nn.relu(h @ p["w"] + p["b"]) * switches[name]
  last = params[spec[-1][0]]
  return h.reshape(h.shape[0], -1) @ last["w"] + last["b"]


def init_lenet(key: jax.Array, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
  """LeNet-5 weights (``init_model("lenet5", ...)``)."""
  return init_model("lenet5", key, image_shape, num_classes)


def apply_lenet(params: dict[str, Any], switches: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """LeNet-5 logits (``apply_model("lenet5", ...)``)."""
  return apply_model("lenet5", params, switches, x)


def kept_weights(keep: dict[str, np.ndarray], image_shape: tuple[int, int, int], num_classes: int,
                 model: str = "lenet5") -> dict[str, int]:
  """Weights (no biases) left per layer when only the units in ``keep`` remain.

  Example:
    >>> full = {k: np.ones(n) for k, n in model_units("lenet5").items()}
    >>> sum(kept_weights(full, (8, 8, 1), 10).values())
    21150
  """
  shapes = _shapes(model, image_shape, num_classes)
  spec = _spec(model)
  n_in, spatial, out = image_shape[2], None, {}
  h, w = image_shape[:2]
  for name, kind, _, _, pool in spec:
    n_out = int(np.sum(keep[name])) if name in keep else shapes[name][-1]
    if kind == "conv":
      out[name] = shapes[name][0] * shapes[name][1] * n_in * n_out
      if pool:
        h, w = h // 2, w // 2
    else:
      spatial = h * w if spatial is None else 1
      out[name] = spatial * n_in * n_out
    n_in = n_out
  return out


def train_subset(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """``n`` examples drawn at random (fixed by ``seed``), in their original order.

  Not the first ``n``: image folders come sorted by class, so a prefix holds one
  or two classes (a VGG trained on such a prefix of CIFAR-10 tests at 17.6 %).

  Example:
    >>> x, y = np.arange(100), np.repeat(np.arange(10), 10)
    >>> len(np.unique(train_subset(x, y, 20, seed=0)[1])) > 2
    True
  """
  return data_lib.random_subset(x, y, n, np.random.default_rng(seed))


def _normalise(ds, x):
  return (x.astype(np.float32) / 255.0 - ds.mean) / ds.std


_PHASES = ("pretrain", "outer", "finetune", "done")


def _data_identity(data: data_lib.ImageDataset) -> dict[str, Any]:
  """What names the data of a run: its summary line, normalisation and a digest of every split's labels."""
  return {"summary": data.summary(), "mean": np.asarray(data.mean, np.float64).round(6).tolist(),
          "std": np.asarray(data.std, np.float64).round(6).tolist(),
          "labels": {s: hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()[:12]
                     for s, y in sorted(data.labels.items())}}


class _Checkpoints:
  """The checkpoints of one ``compress`` run: ``SearchCheckpointer`` steps 1, 2, ... and ``settings.json``.

  ``settings.json`` (the config and the data's identity, whose hash is the
  checkpoints' fingerprint) names the settings that differ when a run with
  other settings meets the directory; the fingerprint check refuses it in any case.
  """

  def __init__(self, directory: Any, settings: dict[str, Any], every_s: float):
    self.directory = pathlib.Path(directory)
    if self.directory.exists() and not self.directory.is_dir():
      raise ValueError(f"checkpoint directory {self.directory} is a file; give a directory (use a fresh --workdir)")
    self.settings = json.loads(json.dumps(settings))  # as it reads back from settings.json
    fingerprint = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]
    self.every_s, self.last = every_s, time.monotonic()
    self.directory.mkdir(parents=True, exist_ok=True)
    self.ckpt = SearchCheckpointer(self.directory, fingerprint)
    self.step = self.ckpt.latest_step() or 0
    path = self.directory / "settings.json"
    if not self.step:
      write_json(path, self.settings)
    elif path.is_file():
      self._check(path)

  def _check(self, path: pathlib.Path) -> None:
    try:
      saved = json.loads(path.read_text())
    except (OSError, ValueError):
      return  # a damaged record: the fingerprint check decides
    if not isinstance(saved, dict) or saved == self.settings:
      return
    old, new = saved.get("config") or {}, self.settings["config"]
    diffs = [f"{k} {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k)]
    old, new = saved.get("data") or {}, self.settings["data"]
    if old.get("summary") != new["summary"]:
      diffs.append(f"data {old.get('summary')!r} -> {new['summary']!r}")
    elif old != new:
      diffs.append(f"data {new['summary']!r} with other labels or normalisation")
    raise ValueError(f"{self.directory} holds the checkpoints of a compression run with other settings "
                     f"({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}); use a fresh --workdir, "
                     "or the same settings to resume")

  def restore(self, templates: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    return self.ckpt.restore({"state": templates}) if self.step else None

  def due(self) -> bool:
    """Whether a checkpoint inside a phase of epochs is due (``every_s`` seconds since the last)."""
    return time.monotonic() - self.last >= self.every_s

  def save(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
    self.step += 1
    self.ckpt.save(self.step, {"state": state}, meta)
    self.last = time.monotonic()


def compress(data: data_lib.ImageDataset, config: dict[str, Any] | None = None, log: Any = None,
             checkpoint_dir: Any = None, checkpoint_every_s: float = 60.0) -> dict[str, Any]:
  """Trains LeNet-5 with switches under the ARD prior, prunes, fine-tunes; returns the report.

  With ``checkpoint_dir`` the run is resumable with nothing lost: the whole
  state (weights, switches, both optimizer states, ``omega``, ``gamma``, the
  batch-order generator's state, the curve, the phase and its counters, the
  dense and pruned accuracies, the time spent) is saved atomically
  (``nas_jax.checkpoint.SearchCheckpointer``) after the dense training, after
  every outer iteration, after the fine-tuning, and inside the dense training
  and the fine-tuning after an epoch once ``checkpoint_every_s`` seconds have
  passed since the last save. Each save comes before that step's ``log`` line.
  A later call with the same directory restores the latest checkpoint and goes
  on from there: the report is the one an uninterrupted run returns, and what
  was saved is not recomputed (a finished run returns its saved report at
  once). A directory written with other settings or data raises ``ValueError``
  and nothing in it changes.

  Args:
    data: an ``ImageDataset`` with ``train`` and ``test`` splits (digits).
    config: overrides of ``default_config()``; unknown keys raise ``ValueError``.
    log: called with one line of progress after the dense training, each outer
      iteration and the fine-tuning, and on resuming (``experiments/compress.py``
      prints them).
    checkpoint_dir: where to checkpoint and resume from (None: no checkpoints).
    checkpoint_every_s: the least time between two checkpoints inside the dense
      training or the fine-tuning (0: after every epoch); not part of the settings.

  Returns:
    ``{"dense_test_acc", "pruned_test_acc", "finetuned_test_acc", "weights_total",
    "weights_kept", "kept_per_layer", "units_kept", "pruned_fraction", "curve"}``;
    ``curve`` lists per outer iteration ``{"iteration", "test_acc"`` (switches
    as trained), ``"pruned_fraction"`` (if pruned there), ``"log10_gamma_min"}``.

  Example:
    >>> cfg = {"train_size": 128, "pretrain_epochs": 1, "outer_iterations": 2, "finetune_epochs": 1}
    >>> report = compress(data, cfg, checkpoint_dir="w/checkpoints")  # doctest: +SKIP
    >>> compress(data, cfg, checkpoint_dir="w/checkpoints") == report  # finished: read back  # doctest: +SKIP
    True
  """
  defaults = default_config()
  cfg = {**defaults, **(config or {})}
  log = log or (lambda line: None)
  t0 = time.perf_counter()
  unknown = set(cfg) - set(defaults)
  if unknown:
    raise ValueError(f"unknown compression setting(s) {sorted(unknown)}; allowed: {sorted(defaults)}")
  shape, classes = tuple(data.image_shape), data.num_classes
  xt, yt = _normalise(data, data.images["train"]), data.labels["train"]
  xs, ys = _normalise(data, data.images["test"]), data.labels["test"]
  if cfg["train_size"] is not None:
    xt, yt = train_subset(xt, yt, int(cfg["train_size"]), cfg["seed"])
  model = cfg["model"]
  units = model_units(model)
  n_switches = sum(units.values())
  mode = cfg["hessian"]
  if mode == "auto":
    mode = "exact" if n_switches <= cfg["exact_max_switches"] else "hutchinson"
  if mode not in ("exact", "hutchinson"):
    raise ValueError(f"hessian must be 'auto', 'exact' or 'hutchinson', got {cfg['hessian']!r}")
  saver = None
  if checkpoint_dir is not None:
    saver = _Checkpoints(checkpoint_dir, {"config": cfg, "data": _data_identity(data)}, checkpoint_every_s)
  params = init_model(model, jax.random.key(cfg["seed"]), shape, classes)
  switches = {k: jnp.ones(n) for k, n in units.items()}
  omega = {k: np.ones(n, np.float32) for k, n in units.items()}
  gamma = {k: np.ones(n) for k, n in units.items()}
  lam = float(cfg["lam"])
  tx_w, tx_s = optax.adamw(cfg["lr"], weight_decay=cfg["weight_decay"]), optax.sgd(cfg["switch_lr"])
  opt_w, opt_s = tx_w.init(params), tx_s.init(switches)
  rng = np.random.default_rng(cfg["seed"])
  # where the run stands: the phase and how much of it is done (epochs; outer iterations in "outer")
  phase, done, curve, dense_acc, pruned_acc = "pretrain", 0, [], None, None
  restored = saver.restore({"params": params, "switches": switches, "opt_w": opt_w, "opt_s": opt_s,
                            "omega": omega, "gamma": gamma}) if saver else None
  if restored is not None:
    trees, meta = restored
    if meta.get("phase") not in _PHASES:
      raise ValueError(f"checkpoint {saver.step} in {saver.directory} has no known phase; use a fresh --workdir")
    if meta["phase"] == "done":
      log(f"finished earlier: the report of checkpoint {saver.step} in {saver.directory} "
          f"({meta['elapsed_s']:.0f} s of compute)")
      return meta["report"]
    state = trees["state"]
    params, switches, opt_w, opt_s = state["params"], state["switches"], state["opt_w"], state["opt_s"]
    omega.update(state["omega"])
    gamma.update(state["gamma"])
    rng.bit_generator.state = meta["rng"]
    phase, done, curve = meta["phase"], meta["done"], meta["curve"]
    dense_acc, pruned_acc = meta["dense_test_acc"], meta["pruned_test_acc"]
    t0 -= meta["elapsed_s"]
    what = {"pretrain": f"dense training epoch {done} of {cfg['pretrain_epochs']}",
            "outer": f"outer iteration {done} of {cfg['outer_iterations']}",
            "finetune": f"fine-tuning epoch {done} of {cfg['finetune_epochs']}"}[phase]
    log(f"resumed from checkpoint {saver.step} in {saver.directory}: {what} done "
        f"({meta['elapsed_s']:.0f} s of compute so far)")

  def save(report=None):
    """Checkpoints the state as it stands (``phase``, ``done`` and the rest read at call time)."""
    if saver is None:
      return
    saver.save({"params": params, "switches": switches, "opt_w": opt_w, "opt_s": opt_s, "omega": omega,
                "gamma": gamma},
               {"phase": phase, "done": done, "curve": curve, "dense_test_acc": dense_acc,
                "pruned_test_acc": pruned_acc, "rng": rng.bit_generator.state,
                "elapsed_s": time.perf_counter() - t0, "report": report})

  def ce(p, s, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(apply_model(model, p, s, x), y).mean()

  @jax.jit
  def step(p, s, ow, os_, om, x, y, on):
    g_w, g_s = jax.grad(ce, argnums=(0, 1))(p, s, x, y)
    u, ow = tx_w.update(g_w, ow, p)
    p = optax.apply_updates(p, u)
    # switches: a proximal gradient step on CE + lambda * sum omega |s| (soft threshold: exact zeros)
    lr_s = cfg["switch_lr"]
    s = {k: jnp.where(on > 0, jnp.sign(v - lr_s * g_s[k]) * jnp.maximum(
        jnp.abs(v - lr_s * g_s[k]) - lr_s * lam * om[k], 0.0), v) for k, v in s.items()}
    return p, s, ow, os_

  @jax.jit
  def accuracy(p, s, x, y):
    return 100.0 * jnp.mean(jnp.argmax(apply_model(model, p, s, x), -1) == y)

  @jax.jit
  def hess(p, s, x, y, key):
    from jax.flatten_util import ravel_pytree  # pylint: disable=import-outside-toplevel
    flat, unravel = ravel_pytree(s)
    f = lambda v: ce(p, unravel(v), x, y)  # noqa: E731
    if mode == "exact":
      return unravel(bayesnas.hessian_diagonal(f, flat, mode="exact"))
    probes = jax.random.split(key, cfg["hessian_probes"])
    return unravel(jax.lax.map(lambda k: bayesnas.hessian_diagonal(f, flat, mode="hutchinson", key=k),
                               probes).mean(0))

  bs = cfg["batch_size"]

  def epoch(p, s, ow, os_, on, keep=None):
    perm = rng.permutation(len(xt))
    for i in range(len(xt) // bs):
      idx = perm[i * bs:(i + 1) * bs]
      p, s, ow, os_ = step(p, s, ow, os_, {k: jnp.asarray(v) for k, v in omega.items()}, xt[idx], yt[idx],
                           jnp.float32(on))
      if keep is not None:
        s = {k: s[k] * keep[k] for k in s}
    return p, s, ow, os_

  if phase == "pretrain":
    while done < cfg["pretrain_epochs"]:
      params, switches, opt_w, opt_s = epoch(params, switches, opt_w, opt_s, 0.0)
      done += 1
      if saver and done < cfg["pretrain_epochs"] and saver.due():
        save()
    dense_acc = float(accuracy(params, switches, xs, ys))
    phase, done = "outer", 0
    save()
    log(f"dense {model}: test acc {dense_acc:.2f}% after {cfg['pretrain_epochs']} epochs on {len(yt)} images "
        f"({time.perf_counter() - t0:.0f} s)")
  total_weights = sum(kept_weights({k: np.ones(n) for k, n in units.items()}, shape, classes, model).values())

  def outer_finished():
    return done >= cfg["outer_iterations"] or (cfg["target_pruned"] is not None and bool(curve)
                                               and curve[-1]["pruned_fraction"] >= cfg["target_pruned"])

  if phase == "outer":
    while not outer_finished():
      it = done
      params, switches, opt_w, opt_s = epoch(params, switches, opt_w, opt_s, 1.0)
      idx = rng.permutation(len(xt))[:cfg["hessian_samples"]]
      h = jax.device_get(hess(params, switches, xt[idx], yt[idx], jax.random.key(cfg["seed"] * 1000 + it)))
      sw = {k: np.asarray(v, np.float64) for k, v in jax.device_get(switches).items()}
      for k in units:  # one flat group of switches per layer, no edge level: the hierarchy's top is fixed at 1
        out = bayesnas.ard_update(np.ones(1), sw[k][None], np.zeros(1), np.asarray(h[k])[None],
                                  np.full(1, 1e12), gamma[k][None], lam_edge=lam, lam_op=lam)
        gamma[k], omega[k] = out["gamma_op"][0], out["omega_op"][0].astype(np.float32)
      keep = {k: gamma[k] >= cfg["prune_threshold"] for k in units}
      kept = sum(kept_weights(keep, shape, classes, model).values())
      curve.append({"iteration": it + 1, "test_acc": round(float(accuracy(params, switches, xs, ys)), 3),
                    "pruned_fraction": round(1 - kept / total_weights, 4),
                    "log10_gamma_min": round(float(min(np.log10(np.maximum(g, 1e-30)).min()
                                                       for g in gamma.values())), 3)})
      done = it + 1
      save()
      log(f"outer iteration {it + 1}: {100 * curve[-1]['pruned_fraction']:.1f}% of weights pruned, test acc "
          f"{curve[-1]['test_acc']:.2f}%, log10 gamma min {curve[-1]['log10_gamma_min']} "
          f"({time.perf_counter() - t0:.0f} s)")
  keep = {k: (gamma[k] >= cfg["prune_threshold"]).astype(np.float32) for k in units}
  if phase == "outer":  # prune; the fine-tuning's checkpoints hold the pruned switches and its optimizer state
    switches = {k: switches[k] * keep[k] for k in switches}
    pruned_acc = float(accuracy(params, switches, xs, ys))
    opt_w = tx_w.init(params)
    phase, done = "finetune", 0
  while done < cfg["finetune_epochs"]:  # switches frozen (on = 0), pruned units stay at 0
    params, switches, opt_w, opt_s = epoch(params, switches, opt_w, opt_s, 0.0, keep)
    done += 1
    if saver and done < cfg["finetune_epochs"] and saver.due():
      save()
  per_layer = kept_weights(keep, shape, classes, model)
  kept = sum(per_layer.values())
  finetuned_acc = float(accuracy(params, switches, xs, ys))
  report = {"dense_test_acc": round(dense_acc, 3), "pruned_test_acc": round(pruned_acc, 3),
            "finetuned_test_acc": round(finetuned_acc, 3),
            "weights_total": int(total_weights), "weights_kept": int(kept), "kept_per_layer": per_layer,
            "units_kept": {k: int(v.sum()) for k, v in keep.items()},
            "pruned_fraction": round(1 - kept / total_weights, 4), "curve": curve, "config": cfg}
  phase = "done"
  save(report)
  log(f"pruned: test acc {pruned_acc:.2f}%, after {cfg['finetune_epochs']} fine-tuning epochs "
      f"{finetuned_acc:.2f}% ({time.perf_counter() - t0:.0f} s)")
  return report


def plot_report(report: dict[str, Any], path: Any) -> None:
  """Sparsity and test accuracy against the outer iteration, with the dense and final accuracies."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  c = report["curve"]
  x = [r["iteration"] for r in c]
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(x, [100 * r["pruned_fraction"] for r in c], "o-", label="weights pruned, %")
  ax.plot(x, [r["test_acc"] for r in c], "s-", label="test acc (switches as trained), %")
  ax.axhline(report["dense_test_acc"], color="0.5", ls="--", label="dense test acc")
  ax.axhline(report["finetuned_test_acc"], color="C2", ls=":", label="pruned + fine-tuned test acc")
  ax.set_xlabel("outer iteration")
  ax.set_title(f"{report['config']['model']}: {100 * report['pruned_fraction']:.1f}% of weights pruned")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
