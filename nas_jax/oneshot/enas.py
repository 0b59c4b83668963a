"""ENAS proper (Pham et al., ICML 2018): the controller alternating with shared weights.

One search step is one round of ENAS's alternation (``src/cifar10/main.py``,
``src/ptb/main.py``):

1. **shared weights**: ``child_steps`` minibatches, each on a fresh
   architecture sampled by the controller (the ``child_steps`` samples are
   drawn at once, before the round: the controller does not change during
   it, so this is the distribution of one draw per minibatch);
2. **controller**: ``controller_steps`` REINFORCE steps
   (``strategies.enas.ENAS.tell``), each on ``batch_size`` sampled
   architectures scored on one validation batch with the shared weights.

The shared weights are chosen by the space's network family:

* image spaces (``nasnet``, ``nb201``: ``networks.family(name).supernet``):
  ``evaluators.supernet.SupernetEvaluator``; reward = the batch's accuracy
  (%); the rate follows ENAS's cosine with warm restarts (``T_0 = 10``,
  ``T_mul = 2`` epochs, 0.05 -> 0.0005; ``scripts/cifar10_micro_search.sh``),
  ``restart_epochs: None`` gives the single cosine over the search;
* the recurrent-cell space (``rnn``, whose family serves the language-model
  task): ``evaluators.lm_supernet.LMSupernetEvaluator``, ENAS's shared RNN
  language model trained with truncated BPTT (hidden state carried across
  windows, reset at each pass over the data); reward = ``80 / ppl`` of the
  cell on one validation window (ENAS ``ptb_enas_controller.py``); the
  controller's ``ptb`` preset (``scripts/ptb_search.sh``).

``derive`` is ENAS's derivation: ``derive_samples`` architectures sampled
from the controller (with a key fixed at ``init``), each scored on one
validation batch, the best kept; it is then trained from scratch by the
runner's final training. ``score`` is the derived architecture's figure
under the shared weights (search-time, never a final figure): accuracy on one
validation batch (images), or perplexity over the whole validation split
(``valid_ppl``; search score ``80 / valid_ppl``) for the language model.

Defaults and sources: ``controller_steps`` 30 (CIFAR micro,
``--controller_train_steps=30``; PTB: 100 per epoch, ``ptb_search.sh``),
``derive_samples`` 10 (``main.py`` prints 10 sampled architectures with their
reward after each epoch), the controller's settings the strategy's presets
(``nas_jax.strategies.enas``: ``cifar_micro`` on images, ``cifar_macro`` on
``macro`` (with its skip-density penalty), ``ptb`` on ``rnn``).
``child_steps`` is CPU-sized (ENAS: one pass over the data per round, ~280
steps on CIFAR-10, ~1,300 windows on PTB at batch 20).

State: ``{"controller": ENAS strategy state, "supernet": the shared weights'
state (weights, optimizer, data position; the hidden state for the language
model), "derive_key": uint32 key data}``, all arrays, so the runner
checkpoints it and resumes it exactly.

Example:
    >>> import nas_jax.data
    >>> from nas_jax import registry
    >>> data = nas_jax.data.load_dataset("digits", train_size=128, valid_fraction=0.25)
    >>> method = ENASOneShot(registry.get_space("nb201"), {
    ...     "child_steps": 2, "controller_steps": 1, "epochs": 1,
    ...     "supernet": {"init_channels": 4, "layers": 1, "batch_size": 32}}, data=data)
    >>> method.config["controller"]["preset"], method.steps_per_epoch()
    ('cifar_micro', 1)
    >>> method.evaluator.config["lr_restart_rounds"], method.evaluator.config["lr_min"]
    (10, 0.0005)

  A search step (not run here: the supernet's train step compiles for tens of
  seconds on a 2-core CPU)::

    state = method.init(jax.random.key(0))
    state, metrics = method.step(state, jax.random.key(1))
    arch = method.derive(state)
    method.score(state, arch, jax.random.key(2))["search_score"]

  On Penn Treebank: ``ENASOneShot(registry.get_space("rnn"), config,
  data=tasks.get_task("language_model").load("ptb", data_dir=...))``, or
  ``experiments/run.py --strategy enas_oneshot --space rnn --dataset ptb
  --config experiments/configs/enas_ptb.py``.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from nas_jax import networks
from nas_jax.evaluators.supernet import SupernetEvaluator
from nas_jax.oneshot.base import OneShotMethod, State
from nas_jax.strategies import enas as enas_lib
from nas_jax.tasks.language_model import REWARD_CONSTANT

#: ENAS's cosine with warm restarts on the CIFAR micro search
#: (scripts/cifar10_micro_search.sh: --child_lr_max=0.05 --child_lr_min=0.0005).
ENAS_LR_MIN = 0.0005


def _positive_int(cfg: dict[str, Any], name: str) -> int:
  value = cfg[name]
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"enas_oneshot {name} must be a positive integer, got {value!r}")
  return int(value)


def uses_language_model(space) -> bool:
  """Whether the space's networks are language models (the shared weights are then an RNN LM).

  Example:
    >>> from nas_jax import registry
    >>> uses_language_model(registry.get_space("rnn")), uses_language_model(registry.get_space("nb201"))
    (True, False)
  """
  return "language_model" in (networks.served_tasks(space.name) or ())


#: The controller preset per space: the ENAS strategy's (``strategies.enas.SPACE_PRESETS``;
#: other spaces get ``cifar_micro``) except on ``nb201``, whose own preset is shaped for the
#: tabular harness (reward in %, one update per architecture), while ENAS proper on nb201 is
#: ENAS's CIFAR search with shared weights.
ONESHOT_PRESETS = {**enas_lib.SPACE_PRESETS, "nb201": "cifar_micro"}


class ENASOneShot(OneShotMethod):
  """ENAS: controller steps alternating with shared-weight training (``enas_oneshot``).

  Args:
    space: a space whose network family has a weight-sharing supernet
      (``nasnet``, ``nb201``) or the recurrent-cell space ``rnn``.
    config: ``epochs`` (the budget; the shared weights' schedule length),
      ``steps_per_epoch``, ``child_steps``, ``controller_steps``,
      ``derive_samples``, ``restart_epochs`` / ``restart_mult`` (image
      spaces: ENAS's cosine restarts, None: one cosine), ``controller``
      (ENAS strategy settings; preset ``cifar_micro`` on images,
      ``cifar_macro`` on ``macro``, ``ptb`` on ``rnn``) and ``supernet`` (``SupernetEvaluator`` or
      ``LMSupernetEvaluator`` settings; their schedule fields are set from
      the others).
    data: the task's data (loaded by the runner).
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
        "restart_epochs": 10,      # ENAS cifar10_micro_search.sh --child_lr_T_0=10 (images)
        "restart_mult": 2,         # ENAS cifar10_micro_search.sh --child_lr_T_mul=2
        "controller": {},          # strategies.enas settings; preset by task (class docstring)
        "supernet": {},            # the shared weights' settings (evaluator DEFAULT_CONFIG)
    }

  def __init__(self, space, config: dict[str, Any] | None = None, *, data: Any = None):
    config = dict(config or {})
    for group in ("controller", "supernet"):
      if not isinstance(config.get(group, {}), dict):
        raise ValueError(f"enas_oneshot {group} must be a dict of settings, got {config[group]!r}")
    self.language_model = uses_language_model(space)
    if self.language_model and config.get("restart_epochs") is not None:
      raise ValueError("enas_oneshot restart_epochs applies to image spaces; the language model "
                       "follows ENAS's PTB decay (supernet.lr_decay_start / lr_decay_rate)")
    config["controller"] = {"preset": ONESHOT_PRESETS.get(space.name, "cifar_micro"),
                            **config.get("controller", {})}
    super().__init__(space, config, data=data)
    cfg = self.config
    for name in ("epochs", "steps_per_epoch", "child_steps", "controller_steps", "derive_samples",
                 "restart_mult"):
      _positive_int(cfg, name)
    if cfg["restart_epochs"] is not None:
      _positive_int(cfg, "restart_epochs")
    self.strategy = enas_lib.ENAS(space, cfg["controller"])
    if self.language_model:
      from nas_jax.evaluators.lm_supernet import LMSupernetEvaluator  # pylint: disable=import-outside-toplevel
      fixed = {"steps_per_round": cfg["child_steps"]}
      self.evaluator_cls = LMSupernetEvaluator
    else:
      fixed = {"steps_per_round": cfg["child_steps"],
               "total_rounds": cfg["epochs"] * cfg["steps_per_epoch"],
               "lr_restart_rounds": None if cfg["restart_epochs"] is None
                                    else cfg["restart_epochs"] * cfg["steps_per_epoch"],
               "lr_restart_mult": cfg["restart_mult"]}
      self.evaluator_cls = SupernetEvaluator
    reserved = set(fixed) & set(cfg["supernet"])
    if reserved:
      raise ValueError(f"enas_oneshot supernet settings {sorted(reserved)} are set from "
                       "child_steps, steps_per_epoch, epochs and restart_epochs; set those instead")
    defaults = {} if self.language_model else {"lr_min": ENAS_LR_MIN}
    self.evaluator = self.evaluator_cls(space, {**defaults, **cfg["supernet"], **fixed}, data=data)

  def steps_per_epoch(self) -> int:
    return int(self.config["steps_per_epoch"])

  def init(self, key: jax.Array) -> State:
    """Controller state, shared-weights state (weights, optimizer, data position), derive key."""
    k_ctl, k_net, k_derive = jax.random.split(key, 3)
    return {"controller": self.strategy.init(k_ctl), "supernet": self.evaluator.init(k_net),
            "derive_key": np.asarray(jax.random.key_data(k_derive))}

  def _sample(self, state: State, key: jax.Array, n: int) -> np.ndarray:
    return self.strategy.sample(state["controller"], key, n)

  def step(self, state: State, key: jax.Array) -> tuple[State, dict[str, float]]:
    """One alternation: ``child_steps`` shared-weight steps (a fresh sample each), then ``controller_steps``."""
    cfg = self.config
    k_arch, k_train, k_ask, k_score = jax.random.split(key, 4)
    archs = self._sample(state, k_arch, cfg["child_steps"])
    net, train_metrics = self.evaluator.train(state["supernet"], archs, k_train, in_order=True)
    ctl = state["controller"]
    rewards, losses = [], []
    for c in range(cfg["controller_steps"]):
      asked, ctl = self.strategy.ask(ctl, jax.random.fold_in(k_ask, c))
      score, loss = self.evaluator.score(net, asked, jax.random.fold_in(k_score, c))
      ctl = self.strategy.tell(ctl, asked, score)
      rewards.append(float(np.mean(score)))
      losses.append(np.asarray(loss, np.float64))
    new = {"controller": ctl, "supernet": net, "derive_key": state["derive_key"]}
    if self.language_model:
      seen = {"controller_reward": float(np.mean(rewards)),
              "controller_valid_ppl": float(np.mean(np.exp(np.concatenate(losses))))}
    else:
      seen = {"controller_valid_acc": float(np.mean(rewards))}
    return new, {**train_metrics, **seen, "controller_baseline": self.summary(new)["baseline"]}

  def _derive_with_scores(self, state: State) -> tuple[np.ndarray, np.ndarray]:
    key = jax.random.wrap_key_data(np.asarray(state["derive_key"], np.uint32))
    archs = self._sample(state, key, self.config["derive_samples"])
    score, _ = self.evaluator.score(state["supernet"], archs, jax.random.fold_in(key, 1))
    return archs, score

  def derive(self, state: State) -> np.ndarray:
    """ENAS's derivation: the best of ``derive_samples`` sampled architectures on a validation batch."""
    archs, score = self._derive_with_scores(state)
    return archs[int(np.argmax(score))]

  def score(self, state: State, arch: np.ndarray, key: jax.Array) -> dict[str, Any]:
    """The derived arch under the shared weights.

    Images: accuracy (%) on one validation batch drawn with ``key``. Language
    model: perplexity over the whole validation split (``key`` unused),
    search score ``80 / valid_ppl``.
    """
    if self.language_model:
      m = self.evaluator.evaluate_split(state["supernet"], arch, "valid")
      return {"search_score": REWARD_CONSTANT / m["ppl"], "valid_ppl": m["ppl"],
              "valid_loss": m["loss"]}
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

