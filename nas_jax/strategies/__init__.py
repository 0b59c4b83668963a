"""Search strategies (ask/tell): ``get_strategy(name)``; protocol in ``base``."""
from nas_jax.registry import get_strategy  # noqa: F401
from nas_jax.strategies.base import Strategy  # noqa: F401
