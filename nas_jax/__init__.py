"""nas_jax: functional neural architecture search in JAX.

Data flows one way: space -> strategy -> evaluator -> history -> result.
See ``nas_jax.spaces``, ``nas_jax.strategies``, ``nas_jax.evaluators``,
``nas_jax.networks``, ``nas_jax.predictors`` and ``nas_jax.experiment``.

Everything below is imported on first use, so ``import nas_jax`` stays cheap
(it does not import JAX):

=====================  ====================================================
``search``             one call: space + strategy + evaluator -> ``SearchResult``
``SearchResult``       best arch, genotype and score, and the history
``spaces``             ``get_space``, ``SearchSpace``, ``CategoricalSpace``
``strategies``         ``get_strategy``, ``Strategy``
``evaluators``         ``get_evaluator``, ``Evaluator``, ``Evaluation``
``networks``           ``family``, ``build_child``, the supernet protocols
``registry``           name -> implementation tables
``runner``             ``run_experiment`` (workdir, checkpoints, final training)
``parallel``           data parallelism over all local devices
=====================  ====================================================

Example:
    >>> import nas_jax
    >>> result = nas_jax.search("nb201", "random", evaluator="tabular", budget=5, seed=0)
    >>> len(result.history), result.best_genotype == result.space.to_genotype(result.best_arch)
    (5, True)
"""
import importlib as _importlib

__version__ = "0.1.0"

_SUBMODULES = ("spaces", "strategies", "evaluators", "networks", "predictors", "registry", "runner",
               "parallel", "train", "data", "tasks", "oneshot", "api")
_FROM_API = ("search", "SearchResult", "FunctionEvaluator")

__all__ = list(_SUBMODULES + _FROM_API)


def __getattr__(name):
  if name in _FROM_API:
    return getattr(_importlib.import_module("nas_jax.api"), name)
  if name in _SUBMODULES:
    return _importlib.import_module(f"nas_jax.{name}")
  raise AttributeError(f"module 'nas_jax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + __all__)
