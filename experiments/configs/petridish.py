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
