"""Shared weights of a recurrent language model: the ``rnn`` space's one-shot evaluator.

The language-model counterpart of ``evaluators.supernet.SupernetEvaluator``
(same ``init`` / ``train`` / ``score`` / ``evaluate`` shape, so ENAS proper,
``nas_jax.oneshot.enas``, drives either): the weights are ENAS's
weight-sharing RNN language model (``nas_jax.networks.rnn_supernet``, the cell
a traced argument: one compiled step serves every cell) trained on the Penn
Treebank with truncated BPTT.

* ``train(state, archs, key)``: ``steps`` windows of ``bptt`` tokens, read in
  order from the training stream laid out in ``batch_size`` rows (as the
  language-model task); the hidden state is carried from window to window
  and reset to zeros at the start of every pass over the data (ENAS
  ``src/ptb/main.py`` runs ``train_reset`` at each epoch's end). Each window
  trains one architecture: drawn uniformly from ``archs``, or
  ``in_order=True``: window ``t`` trains ``archs[t]`` (ENAS: a fresh
  controller sample for every minibatch).
* ``score(state, archs, key)``: every architecture on one validation window
  (``batch_size`` rows of ``bptt`` tokens at an offset drawn with ``key``,
  from a zero hidden state: ENAS's ``valid_rl`` data, ``ptb_input_producer(
  randomize=True)``, read right after the states are reset). Returns the
  search scores ``80 / ppl`` (ENAS's reward) and the mean token losses.
* ``evaluate_split(state, arch, split)``: one architecture on every token of
  a split (hidden state carried; ``nas_jax.data.ptb.eval_windows``), the
  shared model's perplexity reported per epoch.

State: ``{"net": {"params", "opt_state", "step"}, "hidden": float32[B, H],
"data_epoch", "data_step"}``, all arrays, so a checkpointed search resumes bit
for bit.

Defaults: the language-model task's training settings
(``nas_jax.tasks.language_model.DEFAULT_CONFIG``, each with its source: lr 20,
grad clip 0.25, batch 64, bptt 35, E = H = 64 on CPU, dropouts off on CPU,
slowness 1e-3). ENAS's search (``scripts/ptb_search.sh``) differs in units:
``--child_lr=0.25`` and ``--child_grad_bound=10`` apply to a loss summed over
the 35 steps of a window (``ptb_enas_child.py``, ``_build_train``), i.e. a
rate of 8.75 and a clip of 0.29 on the mean token loss used here; its batch is
20 and its hidden size 720. The rate decays as ENAS's: times 0.95 per pass
over the data from pass 12 on (``--child_lr_dec_start=12``,
``--child_lr_dec_rate=0.95``), never below ``lr_decay_min``.

Example:
    >>> import os
    >>> from nas_jax.spaces.rnn import RNNSpace
    >>> from nas_jax.tasks.language_model import LanguageModel
    >>> os.makedirs("ptb_lm", exist_ok=True)
    >>> for split in ("train", "valid", "test"):
    ...   with open(f"ptb_lm/ptb.{split}.txt", "w") as f:
    ...     _ = f.write(" the cat sat on the mat \\n the dog sat on the cat \\n" * 20)
    >>> data = LanguageModel().load("ptb", data_dir="ptb_lm")
    >>> ev = LMSupernetEvaluator(RNNSpace(num_nodes=3), {"batch_size": 4, "bptt": 5,
    ...                          "emb_size": 8, "hidden_size": 8}, data=data)
    >>> state = ev.init(jax.random.key(0))
    >>> sorted(state), ev.windows_per_epoch()
    (['data_epoch', 'data_step', 'hidden', 'net'], 13)
    >>> ev.learning_rate(12), round(ev.learning_rate(14), 4)  # ENAS's decay from pass 12 on
    (20.0, 18.05)

  Training and scoring (not run here: each compiles for seconds)::

    archs = np.stack([space.sample(k) for k in jax.random.split(jax.random.key(1), 4)])
    state, metrics = ev.train(state, archs, jax.random.key(2), steps=4, in_order=True)
    scores, losses = ev.score(state, archs, jax.random.key(3))  # 80 / ppl, mean CE
    ev.evaluate_split(state, archs[0], "valid")                 # {"loss", "ppl"}
"""
from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax.data import ptb as ptb_lib
from nas_jax.evaluators.base import Evaluation, Evaluator
from nas_jax.networks import rnn_supernet
from nas_jax.tasks import language_model as lm

#: Settings taken from the language-model task (defaults and sources there).
_TASK_KEYS = ("batch_size", "bptt", "lr", "weight_decay", "grad_clip", "slowness_reg", "emb_size",
              "hidden_size", "dropout_e", "dropout_i", "dropout_x", "dropout_h", "dropout_o")

DEFAULT_CONFIG: dict[str, Any] = {
    **{k: lm.DEFAULT_CONFIG[k] for k in _TASK_KEYS},
    "eval_batch_size": 64,         # rows when a whole split is scored (the LM task's default)
    "steps_per_round": 100,        # windows per evaluate() call (CPU-sized)
    "lr_decay_start": 12,          # ENAS ptb_search.sh --child_lr_dec_start=12 (passes)
    "lr_decay_rate": 0.95,         # ENAS ptb_search.sh --child_lr_dec_rate=0.95
    "lr_decay_min": 0.04,          # ENAS --child_lr_dec_min=0.0005 at lr 0.25: the same ratio at lr 20
    "sharing": "node_input_activation",  # ENAS's code (networks.rnn_supernet)
    "data": None,                  # the runner's loaded TextData (or pass data=)
}


def _check(cfg: dict[str, Any]) -> None:
  unknown = sorted(set(cfg) - set(DEFAULT_CONFIG))
  if unknown:
    raise ValueError(f"unknown lm supernet setting(s) {unknown}; allowed: {sorted(DEFAULT_CONFIG)}")
  lm.resolve_config({k: cfg[k] for k in _TASK_KEYS})  # the task's checks, one line each
  for name in ("eval_batch_size", "steps_per_round", "lr_decay_start"):
    v = cfg[name]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if name == "lr_decay_start" else 1):
      raise ValueError(f"lm supernet {name} must be a positive integer, got {v!r}")
  for name, lo, hi in (("lr_decay_rate", 0.0, 1.0), ("lr_decay_min", 0.0, math.inf)):
    v = cfg[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
      raise ValueError(f"lm supernet {name} must be a number in [{lo}, {hi}], got {v!r}")


class LMSupernetEvaluator(Evaluator):
  """ENAS's shared recurrent language model on a text corpus (see the module docstring).

  Args:
    space: an ``rnn`` space (its ``num_nodes`` and ``output`` rule size the supernet).
    config: see ``DEFAULT_CONFIG``.
    data: the language-model task's ``TextData`` (loaded by the runner).
  """

  name = "lm_supernet"
  needs = ("data",)

  def __init__(self, space, config: dict[str, Any] | None = None, *, data: Any = None):
    config = dict(config or {})
    if data is not None:
      config["data"] = data
    super().__init__(space, {**DEFAULT_CONFIG, **config})
    cfg = self.config
    _check(cfg)
    if not isinstance(cfg["data"], lm.TextData):
      raise ValueError("lm supernet needs the language-model task's data (TextData, e.g. "
                       "tasks.get_task('language_model').load('ptb', data_dir=...)); got "
                       f"{type(cfg['data']).__name__}")
    self.data = cfg["data"]
    self.net_config = rnn_supernet.config(
        vocab_size=self.data.vocab_size, emb_size=cfg["emb_size"], hidden_size=cfg["hidden_size"],
        num_nodes=int(getattr(space, "num_nodes", rnn_supernet.ENAS_NUM_NODES)),
        output=getattr(space, "output", "loose_ends"), sharing=cfg["sharing"],
        **{k: float(cfg[k]) for k in _TASK_KEYS if k.startswith("dropout_")})
    self.tx = lm.make_optimizer(cfg)
    b, t = cfg["batch_size"], cfg["bptt"]
    self._train_rows = ptb_lib.batchify(self.data.split("train"), b) \
        if len(self.data.split("train")) // b >= 2 else None
    if self._train_rows is None or ptb_lib.num_bptt_batches(self._train_rows, t, drop_remainder=True) < 1:
      raise ValueError(f"the training split has {len(self.data.split('train'))} tokens, too few for "
                       f"batch_size {b} x bptt {t}; lower them")
    valid = self.data.split("valid")
    if len(valid) // b < t + 1:
      raise ValueError(f"the validation split has {len(valid)} tokens, too few for one scoring "
                       f"window of batch_size {b} x bptt {t}; lower them")
    self._valid_rows = ptb_lib.batchify(valid, b)
    self._compiled = None

  def prepare(self) -> None:
    """Nothing left to check (the data sizes are checked at construction)."""

  def windows_per_epoch(self) -> int:
    """Training windows in one pass over the data (the last, shorter one dropped)."""
    return ptb_lib.num_bptt_batches(self._train_rows, self.config["bptt"], drop_remainder=True)

  def learning_rate(self, data_epoch: int) -> float:
    """ENAS's staircase decay: ``lr * rate ** max(0, pass - start)``, floored at ``lr_decay_min``."""
    cfg = self.config
    drops = max(0, int(data_epoch) - cfg["lr_decay_start"])
    lr = float(cfg["lr"])
    return max(lr * float(cfg["lr_decay_rate"]) ** drops, min(lr, float(cfg["lr_decay_min"])))

  def _steps(self):
    """The jitted train step, window scorer and split evaluator, built once."""
    if self._compiled is None:
      cfg, net_cfg = self.config, self.net_config
      # donate=False: a step never invalidates the caller's state (the runner may save it).
      train_step = rnn_supernet.make_train_step(net_cfg, self.tx, slowness_reg=cfg["slowness_reg"],
                                                donate=False)
      eval_archs = rnn_supernet.make_eval_archs(net_cfg)

      def split_step(params, arch, x, y, mask, hidden):
        logits, new_hidden, _ = rnn_supernet.apply(params, arch, x, hidden, config=net_cfg)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        return jnp.sum(losses * mask), jnp.sum(mask), new_hidden

      self._compiled = (train_step, eval_archs, jax.jit(split_step))
    return self._compiled

  def init(self, key: jax.Array) -> dict[str, Any]:
    """Shared parameters and optimizer state, a zero hidden state, the data position."""
    params = rnn_supernet.init(key, self.net_config)
    cfg = self.config
    return {"net": rnn_supernet.init_train_state(params, self.tx),
            "hidden": np.zeros((cfg["batch_size"], cfg["hidden_size"]), np.float32),
            "data_epoch": np.int64(0), "data_step": np.int64(0)}

  def train(self, state: dict[str, Any], archs: np.ndarray, key: jax.Array,
            steps: int | None = None, *, in_order: bool = False) -> tuple[dict[str, Any], dict[str, float]]:
    """``steps`` truncated-BPTT windows, each on one architecture of ``archs``.

    Args:
      state: from ``init`` or a previous call.
      archs: int32[K, N, 2].
      key: draws the uniform picks (unless ``in_order``) and the dropout masks.
      steps: windows (default ``steps_per_round``; with ``in_order``, ``K``).
      in_order: window ``t`` trains ``archs[t]`` (then ``K`` must equal ``steps``).

    Returns:
      ``(state, metrics)``: ``train_loss`` (mean token cross-entropy over the
      finite steps), ``train_ppl`` and ``nonfinite`` (skipped steps).
    """
    archs = np.asarray(archs, np.int32)
    if in_order:
      steps = len(archs) if steps is None else steps
      if steps != len(archs):
        raise ValueError(f"in_order training takes one architecture per step: got {len(archs)} "
                         f"architectures for {steps} steps")
      picks = np.arange(steps)
    else:
      steps = self.config["steps_per_round"] if steps is None else steps
      picks = np.asarray(jax.random.randint(jax.random.fold_in(key, 0), (steps,), 0, len(archs)))
    train_step, _, _ = self._steps()
    k_drop = jax.random.fold_in(key, 1)
    per_epoch, bptt = self.windows_per_epoch(), self.config["bptt"]
    net, hidden = state["net"], state["hidden"]
    epoch, step = int(state["data_epoch"]), int(state["data_step"])
    out = []
    for t in range(steps):
      if step >= per_epoch:  # a new pass over the data: the hidden state starts at zero
        epoch, step = epoch + 1, 0
        hidden = np.zeros_like(np.asarray(hidden))
      x = self._train_rows[:, step * bptt:(step + 1) * bptt]
      y = self._train_rows[:, step * bptt + 1:(step + 1) * bptt + 1]
      net, hidden, m = train_step(net, archs[picks[t]], x, y, hidden, jax.random.fold_in(k_drop, t),
                                  jnp.float32(self.learning_rate(epoch)))
      out.append(m)
      step += 1
    out = jax.device_get(out)
    losses = [float(m["loss"]) for m in out if bool(m["finite"])]
    mean = float(np.mean(losses)) if losses else float("nan")
    new_state = {"net": net, "hidden": hidden, "data_epoch": np.int64(epoch), "data_step": np.int64(step)}
    return new_state, {"train_loss": mean, "train_ppl": math.exp(mean) if losses else float("nan"),
                       "nonfinite": float(len(out) - len(losses))}

  def _valid_window(self, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """ENAS's ``valid_rl`` window: all rows, ``bptt`` tokens at a random offset."""
    bptt = self.config["bptt"]
    i = int(jax.random.randint(key, (), 0, self._valid_rows.shape[1] - bptt))
    return self._valid_rows[:, i:i + bptt], self._valid_rows[:, i + 1:i + bptt + 1]

  def score(self, state: dict[str, Any], archs: np.ndarray,
            key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """``80 / ppl`` and the mean token loss of each arch on one validation window drawn with ``key``."""
    _, eval_archs, _ = self._steps()
    x, y = self._valid_window(key)
    cfg = self.config
    hidden = np.zeros((cfg["batch_size"], cfg["hidden_size"]), np.float32)
    loss, _ = eval_archs(state["net"]["params"], np.asarray(archs, np.int32), x, y, hidden)
    loss = np.asarray(loss, np.float64)
    return lm.REWARD_CONSTANT * np.exp(-loss), loss

  def evaluate_split(self, state: dict[str, Any], arch: np.ndarray, split: str = "valid") -> dict[str, float]:
    """``{"loss", "ppl"}`` of ``arch`` under the shared weights over every token of ``split``."""
    _, _, split_step = self._steps()
    cfg = self.config
    hidden = jnp.zeros((cfg["eval_batch_size"], cfg["hidden_size"]), jnp.float32)
    arch = np.asarray(arch, np.int32)
    sums = []
    for x, y, mask in ptb_lib.eval_windows(self.data.split(split), cfg["eval_batch_size"], cfg["bptt"]):
      loss_sum, count, hidden = split_step(state["net"]["params"], arch, x, y, mask, hidden)
      sums.append((loss_sum, count))
    total = sum(float(l) for l, _ in jax.device_get(sums))
    count = sum(float(n) for _, n in jax.device_get(sums))
    loss = total / count
    return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else float("inf")}

  def evaluate(self, state: dict[str, Any], archs: np.ndarray,
               key: jax.Array) -> tuple[Evaluation, dict[str, Any]]:
    """Trains the shared weights on ``archs`` (uniform picks), then scores each on one window."""
    archs = np.stack([self.space.validate(a) for a in np.asarray(archs)])
    k_train, k_score = jax.random.split(key)
    t0 = time.perf_counter()
    state, train_metrics = self.train(state, archs, k_train)
    scores, losses = self.score(state, archs, k_score)
    per_arch = (time.perf_counter() - t0) / len(archs)
    ppls = [float(math.exp(l)) for l in losses]
    info = [{"supernet_valid_ppl": p, **train_metrics,
             "metrics": {"supernet_valid_ppl": p}} for p in ppls]  # metrics -> history.jsonl
    return Evaluation(scores=scores, costs=np.full(len(archs), per_arch), info=info), state
