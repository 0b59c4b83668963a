"""Penn Treebank (Mikolov's 10k-word preprocessing) for recurrent-cell search.

``load_ptb(data_dir)`` reads ``ptb.{train,valid,test}.txt``, builds the
vocabulary from the training file (every line ends with ``<eos>``) and maps
each split to int32 word ids; without ``data_dir`` the directory is
``$NAS_JAX_PTB_DIR`` (``ptb_dir``). ``batchify`` lays a stream out as
``[batch_size, T]`` columns (as ENAS/NAO/DARTS do) and ``bptt_batches`` cuts
it into truncated-BPTT windows ``(inputs, targets)``. ``eval_windows`` lays a
stream out for evaluation so that every token but the first is predicted
exactly once, in fixed-shape padded and masked windows.

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


#: Environment variable naming the PTB directory when none is passed.
PTB_DIR_VARIABLE = "NAS_JAX_PTB_DIR"
FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
_FIX = (f"pass --data-dir DIR (data_dir=) or set ${PTB_DIR_VARIABLE} to a directory "
        "holding ptb.train.txt, ptb.valid.txt and ptb.test.txt (Mikolov's preprocessing)")


def ptb_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The PTB directory: ``data_dir``, else ``$NAS_JAX_PTB_DIR``.

  Raises:
    ValueError: neither is set (the message names the flag and the variable).

  Example:
    >>> ptb_dir("/data/ptb")
    PosixPath('/data/ptb')
  """
  if data_dir is None or str(data_dir) == "":
    data_dir = os.environ.get(PTB_DIR_VARIABLE) or None
  if data_dir is None:
    raise ValueError(f"no Penn Treebank directory given: {_FIX}")
  return pathlib.Path(data_dir).expanduser()


def load_ptb(data_dir: str | os.PathLike | None = None) -> Corpus:
  """Reads ``ptb.{train,valid,test}.txt`` from ``data_dir``.

  Args:
    data_dir: directory holding the three files; None: ``$NAS_JAX_PTB_DIR``.

  Returns:
    A ``Corpus``; the vocabulary comes from the training file. Words of
    valid/test unseen in training map to ``<unk>`` when the vocabulary has it.

  Raises:
    ValueError: no directory, a missing file, an empty training file, or an
      unknown word with no ``<unk>`` in the vocabulary.
  """
  root = ptb_dir(data_dir)
  paths = {s: root / f"ptb.{s}.txt" for s in ("train", "valid", "test")}
  missing = [p.name for p in paths.values() if not p.is_file()]
  if missing:
    what = "does not exist" if not root.is_dir() else f"lacks {', '.join(missing)}"
    raise ValueError(f"Penn Treebank directory {root} {what}: {_FIX}")
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


def eval_windows(ids: np.ndarray, batch_size: int, bptt: int
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Fixed-shape evaluation windows predicting every token but the first once.

  The ``n - 1`` predictions of a stream of ``n`` tokens (token ``p + 1``
  from tokens ``..p``) are split into ``batch_size`` contiguous rows of
  ``R = ceil((n - 1) / batch_size)`` predictions; row ``b`` holds
  predictions ``b*R .. b*R + R - 1``, so consecutive rows overlap by one
  token and no prediction is lost at a row boundary or in a tail (unlike
  ``batchify``). The rows are cut into windows of ``bptt``; the end of the
  last row and of the last window is padded with id 0 and masked out.

  Args:
    ids: int stream (at least 2 tokens).
    batch_size: rows.
    bptt: window length.

  Returns:
    List of ``(inputs, targets, mask)``: int32, int32, float32, each
    ``[batch_size, bptt]``; ``mask.sum()`` over all windows is ``n - 1``.

  Example:
    >>> windows = eval_windows(np.arange(10), 2, 3)
    >>> [w[0].tolist() for w in windows]
    [[[0, 1, 2], [5, 6, 7]], [[3, 4, 0], [8, 0, 0]]]
    >>> sum(int(m.sum()) for _, _, m in windows)
    9
  """
  ids = np.asarray(ids)
  if ids.ndim != 1 or len(ids) < 2:
    raise ValueError(f"eval_windows needs a 1-D stream of at least 2 tokens, got shape {ids.shape}")
  if batch_size <= 0 or bptt <= 0:
    raise ValueError(f"batch_size and bptt must be positive, got {batch_size}, {bptt}")
  preds = len(ids) - 1
  rows = -(-preds // batch_size)
  length = -(-rows // bptt) * bptt
  p = np.arange(batch_size)[:, None] * rows + np.arange(length)[None, :]
  valid = (np.arange(length)[None, :] < rows) & (p < preds)
  inputs = np.where(valid, ids[np.minimum(p, preds - 1)], 0).astype(np.int32)
  targets = np.where(valid, ids[np.minimum(p + 1, preds)], 0).astype(np.int32)
  mask = valid.astype(np.float32)
  return [(inputs[:, i:i + bptt], targets[:, i:i + bptt], mask[:, i:i + bptt])
          for i in range(0, length, bptt)]
