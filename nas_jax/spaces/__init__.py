"""Search spaces: ``get_space(name)``; protocol in ``base.SearchSpace``."""
from nas_jax.registry import get_space  # noqa: F401
from nas_jax.spaces.base import SearchSpace  # noqa: F401
