"""Networks of the ``nasnet`` cell space (NAO / ENAS micro): supernets and the child network.

Architecture (see ``nas_jax.spaces.nasnet``): ``int32[2, B, 4]`` indexed
``[cell (0 normal, 1 reduction), node, (input0, op0, input1, op1)]``; inputs
0, 1 are the cell inputs ``c_{k-2}, c_{k-1}``, ``2 + j`` is node ``j``; ops
``0 sep_conv_3x3, 1 sep_conv_5x5, 2 avg_pool_3x3, 3 max_pool_3x3, 4 identity``.
In a reduction cell, ops applied to a cell input have stride 2 (identity then
becomes a factorized reduce).

Macro structure (DARTS/NAO): stem conv3x3(``stem_multiplier * C``)-BN, then
``layers`` cells with reductions (channels doubled) at ``layers // 3`` and
``2 * layers // 3``; each cell first maps its inputs to ``C`` channels with a
ReLU-conv1x1-BN (a factorized reduce for ``c_{k-2}`` after a reduction); then
global average pooling and a linear classifier.

Cell output (the same function in every network): the concatenation of the
*loose ends* (nodes that no other node of the cell uses). The supernet, whose
architecture is traced, keeps a fixed shape by concatenating all B nodes,
each multiplied by its 0/1 loose-end flag; every consumer of a cell output
(the next cells' 1x1 preprocessing and factorized reduce, the classifier) is
linear in its input channels after a ReLU, so the zero blocks contribute
nothing and the child, which concatenates only the loose ends, computes exactly
the same function with the corresponding rows of those weights
(``child_variables_from_supernet``).

The package, by concern:

- ``common``: ops, ``SupernetConfig``, architecture helpers, the blocks every
  network shares (stem, preprocessing, an edge's ops, classifier);
- ``supernet``: the weight-sharing supernet's training path (``init_supernet``,
  ``supernet_apply``, the cell scan with its hand-written backward,
  drop-path, ``make_train_step``);
- ``supernet_eval``: its forward-only evaluation (``supernet_eval_apply``,
  ``make_eval_archs``);
- ``continuous``: the continuous relaxation (DARTS / BayesNAS);
- ``child``: the child network (``NasNetChild``, ``build_child``,
  ``child_variables_from_supernet``).

The public names of all five are re-exported here, and ``FAMILY`` is the
family object (``nas_jax.networks.base.NetworkFamily``) that
``nas_jax.networks.family("nasnet")`` returns.

Example:
    >>> from nas_jax.networks import nasnet
    >>> cfg = nasnet.SupernetConfig(num_classes=10, init_channels=16, layers=8)
    >>> params, stats = nasnet.init_supernet(jax.random.key(0), cfg, (32, 32, 3))
    >>> state = nasnet.init_train_state(params, stats, nasnet.default_optimizer())
    >>> train_step = nasnet.make_train_step(cfg, nasnet.default_optimizer())
    >>> state, metrics = train_step(state, arch, (x, y), jax.random.key(1))
    >>> acc, loss = nasnet.make_eval_archs(cfg)(state["params"], state["batch_stats"], archs, x_val, y_val)
"""
from __future__ import annotations

from .child import NasNetChild, build_child, child_variables_from_supernet
from .common import (AVG, IDENTITY, MAX, NUM_OPS, OPS, SEP3, SEP5, SupernetConfig, check_arch, loose_end_mask,
                     random_arch)
from .continuous import (continuous_apply, continuous_cell, derive_arch, edge_index, init_arch_params,
                         init_continuous, num_mixed_edges)
from .supernet import (default_optimizer, drop_path_scale, init_supernet, init_train_state, make_train_step,
                       supernet_apply)
from .supernet_eval import make_eval_archs, supernet_eval_apply

__all__ = [
    "AVG", "IDENTITY", "MAX", "NUM_OPS", "OPS", "SEP3", "SEP5", "NasNetChild", "SupernetConfig", "build_child",
    "check_arch", "child_variables_from_supernet", "continuous_apply", "continuous_cell", "default_optimizer",
    "derive_arch", "drop_path_scale", "edge_index", "init_arch_params", "init_continuous", "init_supernet",
    "init_train_state", "loose_end_mask", "make_eval_archs", "make_train_step", "num_mixed_edges",
    "random_arch", "supernet_apply", "supernet_eval_apply",
]
