"""nas_jax: functional neural architecture search in JAX.

Data flows one way: space -> strategy -> evaluator -> history -> result.
See ``nas_jax.spaces``, ``nas_jax.strategies``, ``nas_jax.evaluators``,
``nas_jax.networks``, ``nas_jax.predictors`` and ``nas_jax.experiment``.
"""
__version__ = "0.1.0"
