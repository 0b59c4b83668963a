"""BayesNAS with lambda = 0.007 (one of the paper's CIFAR-10 settings; the authors' pre_trained/0.007 network).

    python experiments/run.py --strategy bayesnas --space darts --config experiments/configs/bayesnas_presets/lambda_0.007.py
"""


def get_config():
  return {"strategy": {"name": "bayesnas", "lam": 0.007}}
