"""Random search with learning-curve early stopping on digits (issue 21's must-show measurement).

    python experiments/run.py --strategy random --evaluator scratch --budget 20 \
        --config experiments/configs/lce_digits.py --early-stop
    (the same without --early-stop is the reference: same seed, same 20 architectures)

Every candidate is an NAS-Bench-201 cell trained from scratch on the embedded 8x8
digits for 10 epochs (the issue's 20-architecture search); ``early_stop_settings`` holds
the settings ``--early-stop`` turns on: successive halving with eta 2, rungs at 1, 2 and 5
epochs, ranked by the epoch's training accuracy there (``rank_by="train"``;
``nas_jax.predictors.hyperband``; below). The final training is off: the measurement
compares searches (epochs trained, best architecture found).

Measured with these settings (live ``--early-stop`` runs, ``--seed S --workdir
/work/runs/lce_digits_s{S}_es3``, against the reference without it,
``/work/runs/lce_digits_s{S}_ref``; 2 CPU cores; a reference search takes 2-5 min, an
early-stopped one 40-130 s, mostly compiling; validation: 360 images, one image is 0.28
points). Every live run matched its replay (``benchmarks/early_stop_replay.py`` over the
reference) epoch for epoch:

| seed | reference best (arch) | epochs with --early-stop | best found (arch) | gap | 2x and within 0.5 |
| --- | --- | --- | --- | --- | --- |
| 0 | 97.50 (3.2.4.2.1.4) | 83 (2.41x) | the same | 0 | yes |
| 1 | 97.50 (1.0.2.3.4.3) | 84 (2.38x) | 96.67 (0.3.0.4.0.3) | -0.83 | no |
| 2 | 96.94 (3.2.4.0.0.4) | 62 (3.23x) | the same | 0 | yes |
| 3 | 96.94 (0.2.0.0.0.4) | 61 (3.28x) | the same | 0 | yes |
| 4 | 97.22 (3.4.1.3.2.4) | 85 (2.35x) | the same | 0 | yes |
| 5 | 97.50 (0.3.0.3.0.3) | 86 (2.33x) | the same | 0 | yes |
| 6 | 97.78 (0.3.0.0.0.4) | 82 (2.44x) | the same | 0 | yes |
| 7 | 96.94 (1.0.3.2.3.3) | 75 (2.67x) | the same | 0 | yes |
| 8 | 96.94 (3.3.4.1.0.2) | 61 (3.28x) | 96.67 (0.3.0.0.0.4) | -0.28 | yes |
| 9 | 97.50 (1.2.3.0.2.2) | 72 (2.78x) | the same | 0 | yes |
| 10 | 97.78 (3.3.2.0.4.4) | 36 (5.56x) | the same | 0 | yes |
| 11 | 97.50 (3.3.3.3.3.3) | 66 (3.03x) | the same | 0 | yes |
| 12 | 96.67 (1.3.3.1.2.3) | 89 (2.25x) | 96.39 (0.1.0.3.0.4) | -0.28 | yes |
| 13 | 98.61 (1.2.3.0.4.4) | 62 (3.23x) | the same | 0 | yes |
| 14 | 97.50 (2.2.3.3.4.4) | 52 (3.85x) | 96.94 (2.3.0.3.3.3) | -0.56 | no |
| 15 | 97.22 (1.2.3.0.4.4) | 55 (3.64x) | the same | 0 | yes |
| 16 | 97.78 (0.1.0.3.0.4) | 51 (3.92x) | the same | 0 | yes |
| 17 | 97.22 (2.2.3.1.3.4) | 82 (2.44x) | the same | 0 | yes |
| 18 | 96.11 (3.4.2.1.0.3) | 78 (2.56x) | 96.11 (2.1.1.3.2.4, a tie) | 0 | yes |
| 19 | 96.94 (3.3.1.3.2.1) | 95 (2.11x) | 96.67 (0.2.0.4.0.3) | -0.28 | yes |
| 20 | 98.61 (3.0.3.0.4.4) | 80 (2.50x) | the same | 0 | yes |
| 21 | 97.78 (1.1.3.2.3.3) | 48 (4.17x) | 96.39 (0.3.0.4.0.4) | -1.39 | no |

So the issue's target holds on 13 of seeds 0-13 and on 6 of seeds 14-21 (run after the rule
was fixed), 19 of 22; at least 2.11x fewer epochs on every seed, 2.85x over all 22 (4,400 /
1,545 epochs). In the misses the best run was behind at the first rungs: seed 1, 21.8 %
training accuracy after one epoch, 5th of the 11 runs there (the best 5 go on), 97.50 % at the
end; seed 14, 28.4 % after one epoch (3rd of 5; 2 go on); seed 21, 52.3 % after two (3rd of 4).

Why the training accuracy. After one epoch (16 steps of batch 64) the validation accuracy
ranks the runs no better than chance: its Spearman correlation with the final validation
accuracy is 0.07 (mean over the 14 reference searches; 0.48 after two epochs, 0.66 after
five), against 0.38 for the epoch's training accuracy (0.50, 0.70). The validation pass uses
the batch-norm running statistics, which after 16 updates at rate 0.1 still hold 19 % of
their initial values, on 360 images; the training accuracy averages the epoch's 1,024
predictions made with batch statistics.

How it was chosen. The first choice (stop 28, on another machine): the same schedule ranked
by validation accuracy, chosen on seeds 0-6 by replays and checked live on 0-13 there: 11 of
14. This machine's CPU rounds differently, the runs' curves differ from that machine's, and
re-measured here (new reference searches, replays) that rule meets the target on 8 of 14
(2.38-5.71x; the best run lost at the first rung on 6). Ranked by training accuracy it was
picked on seeds 0-4, 11 and 12 here (6 of 7; on the other machine's seeds 0-6 it had also met
6 of 7), then held on the other 7 (5-10, 13: 7 of 7) and on 6 of the 8 seeds 14-21 run
afterwards (ranked by validation accuracy: 3 of 8; 11 of 22 in all). Other rules over this machine's 14
reference searches (replays, ``/work/runs/early_stop_replay_m2.json``): SHA eta 3 by training
accuracy 10 of 14; SHA eta 2 ranked by predicted final values 7 of 14 (the online predictor
has only the 3-10 runs completed so far); Hyperband eta 3 ranked by predictions 7 of 14;
Baker et al.'s probability rule (delta 0.01, min_curves 3) never loses the best but saves
1.0-2.1x (1 of 14): with 20 runs its predictive intervals stay wide. On the other machine:
first rung at 2 or 3 epochs 0-4 of 7 (too few epochs saved), SHA eta 4 4 of 7.
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
          # ranked by the epoch's training accuracy at the rungs: after one short epoch the
          # validation accuracy is near noise here (docstring). The prediction (min_curves completed
          # runs on) is still recorded in each stopped run's history line.
          "early_stop_settings": {"rule": "sha", "eta": 2, "predict": False, "rank_by": "train",
                                  "min_curves": 3},
      }},
      "final": {"epochs": 0},
  }
