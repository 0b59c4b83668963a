"""Compatibility name of ``nas_jax.runner`` (the experiment runner).

Everything lives in ``nas_jax.runner`` (split by concern: config, workdir,
search, oneshot, costs, report, final, experiment); this module re-exports
its public functions for scripts written against ``nas_jax.experiment``.

Example:
    >>> from nas_jax import experiment
    >>> experiment.default_config()["strategy"]
    {'name': 'random'}
"""
from nas_jax.runner import *  # noqa: F401,F403
from nas_jax.runner import (  # noqa: F401
    WALL_CLOCK_FIELDS, apply_overrides, default_config, enable_compile_cache, fingerprint,
    load_arch_file, load_config_file, merge, parse_value, resolve_evaluator_name, retrain,
    run_experiment, search_round, strip_wall_clock, validate_config)
