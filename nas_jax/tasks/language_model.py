"""Word-level language modelling on the Penn Treebank: the ``language_model`` task.

Data: ``load("ptb", data_dir=...)`` reads Mikolov's PTB (``nas_jax.data.ptb``;
the directory is ``data_dir``, else ``$NAS_JAX_PTB_DIR``) into a
``TextData``. Loss: mean token cross-entropy. Metric: perplexity
``exp(mean token cross-entropy)`` (``valid_ppl``, lower is better). Search
score: ENAS's controller reward ``80 / perplexity``
(``src/ptb/ptb_enas_controller.py``, ``build_trainer``: ``reward = 80.0 /
valid_ppl``).

Training (``train_epoch``), as DARTS ``rnn/train.py`` and ENAS
``src/ptb/main.py``: the training stream is laid out as ``batch_size``
parallel rows (``batchify``) and read in order in windows of ``bptt`` tokens;
the hidden state is carried from one window to the next along each row
(truncated BPTT: no gradient crosses a window boundary). The hidden state is
**reset to zeros at the start of every epoch** and is not part of the
checkpointed state, so the training state is ``{"params", "opt_state"}`` and
a run resumed after epoch k repeats the uninterrupted run bit for bit. The
last, shorter window of an epoch is dropped (fixed shapes: one compiled step;
at most ``bptt - 1`` of ~14,500 columns per row on PTB at batch 64). The data
order is the same every epoch (the papers do not shuffle), so ``data_seed``
does not change the batches; the dropout masks of step ``s`` of epoch ``e``
come from ``fold_in(key, e * steps_per_epoch + s)``.

Optimiser: plain SGD at a constant learning rate (DARTS trains with SGD at
lr 20 and later switches to averaged SGD, which is not implemented here),
gradients clipped to global norm ``grad_clip`` then L2 weight decay added (the
order of PyTorch's ``clip_grad_norm`` + ``SGD(weight_decay)``). Loss: cross
entropy plus ``slowness_reg * mean((h_t - h_{t-1})^2)`` over the cell outputs
of the window (DARTS ``--beta``, ENAS ``--child_rnn_slowness_reg``). DARTS's
random BPTT lengths (``N(35, 5)``) are not used: ENAS's fixed 35 keeps one
compiled step.

Evaluation (``evaluate``): ``eval_windows`` lays a split out in
``eval_batch_size`` rows so that every token but the first is predicted once
(padded and masked windows), the hidden state carried from window to window
and starting at zero; ``ppl = exp(sum of token losses / (n - 1))``.
(DARTS evaluates with batch 10 and 1, dropping ``batchify``'s tail; the
perplexity depends slightly on the batch size through the hidden-state
resets at row starts.)

One jitted train step and one jitted eval step per (model, optimiser and loss
settings), memoised (``get_steps``); the learning rate is a traced argument.
A step whose loss or gradients are not finite is skipped (parameters,
optimiser state and hidden state unchanged) and counted; past
``max_nonfinite`` such steps the run stops with a ``RuntimeError``.

Defaults (``DEFAULT_CONFIG``) are CPU-sized where marked; ``PAPER_CONFIG``
holds DARTS's final PTB training (E = H = 850, batch 64, its dropouts, weight
decay 8e-7; DARTS trains up to 8000 epochs with early stopping, which is not
reproduced).

Example:
    A toy corpus in Penn Treebank's layout (the real one: ``data_dir`` or
    ``$NAS_JAX_PTB_DIR``):

    >>> import os
    >>> os.makedirs("ptb")
    >>> for split in ("train", "valid", "test"):
    ...   with open(f"ptb/ptb.{split}.txt", "w") as f:
    ...     _ = f.write(" the cat sat on the mat \\n the dog sat on the cat \\n" * 3)
    >>> task = LanguageModel()
    >>> data = task.load("ptb", data_dir="ptb")
    >>> task.describe(data)["vocab_size"], task.describe(data)["sizes"]["train"]  # 6 words and <eos>
    (7, 42)
    >>> cfg = task.resolve_train_config({"epochs": 1})
    >>> task.score(80.0)
    1.0
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import math
import time
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_jax.data import ptb as ptb_lib
from nas_jax.tasks.base import Task

#: ENAS's reward constant: ``reward = 80.0 / valid_ppl`` (ENAS
#: ``src/ptb/ptb_enas_controller.py``, ``PTBEnasController.build_trainer``).
REWARD_CONSTANT = 80.0
#: Length of ``dummy_input`` (ENAS/DARTS bptt); parameter shapes do not depend on it.
DUMMY_LENGTH = 35
SPLITS = ("train", "valid", "test")

DEFAULT_CONFIG: dict[str, Any] = {
    # Schedule and batch. CPU default: 2 epochs. Papers: DARTS final 8000
    # epochs max (early stopping), ENAS final 2000 (scripts/ptb_final.sh),
    # DARTS search 50. Batch 64 (DARTS rnn/train.py, ENAS ptb_final.sh);
    # bptt 35 (both). Evaluation batch: CPU default 64 (DARTS: 10 valid, 1 test).
    "epochs": 2,
    "batch_size": 64,
    "eval_batch_size": 64,
    "bptt": 35,
    # Optimiser: SGD, constant lr 20 (DARTS rnn/train.py, ENAS ptb_final.sh
    # --child_lr=20), gradient clipping by global norm 0.25 (DARTS --clip,
    # ENAS --child_grad_bound; measured: with lr 20, clipping at 1.0 diverges
    # on PTB within 25 steps), weight decay 8e-7 (DARTS --wdecay; ENAS 5e-7).
    "lr": 20.0,
    "weight_decay": 8e-7,
    "grad_clip": 0.25,
    # Slowness (temporal activation) regularisation 1e-3 (DARTS --beta,
    # ENAS --child_rnn_slowness_reg); 0 disables it.
    "slowness_reg": 1e-3,
    # Network size. CPU default: E = H = 64. Papers: 850 (DARTS final), 300
    # (DARTS search), 748 (ENAS final), 720 (ENAS search). The tied decoder
    # (H x 10,000 per token) dominates a step; measured per train step (batch
    # 64 x 35, 12-node cell, 2-core CPU shared with other jobs, load ~7-9):
    # H=64 1.4 s, H=128 2.4 s, H=200 3.7 s; 414 steps per PTB epoch.
    "emb_size": 64,
    "hidden_size": 64,
    # Dropout probabilities. CPU default: none. A 64-unit model trained for 2
    # epochs underfits; measured on PTB (random 12-node cell, valid ppl after
    # epochs 1 / 2): no dropout 360 / 227, half of DARTS's values 384 / 267.
    # Papers, DARTS rnn/train.py: words (e) 0.1, embedding output (i) 0.2,
    # cell input (x) 0.75, hidden (h) 0.25, output (o) 0.75 (PAPER_CONFIG);
    # ENAS ptb_final.sh keep probabilities e 0.79, x 0.25, h 0.75, o 0.24
    # (dropout 0.21 / 0.75 / 0.25 / 0.76, no i).
    "dropout_e": 0.0,
    "dropout_i": 0.0,
    "dropout_x": 0.0,
    "dropout_h": 0.0,
    "dropout_o": 0.0,
    # Splits: train on train_split, report valid_split each epoch (None:
    # skipped) and the test split at the end (eval_test).
    "train_split": "train",
    "valid_split": "valid",
    "eval_test": True,
    # Robustness and plumbing.
    "max_nonfinite": 10,
    "data_seed": None,  # accepted for uniformity; PTB batches do not depend on it
}

PAPER_CONFIG: dict[str, Any] = dict(
    DEFAULT_CONFIG, epochs=8000, emb_size=850, hidden_size=850, dropout_e=0.1, dropout_i=0.2,
    dropout_x=0.75, dropout_h=0.25, dropout_o=0.75)

_NETWORK_KEYS = ("emb_size", "hidden_size", "dropout_e", "dropout_i", "dropout_x", "dropout_h",
                 "dropout_o")


@dataclasses.dataclass(frozen=True, eq=False)
class TextData:
  """A tokenised corpus and its name (the ``language_model`` task's data).

  Attributes:
    name: dataset spec (``"ptb"``).
    corpus: the ``nas_jax.data.ptb.Corpus``.
  """
  name: str
  corpus: ptb_lib.Corpus

  @property
  def vocab_size(self) -> int:
    return self.corpus.vocab_size

  def split(self, split: str) -> np.ndarray:
    """The id stream of ``split``; ``ValueError`` for an unknown name."""
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r} of {self.name!r}; choose one of {list(SPLITS)}")
    return getattr(self.corpus, split)


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
  return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v)


def resolve_config(config: dict[str, Any] | None) -> dict[str, Any]:
  """``DEFAULT_CONFIG`` updated by ``config``, checked.

  Raises:
    ValueError: an unknown key or a value out of range (one line naming it).

  Example:
    >>> resolve_config({"epochs": 1})["grad_clip"]
    0.25
  """
  config = dict(config or {})
  unknown = sorted(set(config) - set(DEFAULT_CONFIG))
  if unknown:
    raise ValueError(f"unknown training config keys {unknown} for the language_model task; "
                     f"known: {sorted(DEFAULT_CONFIG)}")
  cfg = dict(DEFAULT_CONFIG, **config)

  def check(name, ok, what):
    if not ok:
      raise ValueError(f"training config {name}={cfg[name]!r}: must be {what}")

  for name in ("epochs", "batch_size", "eval_batch_size", "bptt", "emb_size", "hidden_size"):
    check(name, _is_int(cfg[name]) and cfg[name] >= 1, "an int >= 1")
  check("max_nonfinite", _is_int(cfg["max_nonfinite"]) and cfg["max_nonfinite"] >= 0, "an int >= 0")
  for name in ("lr", "weight_decay", "slowness_reg"):
    check(name, _is_num(cfg[name]) and cfg[name] >= 0, "a finite number >= 0")
  check("lr", cfg["lr"] > 0, "> 0")
  check("grad_clip", cfg["grad_clip"] is None or (_is_num(cfg["grad_clip"]) and cfg["grad_clip"] >= 0),
        "None or >= 0")
  for name in ("dropout_e", "dropout_i", "dropout_x", "dropout_h", "dropout_o"):
    check(name, _is_num(cfg[name]) and 0 <= cfg[name] < 1, "a probability in [0, 1)")
  check("hidden_size", cfg["hidden_size"] == cfg["emb_size"],
        f"equal to emb_size={cfg['emb_size']} (the decoder is tied to the embedding)")
  check("eval_test", isinstance(cfg["eval_test"], bool), "True or False")
  check("data_seed", cfg["data_seed"] is None or _is_int(cfg["data_seed"]), "None or an int")
  check("train_split", cfg["train_split"] in SPLITS, f"one of {list(SPLITS)}")
  check("valid_split", cfg["valid_split"] is None or cfg["valid_split"] in SPLITS,
        f"None or one of {list(SPLITS)}")
  return cfg


def make_optimizer(cfg: dict[str, Any]) -> optax.GradientTransformation:
  """Clipping by global norm, then L2 weight decay (plain SGD direction).

  The train step multiplies the result by the (traced) learning rate.
  """
  parts = []
  if cfg["grad_clip"]:
    parts.append(optax.clip_by_global_norm(cfg["grad_clip"]))
  if cfg["weight_decay"]:
    parts.append(optax.add_decayed_weights(cfg["weight_decay"]))
  return optax.chain(*parts) if parts else optax.identity()


def make_steps(model, tx: optax.GradientTransformation, cfg: dict[str, Any]):
  """The jitted ``train_step`` and ``eval_step`` of ``model``.

  ``train_step(state, hidden, inputs, targets, key, lr) -> (state, hidden,
  metrics)``: ``state`` is ``{"params", "opt_state"}`` (donated, as is
  ``hidden``); ``metrics`` holds ``loss`` (mean token cross-entropy of the
  window, without the regulariser) and ``finite`` (False: the step was
  skipped). ``eval_step(params, hidden, inputs, targets, mask) -> (loss_sum,
  count, hidden)``.
  """
  beta = float(cfg["slowness_reg"])

  def loss_fn(params, hidden, inputs, targets, key):
    chex.assert_equal_shape([inputs, targets])
    if beta:
      (logits, new_hidden), inter = model.apply(
          {"params": params}, inputs, hidden, train=True, rngs={"dropout": key},
          mutable=["intermediates"])
      outs = inter["intermediates"]["cell_outputs"][0]
      reg = beta * jnp.mean(jnp.square(outs[:, 1:] - outs[:, :-1]))
    else:
      logits, new_hidden = model.apply({"params": params}, inputs, hidden, train=True,
                                       rngs={"dropout": key})
      reg = 0.0
    ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets))
    return ce + reg, (ce, new_hidden)

  def train_step(state, hidden, inputs, targets, key, lr):
    (_, (ce, new_hidden)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state["params"], hidden, inputs, targets, key)
    finite = jnp.isfinite(ce) & jnp.all(jnp.asarray(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    updates, new_opt = tx.update(grads, state["opt_state"], state["params"])
    new_params = jax.tree.map(lambda p, u: p - lr * u, state["params"], updates)
    new_state = dict(state, params=new_params, opt_state=new_opt)
    # Skip a non-finite step: the old state and hidden state are kept.
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    new_hidden = jnp.where(finite, new_hidden, hidden)
    return new_state, new_hidden, {"loss": ce, "finite": finite}

  def eval_step(params, hidden, inputs, targets, mask):
    logits, new_hidden = model.apply({"params": params}, inputs, hidden, train=False)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    return jnp.sum(losses * mask), jnp.sum(mask), new_hidden

  return jax.jit(train_step, donate_argnums=(0, 1)), jax.jit(eval_step)


_STEP_CACHE: "collections.OrderedDict[Any, tuple]" = collections.OrderedDict()
_STEP_CACHE_SIZE = 8
_STEP_KEYS = ("grad_clip", "weight_decay", "slowness_reg")


def get_steps(model, cfg: dict[str, Any]):
  """``(tx, train_step, eval_step)`` of ``model``, memoised per (model, settings).

  Training the same (hashable) module again with the same optimiser and loss
  settings reuses the compiled steps. Keeps the last 8.
  """
  try:
    key = (model, tuple(cfg[k] for k in _STEP_KEYS))
    hash(key)
  except TypeError:  # an unhashable module: no memoisation
    tx = make_optimizer(cfg)
    return (tx,) + make_steps(model, tx, cfg)
  if key in _STEP_CACHE:
    _STEP_CACHE.move_to_end(key)
    return _STEP_CACHE[key]
  tx = make_optimizer(cfg)
  entry = (tx,) + make_steps(model, tx, cfg)
  _STEP_CACHE[key] = entry
  while len(_STEP_CACHE) > _STEP_CACHE_SIZE:
    _STEP_CACHE.popitem(last=False)
  return entry


# flax's init runs the forward pass once: compile it cheaply (as the images task does).
_INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0,
                          "xla_llvm_disable_expensive_passes": True}


def _hidden_size(model) -> int:
  return int(model.hidden_size)


class LanguageModel(Task):
  """Word-level language modelling (see the module docstring).

  Example:
    >>> task = LanguageModel()
    >>> task.metric, task.higher_is_better, task.score(40.0)
    ('valid_ppl', False, 2.0)
  """

  name = "language_model"
  metric = "valid_ppl"
  higher_is_better = False

  # --- data -----------------------------------------------------------------
  def load(self, spec: str, *, data_dir: str | None = None, train_tokens: int | None = None,
           valid_tokens: int | None = None, test_tokens: int | None = None,
           **options: Any) -> TextData:
    """Loads ``"ptb"`` from ``data_dir`` (else ``$NAS_JAX_PTB_DIR``).

    ``train_tokens`` / ``valid_tokens`` / ``test_tokens`` keep only the first
    that many tokens of a split (quick runs, tests; the vocabulary stays the
    full training file's).

    Raises:
      ValueError: unknown spec or option; no directory, or one missing
        ``ptb.train.txt``, ``ptb.valid.txt`` or ``ptb.test.txt`` (the
        message names ``--data-dir`` and ``$NAS_JAX_PTB_DIR``).
    """
    if spec != "ptb":
      raise ValueError(f"unknown language-model dataset {spec!r}; the language_model task knows 'ptb'")
    if options:
      raise ValueError(f"unknown options {sorted(options)} for dataset 'ptb'; it takes data_dir, "
                       "train_tokens, valid_tokens, test_tokens")
    cuts = {"train": train_tokens, "valid": valid_tokens, "test": test_tokens}
    for name, n in cuts.items():
      if n is not None and (not _is_int(n) or n < 2):
        raise ValueError(f"{name}_tokens must be an int >= 2 or None, got {n!r}")
    corpus = ptb_lib.load_ptb(data_dir)
    for name, n in cuts.items():
      if n is not None:
        setattr(corpus, name, getattr(corpus, name)[:n])
    return TextData(name=spec, corpus=corpus)

  def accepts(self, data: Any) -> bool:
    return isinstance(data, TextData)

  def describe(self, data: TextData) -> dict[str, Any]:
    c = data.corpus
    digest = hashlib.sha256()
    for s in SPLITS:
      digest.update(np.ascontiguousarray(getattr(c, s), np.int32).tobytes())
    return {"task": self.name, "name": data.name, "vocab_size": c.vocab_size,
            "sizes": {s: int(len(getattr(c, s))) for s in SPLITS},
            "ids": digest.hexdigest()[:12]}

  def network_kwargs(self, data: TextData) -> dict[str, Any]:
    return {"vocab_size": data.vocab_size}

  def dummy_input(self, data: TextData) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((1, DUMMY_LENGTH), jnp.int32)

  def has_split(self, data: TextData, split: str | None) -> bool:
    """Whether ``split`` holds at least 2 tokens; ``ValueError`` for an unknown name."""
    return split is not None and len(data.split(split)) >= 2

  # --- metric ---------------------------------------------------------------
  def score(self, metric: float) -> float:
    """ENAS's reward ``80 / perplexity``."""
    return REWARD_CONSTANT / float(metric)

  # --- training -------------------------------------------------------------
  def default_train_config(self) -> dict[str, Any]:
    return dict(DEFAULT_CONFIG)

  def resolve_train_config(self, config: dict[str, Any] | None) -> dict[str, Any]:
    return resolve_config(config)

  def network_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: cfg[k] for k in _NETWORK_KEYS}

  def init_variables(self, model: Any, key: jax.Array, data: TextData) -> dict[str, Any]:
    tokens = jnp.zeros((1, DUMMY_LENGTH), jnp.int32)
    hidden = jnp.zeros((1, _hidden_size(model)), jnp.float32)
    init = jax.jit(functools.partial(model.init, train=False))
    rngs = {"params": key}
    try:
      compiled = init.lower(rngs, tokens, hidden).compile(compiler_options=_INIT_COMPILER_OPTIONS)
    except Exception:  # pylint: disable=broad-except  # an XLA without the options
      variables = init(rngs, tokens, hidden)
    else:
      variables = compiled(rngs, tokens, hidden)
    return {"params": variables["params"]}

  def init_state(self, model: Any, variables: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    tx, _, _ = get_steps(model, cfg)
    params = variables["params"]
    return {"params": params, "opt_state": tx.init(params)}

  def _train_rows(self, data: TextData, cfg: dict[str, Any]) -> np.ndarray | None:
    ids = data.split(cfg["train_split"])
    if len(ids) // cfg["batch_size"] < 2:
      return None
    return ptb_lib.batchify(ids, cfg["batch_size"])

  def num_train_steps(self, data: TextData, cfg: dict[str, Any]) -> int:
    rows = self._train_rows(data, cfg)
    if rows is None:
      return 0
    return ptb_lib.num_bptt_batches(rows, cfg["bptt"], drop_remainder=True)

  def train_epoch(self, model: Any, state: dict[str, Any], data: TextData, cfg: dict[str, Any],
                  epoch: int, key: jax.Array, data_seed: int, *,
                  nonfinite_before: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """One epoch of truncated BPTT from a zero hidden state (see the module docstring).

    Returns:
      ``(state, metrics)``: ``lr``, ``train_loss`` (mean token cross-entropy
      over the finite steps), ``train_ppl``, ``nonfinite``, ``step_times``.

    Raises:
      ValueError: the training split is too short for one window.
      RuntimeError: more than ``max_nonfinite`` non-finite steps in the run
        (``nonfinite_before`` counts those of earlier epochs).
    """
    del data_seed  # PTB is read in order every epoch (DARTS, ENAS)
    _, train_step, _ = get_steps(model, cfg)
    rows = self._train_rows(data, cfg)
    steps_per_epoch = 0 if rows is None else ptb_lib.num_bptt_batches(rows, cfg["bptt"],
                                                                      drop_remainder=True)
    if steps_per_epoch == 0:
      raise ValueError(f"split {cfg['train_split']!r} of {data.name!r} has "
                       f"{len(data.split(cfg['train_split']))} tokens, too few for batch_size "
                       f"{cfg['batch_size']} x bptt {cfg['bptt']}; lower them")
    lr = jnp.float32(cfg["lr"])
    hidden = jnp.zeros((cfg["batch_size"], _hidden_size(model)), jnp.float32)
    losses = []
    nonfinite = 0
    step_times = []
    for step, (x, y) in enumerate(ptb_lib.bptt_batches(rows, cfg["bptt"], drop_remainder=True)):
      t0 = time.perf_counter()
      global_step = epoch * steps_per_epoch + step
      state, hidden, m = train_step(state, hidden, x, y, jax.random.fold_in(key, global_step), lr)
      m = jax.device_get(m)
      step_times.append(time.perf_counter() - t0)
      if not bool(m["finite"]):
        nonfinite += 1
        if nonfinite_before + nonfinite > cfg["max_nonfinite"]:
          raise RuntimeError(
              f"training diverged: {nonfinite_before + nonfinite} steps with a non-finite loss "
              f"or gradient (max_nonfinite={cfg['max_nonfinite']}), last at epoch {epoch + 1} "
              f"step {step}; lower lr (now {float(lr):.4g}) or grad_clip")
        continue
      losses.append(float(m["loss"]))
    train_loss = float(np.mean(losses)) if losses else float("nan")
    return state, {"lr": float(lr), "train_loss": train_loss,
                   "train_ppl": math.exp(train_loss) if losses else float("nan"),
                   "nonfinite": nonfinite, "step_times": step_times}

  def evaluate(self, model: Any, state: dict[str, Any], data: TextData, split: str,
               cfg: dict[str, Any]) -> dict[str, float]:
    """``{"loss": mean token cross-entropy, "ppl": exp(loss)}`` over every
    token of ``split`` but the first (``nas_jax.data.ptb.eval_windows``)."""
    _, _, eval_step = get_steps(model, cfg)
    windows = ptb_lib.eval_windows(data.split(split), cfg["eval_batch_size"], cfg["bptt"])
    hidden = jnp.zeros((cfg["eval_batch_size"], _hidden_size(model)), jnp.float32)
    sums = []
    for x, y, mask in windows:
      loss_sum, count, hidden = eval_step(state["params"], hidden, x, y, mask)
      sums.append((loss_sum, count))
    total = count = 0.0
    for l, n in jax.device_get(sums):
      total, count = total + float(l), count + float(n)
    loss = total / count
    return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else float("inf")}
