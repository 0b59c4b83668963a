"""Overrides for ``--strategy bayesnas`` (merged over configs/default.py): BayesNAS.

BayesNAS (Zhou et al., ICML 2019; ``nas_jax.oneshot.bayesnas``) multiplies
every op of the space's relaxed cell by a switch (and every edge by an edge
switch), puts a hierarchical ARD prior on them and prunes the switches whose
relevance ``gamma`` collapses. Each outer iteration is one epoch of weight
steps, one epoch of weight and switch steps on the penalised loss, then the
prior update; the budget counts epochs (6 = 3 outer iterations). After every
epoch the pruned architecture is derived and scored with the trained
weights; the last one is then trained from scratch. The switches' evolution
is drawn to ``switches.png`` in the workdir.

The paper's sparsity settings (lambda 0.01 / 0.007 / 0.005, its CIFAR-10
networks) are the preset files in ``configs/bayesnas_presets/`` (or
``--set strategy.lam=0.007``). Sized like ``configs/darts.py`` (the same
budget, data split and network, for side-by-side runs) to finish in minutes
on 2 CPU cores on the embedded digits data.

Example:
    python experiments/run.py --strategy bayesnas --space nb201
    python experiments/run.py --strategy bayesnas --space darts
    python experiments/run.py --strategy bayesnas --space nb201 --config experiments/configs/bayesnas_presets/lambda_0.007.py
"""


def get_config():
  return {
      "budget": 6,                      # epochs = 3 outer iterations (1 weight + 1 switch epoch each)
      "data": {"valid_fraction": 0.5},  # as configs/darts.py: the valid half only scores
      # Other settings: the method's defaults (nas_jax.oneshot.bayesnas, each with its source).
      "strategy": {"name": "bayesnas",
                   "lam": 0.01,          # paper's first CIFAR-10 preset
                   "init_channels": 8,   # as configs/darts.py (papers: 16)
                   "eval_batch_size": 256},
      "final": {"epochs": 8, "init_channels": 8, "batch_size": 64},
  }
