"""Data: image classification datasets (digits, tfds, image folders) and PTB.

See ``nas_jax.data.images`` and ``nas_jax.data.ptb``.

Example:
    >>> from nas_jax import data
    >>> ds = data.load_dataset("digits")
    >>> batch = next(data.epoch_batches(ds, "train", 32, seed=0, epoch=0))
"""
from nas_jax.data.images import (  # noqa: F401
    Augment, ImageDataset, as_dataset, default_augment, epoch_batches, load_dataset,
    num_batches, prefetch)
from nas_jax.data.ptb import (  # noqa: F401
    Corpus, batchify, bptt_batches, load_ptb, num_bptt_batches)
