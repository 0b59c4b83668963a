"""Random search with learning-curve early stopping on digits (issue 21's must-show measurement).

    python experiments/run.py --strategy random --evaluator scratch --budget 20 \
        --config experiments/configs/lce_digits.py --early-stop
    (the same without --early-stop is the reference: same seed, same 20 architectures)

Every candidate is an NAS-Bench-201 cell trained from scratch on the embedded 8x8
digits for 10 epochs (the issue's 20-architecture search); ``early_stop_settings`` holds
the settings ``--early-stop`` turns on: successive halving with eta 2, rungs at 1, 2 and 5
epochs, ranked by the values there (``nas_jax.predictors.hyperband``; below). The final
training is off: the measurement compares searches (epochs trained, best architecture found).

Measured with these settings (live ``--early-stop`` runs, ``--seed S --workdir
/work/runs/lce_digits_s{S}_es2``, against the reference without it,
``/work/runs/lce_digits_s{S}_ref``; 2 CPU cores; a reference search takes 4-7 min, an
early-stopped one 1-1.5 min; validation: 360 images, one image is 0.28 points). The rule was
chosen on seeds 0-6 by replaying their reference searches (``benchmarks/early_stop_replay.py``;
every live run below matched its replay epoch for epoch); seeds 7-13 were not looked at before:

| seed | reference best (arch) | epochs with --early-stop | best found (arch) | gap | 2x and within 0.5 |
| --- | --- | --- | --- | --- | --- |
| 0 | 96.94 (3.4.4.1.0.3) | 64 (3.12x) | 96.39 (1.3.4.3.3.4) | -0.56 | no |
| 1 | 96.67 (1.0.2.3.4.3) | 84 (2.38x) | 96.67 (0.3.0.4.0.3, a tie) | 0 | yes |
| 2 | 96.94 (3.0.4.3.4.2) | 38 (5.26x) | the same | 0 | yes |
| 3 | 97.22 (0.2.0.0.0.4) | 62 (3.23x) | the same | 0 | yes |
| 4 | 97.78 (0.3.0.4.0.3) | 71 (2.82x) | the same | 0 | yes |
| 5 | 97.50 (0.3.0.3.0.3) | 64 (3.12x) | the same | 0 | yes |
| 6 | 97.50 (3.0.2.3.2.2) | 48 (4.17x) | 97.22 (0.0.0.3.0.0) | -0.28 | yes |
| 7 | 96.67 (3.0.3.4.3.4) | 56 (3.57x) | 96.67 (1.0.3.2.3.3, a tie) | 0 | yes |
| 8 | 96.39 (0.3.0.0.0.4) | 45 (4.44x) | the same | 0 | yes |
| 9 | 97.50 (3.2.4.0.4.2) | 54 (3.70x) | 97.22 (1.2.3.0.2.2) | -0.28 | yes |
| 10 | 97.78 (3.3.2.0.4.4) | 38 (5.26x) | the same | 0 | yes |
| 11 | 97.50 (2.4.3.4.0.3) | 61 (3.28x) | 95.83 (0.1.0.3.0.4) | -1.67 | no |
| 12 | 96.94 (1.3.3.1.2.3) | 68 (2.94x) | 96.11 (4.1.2.4.4.3) | -0.83 | no |
| 13 | 98.61 (1.2.3.0.4.4) | 50 (4.00x) | the same | 0 | yes |

So the issue's target holds on 11 of 14 seeds (6 of 7 chosen on, 5 of 7 unseen); at least 2.38x
fewer epochs on every seed, 3.49x over all 14 (2,800 / 803 epochs). In the misses the best run
was behind at a first rung: seeds 11 and 12, 13.1 % and 15.8 % after one epoch (stopped there,
97.50 % and 96.94 % at the end); seed 0, 40.6 % after two (stopped), 70.0 % after seven (below
every other run that learnt), 96.94 % after ten. The accuracy at the first epochs ranks runs
barely better than chance here (Spearman correlation with the final accuracy about 0 after one
epoch, 0.3-0.6 after two, seeds 2-5), so no rule that stops on early epochs keeps every best run.

Rules compared on seeds 0-6 (replays; target met on how many seeds, then on seeds 0-13):
successive halving eta 2 by the values 6 of 7 (11 of 14); the same ranked by predicted final
values 5 of 7 (10 of 14): the online predictor has only the 3-10 runs completed so far to learn
from; SHA eta 3 by the values 5 of 7; SHA eta 4 4 of 7; Hyperband (all brackets) eta 3 ranked
by predictions, the previous default, 2 of 7 (5 of 14: 1.69-2.94x, the best lost on 9); any
first rung at 2 or 3 epochs 0-4 of 7 (too few epochs saved); ranking by training accuracy
(less noisy than 360 validation images at epoch 1-3) 6 of 7 for SHA eta 2 as well, not better.
"""


def get_config():
  return {
      "space": "nb201",
      # A quarter of the training images held out for validation (360): one image is 0.28
      # points of accuracy. With the default tenth (144 images, 0.69 points each) the issue's
      # 0.5-point criterion is finer than the metric, and curves cross by chance.
      "data": {"valid_fraction": 0.25},
      "budget": 20,  # the issue: a 20-architecture random search
      "strategy": {"name": "random", "batch_size": 1},
      "evaluator": {"name": "scratch", "scratch": {
          # 10 epochs: long enough for a curve to extrapolate (Baker et al. stop after a
          # fraction of the epochs); C = 8 and 1 cell per stage keep a run to seconds on CPU.
          "epochs": 10, "init_channels": 8, "layers": 1, "batch_size": 64, "lr": 0.05,
          # Settings that apply once --early-stop turns stopping on: successive halving (Jamieson &
          # Talwalkar 2016) in its asynchronous form (ASHA, Li et al. 2020), every run in the deepest
          # bracket, eta = 2 (halving: rungs at 1, 2 and 5 of 10 epochs, keep the best half there),
          # ranked by the values at the rungs. Chosen by replaying the reference searches of seeds
          # 0-6 (benchmarks/early_stop_replay.py) over Hyperband / SHA, eta 2-4, first rung 1-3,
          # ranked by predicted final values or by the values, on validation or training accuracy;
          # checked on seeds 7-13 (table above). With 3-10 completed runs to learn from, the
          # predictor ranked worse than the values (SHA eta 2 predicted: 5 of 7 seeds, values: 6
          # of 7). The prediction (min_curves completed runs on) is still recorded in each stopped
          # run's history line.
          "early_stop_settings": {"rule": "sha", "eta": 2, "predict": False, "min_curves": 3},
      }},
      "final": {"epochs": 0},
  }
