"""NAS-Bench-201 tabular evaluator: a query is a table look-up, not a training run.

The table has one row per cell of the NAS-Bench-201 space (all ``5**6 = 15625``)
in the CSV format of ``../shared/data/nb201`` (gzip-compressed or plain):

=================  ==========================================================
column             meaning
=================  ==========================================================
index              the architecture's index in NAS-Bench-201 / NATS-Bench tss
arch               cell string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``
test_acc           test accuracy (%) after 200 epochs: reported, never searched
valid_acc          mean validation accuracy (%) over the seeds
valid_acc_seeds    per-seed validation accuracies, ``;``-separated
train_time_s       seconds to train 200 epochs (the simulated cost)
(any other)        extra numeric columns (``params_mb``, ``valid_acc_12ep``,
                   ...) are kept and reported in ``Evaluation.info``
=================  ==========================================================

A query returns ONE seed's validation accuracy, drawn with the key given to
``evaluate``, as the search score, and ``train_time_s`` as the cost. The test
accuracy goes only into ``Evaluation.info`` and ``report(arch)``, which the
experiment loop never hands to a strategy. The CIFAR-10 table ships with the
package (``nas_jax/assets/nb201_cifar10.csv.gz``, built by
``scripts/build_nb201_table.py``); the benchmark's other datasets plug in with
the ``benchmark_file`` setting.

Example:
    >>> from nas_jax.spaces import get_space
    >>> space = get_space("nb201")
    >>> evaluator = TabularEvaluator(space)   # shipped CIFAR-10 table
    >>> archs = np.array([[3, 3, 3, 1, 3, 2], [0, 0, 0, 0, 0, 0]], np.int32)
    >>> result, _ = evaluator.evaluate({}, archs, jax.random.key(1))
    >>> result.scores    # one seed's validation accuracy per arch, in %
    array([91.72 ,  9.712])
    >>> result.costs     # the benchmark's training time, seconds
    array([2879.749,  740.394])
    >>> evaluator.report(archs[0])["test_acc"]   # for reporting only
    94.3733
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import importlib.resources
import io
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nas_jax.evaluators.base import Evaluation, Evaluator
from nas_jax.spaces.base import SearchSpace

#: Operation names in the order of the nb201 space's op ids 0..4.
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                        "avg_pool_3x3")
#: Edges ``(to_node, from_node)`` in the benchmark's string order.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1),
                                      (3, 2))
NUM_ARCHS: int = len(OPS) ** len(EDGES)
#: Columns every table must have.
REQUIRED_COLUMNS: tuple[str, ...] = ("index", "arch", "test_acc", "valid_acc",
                                     "valid_acc_seeds", "train_time_s")
#: Packaged default: the CIFAR-10 table.
DEFAULT_TABLE: str = "nb201_cifar10.csv.gz"
_OP_ID = {name: i for i, name in enumerate(OPS)}
_CODE_WEIGHTS = len(OPS) ** np.arange(len(EDGES), dtype=np.int64)
_ENTRY = [{f"{op}~{src}": i for i, op in enumerate(OPS)} for _, src in EDGES]
_SLOTS = (1, 3, 4, 6, 7, 8)  # positions of the 6 entries in text.split("|")


def _fast_parse(text: str) -> list[int] | None:
  """Op ids of a well-formed cell string, or None (then the slow parser explains)."""
  parts = text.split("|")
  if (len(parts) != 10 or parts[0] or parts[9] or parts[2] != "+" or parts[5] != "+"):
    return None
  try:
    return [_ENTRY[e][parts[slot]] for e, slot in enumerate(_SLOTS)]
  except KeyError:
    return None


def parse_arch_string(text: str) -> np.ndarray:
  """Parses a NAS-Bench-201 cell string into int32[6] op ids (edge order).

  Args:
    text: e.g. ``"|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
      "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"``.

  Returns:
    int32[6] op ids in the order (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2).

  Raises:
    ValueError: malformed string or unknown op; the message says what was
      expected.

  Example:
    >>> parse_arch_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    array([0, 0, 0, 0, 0, 0], dtype=int32)
  """
  nodes = text.strip().split("+")
  if len(nodes) != 3:
    raise ValueError(
        f"cell string {text!r} has {len(nodes)} node group(s); expected 3 "
        "joined by '+', like |op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
  ops = []
  for node, group in enumerate(nodes, start=1):
    if len(group) < 2 or group[0] != "|" or group[-1] != "|":
      raise ValueError(
          f"node {node} group {group!r} of {text!r} must start and end with '|'")
    entries = group[1:-1].split("|")
    if len(entries) != node:
      raise ValueError(
          f"node {node} of {text!r} has {len(entries)} input(s); expected "
          f"{node} (one per earlier node)")
    for source, entry in enumerate(entries):
      name, sep, src = entry.partition("~")
      if not sep or src != str(source):
        raise ValueError(
            f"entry {entry!r} of node {node} in {text!r} must read "
            f"'<op>~{source}'")
      if name not in _OP_ID:
        raise ValueError(
            f"unknown op {name!r} in {text!r}; allowed ops: {', '.join(OPS)}")
      ops.append(_OP_ID[name])
  return np.asarray(ops, dtype=np.int32)


def arch_string(arch: Any) -> str:
  """The NAS-Bench-201 cell string of int32[6] op ids (inverse of parsing).

  Example:
    >>> arch_string([3, 3, 3, 1, 3, 2])
    '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|'
  """
  ops = [OPS[int(o)] for o in np.ravel(arch)]
  return ("|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|").format(*ops)


def arch_codes(archs: np.ndarray) -> np.ndarray:
  """Base-5 codes (int64[K]) of int32[K, 6] op ids; a dense key in 0..15624."""
  return np.asarray(archs, dtype=np.int64) @ _CODE_WEIGHTS


@dataclasses.dataclass(frozen=True)
class Table:
  """A parsed, validated NAS-Bench-201 table (rows in file order).

  Attributes:
    path: where it was read from.
    archs: int32[N, 6] op ids.
    index: int64[N] the benchmark's architecture index.
    test_acc: float64[N] (report only).
    valid_acc: float64[N] mean validation accuracy.
    valid_seeds: float64[N, S] per-seed validation accuracy, NaN padded.
    num_seeds: int32[N] how many entries of ``valid_seeds`` are real.
    train_time_s: float64[N].
    extras: other numeric columns, name -> float64[N].
    row_of_code: int32[15625] row of each base-5 arch code.
  """
  path: str
  archs: np.ndarray
  index: np.ndarray
  test_acc: np.ndarray
  valid_acc: np.ndarray
  valid_seeds: np.ndarray
  num_seeds: np.ndarray
  train_time_s: np.ndarray
  extras: dict[str, np.ndarray]
  row_of_code: np.ndarray

  def rows(self, archs: Any) -> np.ndarray:
    """Row indices (int64[K]) of int[K, 6] op-id arrays; vectorised.

    Raises:
      ValueError: wrong shape or an op id outside 0..4.
    """
    archs = np.asarray(archs)
    if archs.ndim != 2 or archs.shape[1] != len(EDGES):
      raise ValueError(
          f"expected archs of shape [K, {len(EDGES)}] (nb201 op ids), got "
          f"{archs.shape}; stack single archs with archs[None]")
    if archs.size and (archs.min() < 0 or archs.max() >= len(OPS)):
      raise ValueError(
          f"nb201 op ids must lie in 0..{len(OPS) - 1}, got values "
          f"{archs.min()}..{archs.max()}")
    return self.row_of_code[arch_codes(archs)]


def default_table_path() -> str:
  """Path of the packaged CIFAR-10 table."""
  ref = importlib.resources.files("nas_jax").joinpath("assets", DEFAULT_TABLE)
  return str(ref)


def _open_text(path: str) -> io.TextIOBase:
  with open(path, "rb") as f:
    magic = f.read(2)
  if magic == b"\x1f\x8b":
    return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
  return open(path, encoding="utf-8", newline="")


def _number(text: str, where: str, column: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise ValueError(
        f"{where}, column {column!r}: {text!r} is not a number; write a "
        "decimal number such as 93.66") from None
  if not math.isfinite(value):
    raise ValueError(
        f"{where}, column {column!r}: {text!r} is not finite; write a "
        "finite decimal number")
  return value


def read_table(path: str | os.PathLike[str]) -> Table:
  """Reads and validates a NAS-Bench-201 CSV table (plain or gzip).

  Args:
    path: the file, in the format described in the module docstring.

  Returns:
    The parsed ``Table``.

  Raises:
    ValueError: missing file or column, malformed cell string, unknown op,
      non-numeric value, duplicate or missing architectures. The message names
      the file, the line (1 is the header) and the column, and the fix.

  Example:
    >>> table = read_table(default_table_path())
    >>> table.archs.shape
    (15625, 6)
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ValueError(
        f"benchmark file {path!r} does not exist; give the path of a "
        "NAS-Bench-201 CSV table (e.g. ../shared/data/nb201/nb201_cifar10.csv.gz)")
  with _open_text(path) as f:
    reader = csv.reader(f)
    try:
      header = next(reader)
    except StopIteration:
      raise ValueError(f"{path}: the file is empty; expected a CSV header with "
                       f"columns {', '.join(REQUIRED_COLUMNS)}") from None
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
      raise ValueError(
          f"{path}, line 1: missing column(s) {', '.join(missing)}; the header "
          f"must contain {', '.join(REQUIRED_COLUMNS)}")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
      raise ValueError(f"{path}, line 1: column(s) {', '.join(dup)} appear "
                       "more than once; keep one of each")
    extra_names = [h for h in header if h not in REQUIRED_COLUMNS]
    lines, rows = [], []
    for line_no, row in enumerate(reader, start=2):
      if not row:
        continue
      if len(row) != len(header):
        raise ValueError(
            f"{path}, line {line_no}: {len(row)} field(s) but the header has "
            f"{len(header)}; give one value per column")
      lines.append(line_no)
      rows.append(row)
  if not rows:
    raise ValueError(f"{path}: no data rows after the header; expected "
                     f"{NUM_ARCHS} rows, one per architecture")
  columns = dict(zip(header, zip(*rows)))

  def numbers(name: str) -> np.ndarray:
    texts = columns[name]
    try:
      values = np.asarray(texts, dtype=np.float64)
    except ValueError:
      values = None
    if values is None or not np.isfinite(values).all():
      for line_no, text in zip(lines, texts):  # find the culprit for the message
        _number(text, f"{path}, line {line_no}", name)
    return values

  archs = []
  for line_no, text in zip(lines, columns["arch"]):
    ops = _fast_parse(text)
    if ops is None:
      try:
        ops = parse_arch_string(text)
      except ValueError as e:
        raise ValueError(f"{path}, line {line_no}, column 'arch': {e}") from None
    archs.append(ops)
  try:
    index = np.asarray(columns["index"], dtype=np.int64)
  except ValueError:
    bad = next(i for i, t in enumerate(columns["index"]) if not t.strip().lstrip("-").isdigit())
    raise ValueError(f"{path}, line {lines[bad]}, column 'index': {columns['index'][bad]!r} "
                     "is not an integer; write the benchmark's architecture index") from None
  test, valid, times = numbers("test_acc"), numbers("valid_acc"), numbers("train_time_s")
  if (times < 0).any():
    bad = int(np.argmax(times < 0))
    raise ValueError(f"{path}, line {lines[bad]}, column 'train_time_s': {times[bad]} is "
                     "negative; give the training time in seconds")
  extras = {name: numbers(name) for name in extra_names}
  seeds = []
  for line_no, text in zip(lines, columns["valid_acc_seeds"]):
    parts = [t for t in text.split(";") if t.strip()]
    if not parts:
      raise ValueError(
          f"{path}, line {line_no}, column 'valid_acc_seeds': empty; give the per-seed "
          "validation accuracies separated by ';' (e.g. 90.71;90.72)")
    seeds.append(parts)
  width = max(len(p) for p in seeds)
  seed_texts = [p + ["nan"] * (width - len(p)) for p in seeds]
  try:
    seeds_np = np.asarray(seed_texts, dtype=np.float64)
  except ValueError:
    seeds_np = None
  num_seeds = np.asarray([len(p) for p in seeds], dtype=np.int32)
  real = np.arange(width) < num_seeds[:, None]
  if seeds_np is None or not np.isfinite(seeds_np[real]).all():
    for line_no, parts in zip(lines, seeds):
      for t in parts:
        _number(t, f"{path}, line {line_no}", "valid_acc_seeds")
  archs_np = np.asarray(archs, dtype=np.int32).reshape(-1, len(EDGES))
  codes = arch_codes(archs_np)
  order = np.argsort(codes, kind="stable")
  sorted_codes = codes[order]
  same = np.nonzero(sorted_codes[1:] == sorted_codes[:-1])[0]
  if same.size:
    a, b = sorted(order[same[0]:same[0] + 2])
    raise ValueError(
        f"{path}, lines {lines[a]} and {lines[b]}, column 'arch': duplicate "
        f"architecture {arch_string(archs_np[a])}; keep one row per architecture")
  if len(archs_np) != NUM_ARCHS:
    absent = np.setdiff1d(np.arange(NUM_ARCHS), codes)[0]
    digits = (absent // _CODE_WEIGHTS) % len(OPS)
    raise ValueError(
        f"{path}: {len(archs_np)} architectures but NAS-Bench-201 has "
        f"{NUM_ARCHS}; e.g. {arch_string(digits)} is missing; give one row for "
        "every cell")
  row_of_code = np.empty(NUM_ARCHS, dtype=np.int32)
  row_of_code[codes] = np.arange(NUM_ARCHS, dtype=np.int32)
  return Table(
      path=path, archs=archs_np, index=index, test_acc=test, valid_acc=valid,
      valid_seeds=seeds_np, num_seeds=num_seeds, train_time_s=times, extras=extras,
      row_of_code=row_of_code)


def _format_number(value: float) -> str:
  text = f"{float(value):.6f}".rstrip("0").rstrip(".")
  return text if text not in ("", "-0") else "0"


def write_table(path: str | os.PathLike[str], archs: Any, *, test_acc: Any,
                valid_seeds: Any, train_time_s: Any, index: Any = None,
                extras: dict[str, Any] | None = None) -> str:
  """Writes a table in the format ``read_table`` reads (gzip if ``.gz``).

  Handy for synthetic tables in tests and for converting other exports.

  Args:
    path: the file to write; a name ending in ``.gz`` is gzip-compressed.
    archs: int[N, 6] op ids.
    test_acc: float[N].
    valid_seeds: float[N, S] per-seed validation accuracies (NaN entries are
      left out, so rows may have fewer seeds).
    train_time_s: float[N].
    index: int[N] benchmark indices (default ``0..N-1``).
    extras: further numeric columns, name -> float[N].

  Returns:
    ``path`` as a string.

  Example:
    >>> import itertools
    >>> archs = np.array(list(itertools.product(range(5), repeat=6)))
    >>> write_table("t.csv.gz", archs, test_acc=np.full(15625, 90.0),
    ...             valid_seeds=np.full((15625, 2), 88.0),
    ...             train_time_s=np.full(15625, 1e3))
    't.csv.gz'
    >>> read_table("t.csv.gz").valid_seeds.shape
    (15625, 2)
  """
  path = os.fspath(path)
  archs = np.asarray(archs)
  n = len(archs)
  seeds = np.asarray(valid_seeds, dtype=np.float64).reshape(n, -1)
  index = np.arange(n) if index is None else np.asarray(index)
  extras = dict(extras or {})
  header = list(REQUIRED_COLUMNS) + list(extras)
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  for i in range(n):
    real = seeds[i][~np.isnan(seeds[i])]
    row = [str(int(index[i])), arch_string(archs[i]), _format_number(np.ravel(test_acc)[i]),
           _format_number(real.mean()), ";".join(_format_number(v) for v in real),
           _format_number(np.ravel(train_time_s)[i])]
    row += [_format_number(np.ravel(v)[i]) for v in extras.values()]
    writer.writerow(row)
  data = buffer.getvalue().encode("utf-8")
  if path.endswith(".gz"):
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                mtime=0) as gz:
      gz.write(data)
  else:
    with open(path, "wb") as f:
      f.write(data)
  return path


@functools.lru_cache(maxsize=8)
def _cached_table(path: str, mtime_ns: int, size: int) -> Table:
  del mtime_ns, size  # cache keys only: a rewritten file is read again
  return read_table(path)


def load_table(path: str | os.PathLike[str] | None = None) -> Table:
  """``read_table`` with a cache (tables are immutable); None: shipped table."""
  path = os.path.abspath(os.fspath(path)) if path is not None else default_table_path()
  if not os.path.isfile(path):
    return read_table(path)  # raises the explanatory ValueError
  stat = os.stat(path)
  return _cached_table(path, stat.st_mtime_ns, stat.st_size)


@jax.jit
def _draw_seed(key: jax.Array, num_seeds: jax.Array) -> jax.Array:
  """One seed index in ``0..num_seeds[i]-1`` per architecture, uniformly.

  ``floor(u * n)`` with ``u ~ U[0, 1)``: compiles about 2x faster on XLA:CPU
  than ``jax.random.randint`` (compilation dominates a short benchmark run).
  """
  u = jax.random.uniform(key, num_seeds.shape)
  return jnp.minimum((u * num_seeds).astype(jnp.int32), num_seeds - 1)


class TabularEvaluator(Evaluator):
  """Look-up evaluator over a NAS-Bench-201 table (registry name ``tabular``).

  Args:
    space: the ``nb201`` search space (arch = int32[6] op ids).
    config: ``benchmark_file`` (path of a CSV table; default: the shipped
      CIFAR-10 table); ``noisy`` (default True: the score is one seed's
      validation accuracy drawn with the evaluation key, as in the
      NAS-Bench-201 protocol; False: the mean over seeds).

  Example:
    >>> import itertools
    >>> from nas_jax.spaces import get_space
    >>> archs = np.array(list(itertools.product(range(5), repeat=6)))
    >>> path = write_table("t.csv", archs, test_acc=np.full(15625, 70.0),
    ...                    valid_seeds=np.tile([[60.0, 62.0]], (15625, 1)),
    ...                    train_time_s=np.full(15625, 1e3))
    >>> evaluator = TabularEvaluator(get_space("nb201"), {"benchmark_file": path, "noisy": False})
    >>> result, state = evaluator.evaluate({}, archs[:2], jax.random.key(0))
    >>> result.scores  # the mean over seeds (noisy=False)
    array([61., 61.])
  """

  name = "tabular"

  replayable = True  # a table look-up: same key, same score

  def __init__(self, space: SearchSpace, config: dict[str, Any] | None = None):
    super().__init__(space, config)
    allowed = {"benchmark_file", "noisy"}
    unknown = set(self.config) - allowed
    if unknown:
      raise ValueError(f"unknown tabular setting(s) {sorted(unknown)}; "
                       f"allowed: {sorted(allowed)}")
    if getattr(space, "name", None) != "nb201" or tuple(space.arch_shape) != (len(EDGES),):
      raise ValueError(
          f"the tabular evaluator scores NAS-Bench-201 cells; got space "
          f"{getattr(space, 'name', space)!r}: use get_space('nb201')")
    self.noisy = bool(self.config.get("noisy", True))
    self.table = load_table(self.config.get("benchmark_file"))
    # The dataset the table was measured on, for result files and retraining
    # (the run's `dataset` setting does not apply to a table look-up).
    self.dataset_name = self.fixed_dataset(self.config)

  def evaluate(self, state: Any, archs: np.ndarray,
               key: jax.Array) -> tuple[Evaluation, Any]:
    """Scores ``archs`` (int32[K, 6]) by table look-up.

    Args:
      state: unused (the evaluator is stateless); returned unchanged.
      archs: int32[K, 6] op ids.
      key: PRNG key that picks each architecture's seed.

    Returns:
      ``Evaluation`` with scores (one seed's validation accuracy, %), costs
      (``train_time_s``) and info (``test_acc``, ``valid_acc`` mean,
      ``nb201_index``, ``arch_str`` and any extra columns), and ``state``.
    """
    table = self.table
    rows = table.rows(archs)
    if self.noisy:
      pick = np.asarray(_draw_seed(key, table.num_seeds[rows]))
      scores = table.valid_seeds[rows, pick]
    else:
      scores = table.valid_acc[rows]
    info = [self._info(int(r)) for r in rows]
    return Evaluation(scores=np.asarray(scores, dtype=np.float64),
                      costs=table.train_time_s[rows].astype(np.float64),
                      info=info), state

  @classmethod
  def fixed_dataset(cls, settings: dict[str, Any]) -> str:
    """``"cifar10"`` for the shipped table, ``"nb201-table:<file>"`` for another one."""
    table = settings.get("benchmark_file")
    return "cifar10" if table is None else f"nb201-table:{table}"

  def cost_network(self) -> dict[str, Any]:
    """The benchmark's own network: C=16, N=5 on 32x32 RGB images, 10 classes (CIFAR-10)."""
    return {"num_classes": 10, "init_channels": 16, "layers": 5, "input_shape": (32, 32, 3)}

  def report(self, arch: np.ndarray) -> dict[str, Any]:
    """Final figures of one architecture (test accuracy etc.), report only."""
    row = int(self.table.rows(np.asarray(arch).reshape(1, -1))[0])
    return self._info(row)

  def _info(self, row: int) -> dict[str, Any]:
    table = self.table
    out = {"test_acc": float(table.test_acc[row]),
           "valid_acc": float(table.valid_acc[row]),
           "train_time_s": float(table.train_time_s[row]),
           "nb201_index": int(table.index[row]),
           "arch_str": arch_string(table.archs[row])}
    for name, values in table.extras.items():
      out[name] = float(values[row])
    return out
