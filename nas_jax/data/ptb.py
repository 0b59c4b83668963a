"""Penn Treebank (Mikolov's 10k-word preprocessing) for recurrent-cell search.

``load_ptb(data_dir)`` reads ``ptb.{train,valid,test}.txt``, builds the
vocabulary from the training file (every line ends with ``<eos>``) and maps
each split to int32 word ids. ``batchify`` lays a stream out as
``[batch_size, T]`` columns (as ENAS/NAO/DARTS do) and ``bptt_batches`` cuts
it into truncated-BPTT windows ``(inputs, targets)``.

Example:
    >>> corpus = load_ptb("/data/ptb")
    >>> corpus.vocab_size
    10000
    >>> data = batchify(corpus.train, 64)
    >>> for x, y in bptt_batches(data, 35):
    ...   x.shape  # (64, 35)
"""
from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
from typing import Iterator

import numpy as np

EOS = "<eos>"
UNK = "<unk>"


@dataclasses.dataclass
class Corpus:
  """A tokenised corpus.

  Attributes:
    vocab: id -> word (most frequent first; ties alphabetical).
    word_to_id: word -> id.
    train, valid, test: int32 id streams.
  """
  vocab: list[str]
  word_to_id: dict[str, int]
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)


def _words(path: pathlib.Path) -> list[str]:
  words = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      words += line.split() + [EOS]
  return words


def load_ptb(data_dir: str | os.PathLike) -> Corpus:
  """Reads ``ptb.{train,valid,test}.txt`` from ``data_dir``.

  Args:
    data_dir: directory holding the three files.

  Returns:
    A ``Corpus``; the vocabulary comes from the training file. Words of
    valid/test unseen in training map to ``<unk>`` when the vocabulary has it.

  Raises:
    ValueError: a missing file, an empty training file, or an unknown word
      with no ``<unk>`` in the vocabulary.
  """
  root = pathlib.Path(data_dir).expanduser()
  paths = {s: root / f"ptb.{s}.txt" for s in ("train", "valid", "test")}
  missing = [str(p) for p in paths.values() if not p.is_file()]
  if missing:
    raise ValueError(f"Penn Treebank files missing: {missing}; pass the "
                     "directory holding ptb.train.txt, ptb.valid.txt and "
                     "ptb.test.txt (Mikolov's preprocessing)")
  train_words = _words(paths["train"])
  if len(train_words) <= train_words.count(EOS):
    raise ValueError(f"{paths['train']} holds no words")
  counts = collections.Counter(train_words)
  vocab = sorted(counts, key=lambda w: (-counts[w], w))
  word_to_id = {w: i for i, w in enumerate(vocab)}

  def encode(words, split):
    unk = word_to_id.get(UNK)
    ids = np.empty(len(words), np.int32)
    for i, w in enumerate(words):
      j = word_to_id.get(w, unk)
      if j is None:
        raise ValueError(f"word {w!r} of ptb.{split}.txt is not in the "
                         "training vocabulary and there is no <unk> token")
      ids[i] = j
    return ids

  return Corpus(vocab=vocab, word_to_id=word_to_id,
                train=encode(train_words, "train"),
                valid=encode(_words(paths["valid"]), "valid"),
                test=encode(_words(paths["test"]), "test"))


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
  """Lays a stream out as ``batch_size`` parallel rows, dropping the tail.

  Row ``b`` is the contiguous slice ``ids[b*T:(b+1)*T]`` with
  ``T = len(ids) // batch_size``, so the hidden state carries over from one
  BPTT window to the next along each row.

  Args:
    ids: int stream.
    batch_size: number of rows.

  Returns:
    int32[batch_size, T].
  """
  ids = np.asarray(ids)
  if ids.ndim != 1:
    raise ValueError(f"batchify expects a 1-D id stream, got shape {ids.shape}")
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  t = len(ids) // batch_size
  if t < 2:
    raise ValueError(f"stream of {len(ids)} tokens is too short for "
                     f"batch_size {batch_size}")
  return ids[:t * batch_size].reshape(batch_size, t).astype(np.int32)


def num_bptt_batches(data: np.ndarray, bptt: int, *,
                     drop_remainder: bool = False) -> int:
  """Windows per pass that ``bptt_batches`` yields."""
  n = data.shape[1] - 1
  return n // bptt if drop_remainder else -(-n // bptt)


def bptt_batches(data: np.ndarray, bptt: int, *, start_step: int = 0,
                 drop_remainder: bool = False
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Truncated-BPTT windows over batchified data.

  Args:
    data: int32[B, T] from ``batchify``.
    bptt: window length (35 in ENAS/NAO/DARTS).
    start_step: first window to yield (resume).
    drop_remainder: skip the last, shorter window (keeps shapes fixed for a
      jitted step); by default it is yielded so every token is predicted.

  Yields:
    ``(inputs, targets)``, each int32[B, <=bptt]; targets are inputs shifted
    by one token.
  """
  if bptt <= 0:
    raise ValueError(f"bptt must be positive, got {bptt}")
  if data.ndim != 2:
    raise ValueError(f"bptt_batches expects [batch, time] data, got shape "
                     f"{data.shape}; call batchify first")
  n = data.shape[1] - 1
  for step in range(start_step, num_bptt_batches(data, bptt,
                                                 drop_remainder=drop_remainder)):
    i = step * bptt
    length = min(bptt, n - i)
    yield data[:, i:i + length], data[:, i + 1:i + 1 + length]
