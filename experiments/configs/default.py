"""Default experiment config: a quick search on the embedded digits data (CPU).

``get_config()`` returns a nested dict; ``experiments/run.py`` deep-merges
``configs/<strategy>.py`` (when present) and then ``--config FILE`` over it, then
applies the flags and ``--set FIELD=VALUE`` assignments. Every config file only
needs the fields it changes.

Fields:
  seed: int, the one seed of the whole experiment (search and final training).
  space: search space (``nas_jax.registry.SPACES``): "nasnet" or "nb201".
  dataset: "digits" (embedded), "cifar10", "cifar100", a tfds name, or
    "imagefolder:PATH". Unused by the tabular evaluator.
  data_dir: tfds data directory (not part of the experiment's identity).
  data: extra ``nas_jax.data.load_dataset`` arguments (valid_fraction, ...).
  budget: number of architectures evaluated during the search.
  strategy: {"name": ..., **settings of that strategy}.
  evaluator: {"name": "auto" | "tabular" | "scratch" | "supernet",
    "<evaluator name>": {settings}}. "auto" picks "tabular" on nb201,
    "supernet" for one-shot strategies (nao, enas), else "scratch".
  final: settings of the final from-scratch training of the best architecture
    (``nas_jax.train.train_child``); epochs = 0 skips it.
  checkpoint: {"interval_s": seconds between checkpoints (the last round is
    always saved), "keep": how many checkpoints to keep}.

Example:
    python experiments/run.py --strategy random --set budget=4 --set final.epochs=2
"""


def get_config():
  return {
      "seed": 0,
      "space": "nasnet",
      "dataset": "digits",
      "data_dir": None,
      "data": {},
      "budget": 6,
      "strategy": {"name": "random"},
      "evaluator": {
          "name": "auto",
          "tabular": {},
          "scratch": {},
          "supernet": {},
      },
      "final": {"epochs": 10},
      "checkpoint": {"interval_s": 30.0, "keep": 2},
  }
