"""Overrides for ``--strategy petridish`` (merged over configs/default.py): Petridish.

Petridish (Hu et al., NeurIPS 2019; ``nas_jax.growth.petridish``) grows the
``petridish`` space's seed network forward: each job picks a parent near the
lower convex hull of (FLOPs, validation error), trains candidate layers
attached through stop-gradient / stop-forward, keeps the strongest and
trains the grown child from its parent's weights. The budget counts trained
models (the seed and its descendants). Outputs besides the runner's:
``pareto.json`` (the frontier), ``frontier.png`` (error against FLOPs) and
``frontier_<j>.json`` for ``experiments/train.py --arch``.

Sized for 2 CPU cores on the embedded digits data; the papers' CIFAR-10
search trains each model for 40 epochs (petridishnn ``--max_train_model_epoch``).
``--space petridish_cell`` grows shared normal / reduction cells instead of
the macro network.

Measured (these defaults, seed 0, 2 cores shared with other jobs at load
average 12-14, XLA cache off): 1,429 s in all (search 1,363 s, final 62 s);
10 models; Pareto frontier of 5 (validation accuracy 84.0 -> 97.9 %) from
156,800 to 478,848 multiply-adds (3.05x), 3 of them on the lower convex hull;
the best retrained from scratch for 10 epochs: 91.9 % test accuracy. Each
model's time is mostly compilation (15-78 s for the first step of a new
network under that load; a step then takes 5-50 ms); a warm XLA cache gave
the same history.

Example:
    python experiments/run.py --strategy petridish
    python experiments/run.py --strategy petridish --budget 6 --set strategy.child_epochs=2
"""


def get_config():
  return {
      "space": "petridish",
      "budget": 10,                    # trained models: the seed + 9 children
      "data": {"valid_fraction": 0.2},
      "strategy": {"name": "petridish", "init_channels": 16},
      # The best model (highest validation accuracy) is retrained from scratch at the search's
      # width, so result.json's costs describe the same networks as the history's.
      "final": {"epochs": 10, "init_channels": 16},
  }
