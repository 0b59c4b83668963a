"""ENAS proper on Penn Treebank, CPU-sized: ``--config experiments/configs/enas_ptb.py``.

    python experiments/run.py --config experiments/configs/enas_ptb.py --data-dir /path/to/ptb

The recurrent-cell space (12 nodes, ENAS ``--child_rhn_depth=12``; DARTS's
9-node cell averaging its nodes: ``--set space_options.num_nodes=9 --set
space_options.output=mean``, the shared weights and the controller follow
the space); the shared RNN language model (``nas_jax.evaluators.lm_supernet``) trained with
truncated BPTT, one fresh controller sample per window; after every
``child_steps`` windows, ``controller_steps`` REINFORCE steps of 10 samples,
each rewarded with ``80 / ppl`` on one validation window
(``nas_jax.oneshot.enas``). A history line per epoch (= one such round)
carries the derived cell's perplexity over the whole validation split under
the shared weights. The derived cell is then retrained from scratch as a
language model (``final``).

ENAS's search (``scripts/ptb_search.sh``) against this CPU size:

| setting | ENAS | here |
| --- | --- | --- |
| hidden = embedding | 720 | 64 (the language-model task's CPU default) |
| batch, bptt | 20, 35 | 64, 35 (the task's batch; ENAS's bptt) |
| shared-weight rate, clip | 0.25 and 10 on a loss summed over 35 steps (8.75 and 0.29 per token) | 20 and 0.25 per token (the task's, DARTS rnn/train.py) |
| dropouts (e, x, h, o) | 0.25, 0.75, 0.25, 0.75 | none (the task's CPU default: 64 units underfit) |
| windows between controller phases | one pass, ~1,300 | ``child_steps`` 100 (a quarter pass at batch 64) |
| controller steps per phase | 100 x 10 samples | 10 x 10 samples |
| epochs | 100 passes | ``budget`` rounds, about 1 pass per 4 |

Controller: the ``ptb`` preset (lr 0.001, entropy 1e-3, tanh 2.5,
temperature 5, LSTM 100, 10 samples per step; baseline decay 0.99).

Measured (seed 0, full PTB, 2 CPU cores shared with other jobs, load average
10-16): search 1,088 s (100-125 s per round: 100 windows ~1 s each, 10
controller steps ~3 s each, the whole-split score ~16 s). The derived cell's
validation perplexity under the shared weights, rounds 1-10: 902, 732, 673,
698, 599, 575, 484, 431, 443, 407. Derived cell retrained 2 epochs (556 s):
valid 230.3, test 223.2 (a random 12-node cell, same recipe: valid 227,
``nas_jax.tasks.language_model``); ENAS's paper: 55.8 test after full
training on a GPU. A rerun with the same seed wrote the same history lines.
"""


def get_config():
  return {
      "space": "rnn",
      "dataset": "ptb",
      "budget": 10,  # rounds (history lines); ~25 min of search on 2 cores at load 9-13
      "strategy": {
          "name": "enas_oneshot",
          "child_steps": 100,       # CPU-sized (ENAS: one pass over the data, ~1,300 windows)
          "controller_steps": 10,   # CPU-sized (ENAS ptb_search.sh --controller_train_steps=100)
          "derive_samples": 10,     # ENAS main.py: 10 sampled cells after each epoch
          "supernet": {},           # evaluators/lm_supernet.py DEFAULT_CONFIG (the LM task's)
      },
      # A short retrain of the derived cell (the language-model task's defaults:
      # E = H = 64, lr 20, clip 0.25, batch 64, no dropout); ENAS trains 2,000 epochs at 748.
      "final": {"epochs": 2},
  }
