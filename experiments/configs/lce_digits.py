"""Random search with learning-curve early stopping on digits (issue 21's must-show measurement).

    python experiments/run.py --strategy random --evaluator scratch --budget 20 \
        --config experiments/configs/lce_digits.py --early-stop
    (the same without --early-stop is the reference: same seed, same 20 architectures)

Every candidate is an NAS-Bench-201 cell trained from scratch on the embedded 8x8
digits for 10 epochs (the issue's 20-architecture search); ``early_stop`` holds the
settings ``--early-stop`` turns on (``nas_jax.predictors.learning_curves.EarlyStopper``).
The final training is off: the measurement compares searches (epochs trained, best
architecture found).
"""


def get_config():
  return {
      "space": "nb201",
      "budget": 20,  # the issue: a 20-architecture random search
      "strategy": {"name": "random", "batch_size": 1},
      "evaluator": {"name": "scratch", "scratch": {
          # 10 epochs: long enough for a curve to extrapolate (Baker et al. stop after a
          # fraction of the epochs); C = 8 and 1 cell per stage keep a run to seconds on CPU.
          "epochs": 10, "init_channels": 8, "layers": 1, "batch_size": 64, "lr": 0.05,
          # Settings that apply once --early-stop turns stopping on (delta: the library's
          # default). min_curves 5: the regressor is fitted on the first 5 completed runs (a
          # quarter of the search; Baker et al. fit theirs on the first 100 of a search) and
          # refitted after every 5 more (refit_every, the library's default).
          "early_stop_settings": {"min_curves": 5},
      }},
      "final": {"epochs": 0},
  }
