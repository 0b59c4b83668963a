"""Overrides for ``--strategy enas`` (merged over configs/default.py).

ENAS's controller (Pham et al. 2018) as a chooser: each round it samples
``batch_size`` architectures (the preset's: 10 on ``nasnet``, ENAS's
``--controller_num_aggregate``; 1 on ``nb201``'s table), the evaluator scores
them (``supernet``: the shared weights are trained on the sampled
architectures for ``steps_per_round`` steps, then each is scored on one
validation batch, ENAS's reward; ``tabular`` on ``nb201``) and one REINFORCE
step follows. The controller's settings are the strategy's presets
(``nas_jax.strategies.enas.PRESETS``, each with its source in the authors'
scripts); set one here or with ``--set strategy.learning_rate=...``.
Sized to finish in minutes on 2 CPU cores on the embedded digits data (ENAS:
150 epochs of 5 x 30 controller steps on CIFAR-10); the best architecture is
then trained from scratch. On ``nb201`` with ``--evaluator supernet`` the
``nb201`` preset (tuned on the table: one architecture per step) is rarely
what you want: add ``--set strategy.preset=cifar_micro``, or run ENAS proper,
``--strategy enas_oneshot`` (``nas_jax.oneshot.enas``). On ``--space macro``
the number of layers is a space option (ENAS: 12; ``--set
space_options.num_layers=24``), which the supernet and the controller follow.
"""


def get_config():
  return {
      "budget": 40,  # evaluations: 4 controller steps of 10 on nasnet; CPU-sized
      "strategy": {"name": "enas"},
      "evaluator": {
          # CPU-sized supernet, as configs/random.py (ENAS: 20 channels, 6 layers
          # and batch 160 on CIFAR-10, scripts/cifar10_micro_search.sh).
          "supernet": {"init_channels": 8, "layers": 3, "steps_per_round": 40,
                       "total_rounds": 4, "batch_size": 64},
      },
      "final": {"epochs": 8, "init_channels": 8, "layers": 3, "batch_size": 64},
  }
