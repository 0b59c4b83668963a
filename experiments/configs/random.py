"""Overrides for ``--strategy random`` (merged over configs/default.py).

Random search with weight sharing (Li & Talwalkar, 2019: a strong baseline for
one-shot NAS): each round asks ``batch_size`` uniform architectures, trains
the shared supernet on them for ``steps_per_round`` steps, and scores each on
one validation batch. Sized to finish in minutes on 2 CPU cores on the
embedded digits data; the final network is trained from scratch.
"""


def get_config():
  return {
      "budget": 8,
      "strategy": {"name": "random", "batch_size": 4},
      "evaluator": {
          "supernet": {"init_channels": 8, "layers": 3, "steps_per_round": 40,
                       "total_rounds": 2, "batch_size": 64},
      },
      # Final training: the digits recipe of configs/default.py.
  }
