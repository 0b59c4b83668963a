"""Data: image classification datasets (digits, tfds, image folders) and PTB.

See ``nas_jax.data.images`` and ``nas_jax.data.ptb``.

Example:
    >>> from nas_jax import data
    >>> ds = data.load_dataset("digits", train_size=64)
    >>> print(ds.summary())
    digits: 8x8x1, 10 classes, train 64, valid 144, test 359
    >>> batch = next(data.epoch_batches(ds, "train", 32, seed=0, epoch=0))
    >>> batch["image"].shape
    (32, 8, 8, 1)
"""
from nas_jax.data.images import (  # noqa: F401
    Augment, ImageDataset, as_dataset, default_augment, epoch_batches, load_dataset,
    num_batches, prefetch)
from nas_jax.data.ptb import (  # noqa: F401
    Corpus, batchify, bptt_batches, load_ptb, num_bptt_batches)
