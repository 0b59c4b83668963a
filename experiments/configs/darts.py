"""Overrides for ``--strategy darts`` (merged over configs/default.py): DARTS.

DARTS (Liu, Simonyan & Yang, ICLR 2019; ``nas_jax.oneshot.darts``) trains a
continuous relaxation of the space's cell: weights on the ``train`` split,
architecture parameters on the ``valid`` split, which is half of the training
data (``valid_fraction=0.5``, DARTS ``--train_portion 0.5``). After every
epoch the architecture is derived from ``softmax(alpha)`` and scored with the
trained weights; the last epoch's architecture is then trained from scratch.

The budget counts epochs (the runner sets ``strategy.epochs`` from it: the
learning-rate schedule runs over exactly the budget). Pick the space with
``--space``: ``nb201`` (NAS-Bench-201's DARTS baseline: weight decay 5e-4 and
Nesterov there) or ``darts`` (the paper's space); the network depth
(``strategy.layers``) defaults to a CPU size per space. Sized to finish in
minutes on 2 CPU cores on the embedded digits data (11 steps of 64 per epoch);
the papers: 50 epochs of CIFAR-10 halves (391 steps), C = 16.

Example:
    python experiments/run.py --strategy darts --space nb201
    python experiments/run.py --strategy darts --space darts --set strategy.order=second
"""


def get_config():
  return {
      "budget": 6,                     # epochs; DARTS / NAS-Bench-201: 50
      "data": {"valid_fraction": 0.5},  # DARTS --train_portion 0.5
      # Other settings: the method's defaults (nas_jax.oneshot.darts, each with its source),
      # e.g. order "first", SGD lr 0.025 -> 0.001, Adam (0.5, 0.999) wd 1e-3 on alpha.
      "strategy": {"name": "darts",
                   "init_channels": 8,   # DARTS / NB201 search: 16; CPU-sized
                   # DARTS: 3e-4. Adam moves a logit by about arch_lr per step: DARTS's 50 x 391
                   # steps allow ~6, the 6 x 11 here ~2 at 3e-2 (at 3e-3, measured on nb201:
                   # the mean entropy after 2 epochs was 1.609 of log 5 = 1.609).
                   "arch_lr": 3e-2,
                   "eval_batch_size": 256},
      "final": {"epochs": 8, "init_channels": 8, "batch_size": 64},
  }
