"""One-shot methods: architecture parameters learned together with the weights.

``base`` holds the protocol (``OneShotMethod``: ``init`` / ``steps_per_epoch``
/ ``step`` / ``derive`` / ``score`` / ``summary`` over a state pytree) that the
runner drives; each method is a module here, registered under
``nas_jax.registry.STRATEGIES`` with ``kind = "oneshot"``:

* ``darts``: DARTS (Liu, Simonyan & Yang, ICLR 2019), first and second order.
* ``bayesnas``: BayesNAS (Zhou et al., ICML 2019), hierarchical ARD priors on
  op and edge switches, Hessian-based prior updates, pruning.

Nothing is imported here, so ``import nas_jax.oneshot`` stays cheap; the
registry imports a method's module on first use.

Example:
    >>> from nas_jax import registry
    >>> DARTS = registry.get_strategy("darts")  # imports nas_jax.oneshot.darts
    >>> DARTS.__module__, DARTS.kind
    ('nas_jax.oneshot.darts', 'oneshot')
"""
