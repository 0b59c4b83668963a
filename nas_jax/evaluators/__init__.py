"""Evaluators (architectures -> search scores): ``get_evaluator(name)``."""
from nas_jax.evaluators.base import Evaluation, Evaluator  # noqa: F401
from nas_jax.registry import get_evaluator  # noqa: F401
