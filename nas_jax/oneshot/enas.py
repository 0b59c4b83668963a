"""ENAS proper (Pham et al., ICML 2018): the controller alternating with shared weights.

One search step is one round of ENAS's alternation (``src/cifar10/main.py``):

1. **shared weights**: ``child_steps`` minibatches of the space's
   weight-sharing supernet (``networks.family(space.name).supernet``, through
   ``evaluators.supernet.SupernetEvaluator.train``), each on an architecture
   sampled by the controller (``child_steps`` samples drawn at once; each
   minibatch picks one of them uniformly, so a sample may repeat where ENAS
   draws a fresh one per minibatch);
2. **controller**: ``controller_steps`` REINFORCE steps
   (``strategies.enas.ENAS.tell``), each on ``batch_size`` sampled
   architectures scored on one validation batch with the shared weights
   (the reward: that batch's accuracy).

``derive`` is ENAS's derivation: ``derive_samples`` architectures sampled
from the controller (with a key fixed at ``init``), each scored on one
validation batch, the best kept; it is then trained from scratch by the
runner's final training. ``score`` is the derived architecture's accuracy on
one validation batch under the shared weights (a search-time figure, never a
final accuracy).

Defaults and sources (ENAS ``scripts/cifar10_micro_search.sh``):
``controller_steps`` 30 (``--controller_train_steps=30``), the controller's
settings the strategy's ``cifar_micro`` preset (``nas_jax.strategies.enas``),
``derive_samples`` 10 (``main.py`` prints 10 sampled architectures with their
validation accuracy after each epoch). ``child_steps`` is CPU-sized (ENAS:
one pass over 45,000 images in batches of 160, ~280 steps). The shared
weights follow the supernet evaluator's single cosine schedule over the whole
search (ENAS: cosine with restarts, ``T_0 = 10``, ``T_mul = 2``).

State: ``{"controller": ENAS strategy state, "supernet": the evaluator's state
(weights, optimizer, data position), "derive_key": uint32 key data}``, all
arrays, so the runner checkpoints it and resumes it exactly.

Example:
    >>> import nas_jax.data
    >>> from nas_jax import registry
    >>> data = nas_jax.data.load_dataset("digits", train_size=128, valid_fraction=0.25)
    >>> method = ENASOneShot(registry.get_space("nb201"), {
    ...     "child_steps": 2, "controller_steps": 1, "epochs": 1,
    ...     "supernet": {"init_channels": 4, "layers": 1, "batch_size": 32}}, data=data)
    >>> method.config["controller"]["preset"], method.steps_per_epoch()
    ('cifar_micro', 1)

  A search step (not run here: the supernet's train step compiles for tens of
  seconds on a 2-core CPU)::

    state = method.init(jax.random.key(0))
    state, metrics = method.step(state, jax.random.key(1))
    arch = method.derive(state)
    method.score(state, arch, jax.random.key(2))["search_score"]
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from nas_jax.evaluators.supernet import SupernetEvaluator
from nas_jax.oneshot.base import OneShotMethod, State
from nas_jax.strategies import enas as enas_lib


def _positive_int(cfg: dict[str, Any], name: str) -> int:
  value = cfg[name]
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"enas_oneshot {name} must be a positive integer, got {value!r}")
  return int(value)


class ENASOneShot(OneShotMethod):
  """ENAS: controller steps alternating with shared-weight training (``enas_oneshot``).

  Args:
    space: a space whose network family has a weight-sharing supernet
      (``nasnet``, ``nb201``).
    config: ``epochs`` (the budget; the shared weights' schedule length),
      ``steps_per_epoch``, ``child_steps``, ``controller_steps``,
      ``derive_samples``, ``controller`` (ENAS strategy settings) and
      ``supernet`` (``SupernetEvaluator`` settings; its schedule fields are
      set from the others).
    data: the image task's data (loaded by the runner).
  """

  name = "enas_oneshot"

  @classmethod
  def default_config(cls) -> dict[str, Any]:
    return {
        "epochs": 10,              # the runner sets it from the budget
        "steps_per_epoch": 1,      # alternation rounds per epoch
        "child_steps": 50,         # shared-weight minibatches per round; CPU-sized (ENAS ~280)
        "controller_steps": 30,    # ENAS cifar10_micro_search.sh --controller_train_steps=30
        "derive_samples": 10,      # ENAS main.py: 10 sampled archs scored after each epoch
        "controller": {"preset": "cifar_micro"},  # strategies.enas PRESETS (ENAS CIFAR micro)
        "supernet": {},            # evaluators.supernet DEFAULT_CONFIG
    }

  def __init__(self, space, config: dict[str, Any] | None = None, *, data: Any = None):
    config = dict(config or {})
    for group in ("controller", "supernet"):
      if not isinstance(config.get(group, {}), dict):
        raise ValueError(f"enas_oneshot {group} must be a dict of settings, got {config[group]!r}")
    defaults = self.default_config()
    config["controller"] = {**defaults["controller"], **config.get("controller", {})}
    super().__init__(space, config, data=data)
    cfg = self.config
    for name in ("epochs", "steps_per_epoch", "child_steps", "controller_steps", "derive_samples"):
      _positive_int(cfg, name)
    self.strategy = enas_lib.ENAS(space, cfg["controller"])
    reserved = {"steps_per_round", "total_rounds"} & set(cfg["supernet"])
    if reserved:
      raise ValueError(f"enas_oneshot supernet settings {sorted(reserved)} are set from "
                       "child_steps, steps_per_epoch and epochs; set those instead")
    self.evaluator = SupernetEvaluator(space, {
        **cfg["supernet"], "steps_per_round": cfg["child_steps"],
        "total_rounds": cfg["epochs"] * cfg["steps_per_epoch"]}, data=data)

  def steps_per_epoch(self) -> int:
    return int(self.config["steps_per_epoch"])

  def init(self, key: jax.Array) -> State:
    """Controller state, supernet state (weights, optimizer, data position), derive key."""
    k_ctl, k_net, k_derive = jax.random.split(key, 3)
    return {"controller": self.strategy.init(k_ctl), "supernet": self.evaluator.init(k_net),
            "derive_key": np.asarray(jax.random.key_data(k_derive))}

  def _sample(self, state: State, key: jax.Array, n: int) -> np.ndarray:
    return self.strategy.sample(state["controller"], key, n)

  def step(self, state: State, key: jax.Array) -> tuple[State, dict[str, float]]:
    """One alternation: ``child_steps`` shared-weight steps, then ``controller_steps``."""
    cfg = self.config
    k_arch, k_train, k_ask, k_score = jax.random.split(key, 4)
    archs = self._sample(state, k_arch, cfg["child_steps"])
    net, train_metrics = self.evaluator.train(state["supernet"], archs, k_train)
    ctl = state["controller"]
    rewards = []
    for c in range(cfg["controller_steps"]):
      asked, ctl = self.strategy.ask(ctl, jax.random.fold_in(k_ask, c))
      acc, _ = self.evaluator.score(net, asked, jax.random.fold_in(k_score, c))
      ctl = self.strategy.tell(ctl, asked, acc)
      rewards.append(float(np.mean(acc)))
    new = {"controller": ctl, "supernet": net, "derive_key": state["derive_key"]}
    return new, {**train_metrics, "controller_valid_acc": float(np.mean(rewards)),
                 "controller_baseline": self.summary(new)["baseline"]}

  def _derive_with_scores(self, state: State) -> tuple[np.ndarray, np.ndarray]:
    key = jax.random.wrap_key_data(np.asarray(state["derive_key"], np.uint32))
    archs = self._sample(state, key, self.config["derive_samples"])
    acc, _ = self.evaluator.score(state["supernet"], archs, jax.random.fold_in(key, 1))
    return archs, acc

  def derive(self, state: State) -> np.ndarray:
    """ENAS's derivation: the best of ``derive_samples`` sampled architectures on a validation batch."""
    archs, acc = self._derive_with_scores(state)
    return archs[int(np.argmax(acc))]

  def score(self, state: State, arch: np.ndarray, key: jax.Array) -> dict[str, Any]:
    """Accuracy (%) of ``arch`` on one validation batch under the shared weights."""
    # scored as a batch of the controller's size (one compiled scorer for both)
    batch = np.repeat(np.asarray(arch, np.int32)[None], self.strategy.batch_size, axis=0)
    acc, loss = self.evaluator.score(state["supernet"], batch, key)
    return {"search_score": float(acc[0]), "valid_acc": float(acc[0]),
            "valid_loss": float(loss[0])}

  def summary(self, state: State) -> dict[str, Any]:
    """The controller's step count and moving-average baseline."""
    ctl = state["controller"]
    den = float(ctl["baseline_den"])
    return {"controller_steps": int(ctl["step"]),
            "baseline": float(ctl["baseline_num"]) / den if den > 0 else float(ctl["baseline_num"])}
