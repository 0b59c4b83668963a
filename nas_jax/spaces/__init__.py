"""Search spaces: ``get_space(name)``; protocol in ``base.SearchSpace``; ``CategoricalSpace``
for a custom space of independent choices."""
from nas_jax.registry import get_space  # noqa: F401
from nas_jax.spaces.base import SearchSpace  # noqa: F401
from nas_jax.spaces.categorical import CategoricalSpace  # noqa: F401
