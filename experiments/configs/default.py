"""Default experiment config: a quick search on the embedded digits data (CPU).

``get_config()`` returns a nested dict; ``experiments/run.py`` deep-merges
``configs/<strategy>.py`` (when present) and then ``--config FILE`` over it, then
applies the flags and ``--set FIELD=VALUE`` assignments. Every config file only
needs the fields it changes.

Fields:
  seed: int, the one seed of the whole experiment (search and final training).
  space: search space (``nas_jax.registry.SPACES``): "nasnet", "nb201", "darts", "macro",
    "rnn", "petridish" or "petridish_cell".
  space_options: keyword arguments of the space's constructor, {} for its defaults: e.g.
    {"num_layers": 24} on macro (ENAS: 12), {"num_nodes": 9, "output": "mean"} on rnn
    (DARTS's cell; ENAS: 12 nodes, "loose_ends"); an option the space lacks is refused.
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
    (``nas_jax.train.train_child``); epochs = 0 skips it. The default is a
    recipe for the 8x8 digits (below); for CIFAR-10 see
    ``nas_jax.tasks.images.PAPER_CONFIG``.
  references: what the found cell is shown beside (``nas_jax.runner.references``):
    ``cell`` (a published cell of the space, trained with the same ``final``
    recipe and seed) and ``classical`` ("svc" or "logreg" on the same pixels).
  checkpoint: {"interval_s": seconds between checkpoints (the last round is
    always saved), "keep": how many checkpoints to keep}.

Example:
    python experiments/run.py --strategy random --set budget=4 --set final.epochs=2
    python experiments/run.py --strategy enas_oneshot --space macro --set space_options.num_layers=24
"""


def get_config():
  return {
      "seed": 0,
      "space": "nasnet",
      "space_options": {},
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
      # Final training recipe for the 8x8 digits, chosen on the published NAONet-B cell
      # (benchmarks in the README; test accuracy over seeds 0-2): all labelled images
      # (train + valid, as DARTS/NAO retrain on the whole CIFAR-10 training set), 60
      # epochs, C = 24, 3 cells, SGD lr 0.05 cosine, pad-crop 1 plus a random rotation
      # (<= 12 degrees) and zoom (<= 10 %), the classic distortions for handwritten
      # digits (Simard et al. 2003): 99.44 / 99.44 / 99.44 %; without the distortions
      # 99.16 / 99.16 / 98.89 %; C = 8 and 8 epochs (the former default): 96.38 %.
      "final": {"epochs": 60, "init_channels": 24, "layers": 3, "batch_size": 64, "lr": 0.05,
                "train_split": "train+valid", "valid_split": None,
                "rotate": 12.0, "scale": 0.1},
      "references": {"cell": None, "classical": None},
      "checkpoint": {"interval_s": 30.0, "keep": 2},
  }
