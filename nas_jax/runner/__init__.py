"""The runner: one loop for every kind of method, with configs, workdirs, reports.

=====================  ===================================================
``config``             defaults, checks, fingerprints, config files, --set
``workdir``            config.json claim, history.jsonl, atomic JSON, run.log
``search``             one ask/evaluate/tell round and the ask/tell loop
``oneshot``            the one-shot loop (DARTS, BayesNAS)
``costs``              FLOPs and parameters of every evaluated architecture
``report``             best record, Pareto frontier, plots
``final``              final training, retraining from an arch file
``experiment``         ``run_experiment``: build, run the method's loop, finish
=====================  ===================================================

Example:
    >>> from nas_jax import runner
    >>> cfg = runner.validate_config(runner.merge(runner.default_config(), {"space": "nb201"}))
    >>> cfg["evaluator"]["name"]
    'tabular'
"""
from nas_jax.runner.config import (  # noqa: F401
    apply_overrides, default_config, enable_compile_cache, fingerprint, load_config_file, merge,
    parse_value, resolve_evaluator_name, validate_config)
from nas_jax.runner.experiment import run_experiment, strip_wall_clock  # noqa: F401
from nas_jax.runner.final import load_arch_file, retrain  # noqa: F401
from nas_jax.runner.report import WALL_CLOCK_FIELDS  # noqa: F401
from nas_jax.runner.search import search_round  # noqa: F401
