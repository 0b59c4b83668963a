"""Builds the shipped NAS-Bench-201 table ``nas_jax/assets/nb201_cifar10.csv.gz``.

Reads the source CSV (``../shared/data/nb201/nb201_cifar10.csv.gz`` by default),
validates it with the tabular evaluator's own reader (all columns, one row per
cell, known ops, numbers), and writes the same CSV format (the columns in
``COLUMNS``), rows in the
benchmark's index order, numbers without redundant trailing zeros (values are
unchanged), gzip level 9 with a zero timestamp so the output is byte-for-byte
reproducible. It also writes ``nas_jax/assets/NB201_PROVENANCE.md`` with the
source, licence, command and SHA-256 checksums.

Example:
    python scripts/build_nb201_table.py \
        --source ../shared/data/nb201/nb201_cifar10.csv.gz
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import os
import sys

import numpy as np

from nas_jax.evaluators import tabular

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SOURCE = os.path.join(os.path.dirname(REPO), "shared", "data", "nb201",
                              "nb201_cifar10.csv.gz")
DEFAULT_OUT = os.path.join(REPO, "nas_jax", "assets", "nb201_cifar10.csv.gz")
#: Columns written, in this order: those the tabular evaluator needs plus the
#: model size. The source's 12-epoch columns (``valid_acc_12ep``,
#: ``test_acc_12ep``) are left out: nothing in the project uses them and they
#: are 17 % of the compressed size (the evaluator reads them from the source
#: file as extra columns if asked to).
COLUMNS = ("index", "arch", "test_acc", "valid_acc", "valid_acc_seeds",
           "train_time_s", "params_mb")


def sha256(path: str) -> str:
  """Hex SHA-256 of a file."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def trim(text: str) -> str:
  """A decimal string without redundant zeros; the value is unchanged.

  Example:
    >>> trim("91.6840"), trim("10.0"), trim("1444.219")
    ('91.684', '10', '1444.219')
  """
  text = text.strip()
  float(text)  # raises on a non-number
  if "." in text and "e" not in text.lower():
    text = text.rstrip("0").rstrip(".")
  return text or "0"


def build(source: str, out: str) -> dict[str, object]:
  """Validates ``source`` and writes ``out``; returns figures for the log."""
  table = tabular.read_table(source)  # full validation, raises ValueError
  missing = [c for c in COLUMNS if c not in ("index", "arch", "test_acc", "valid_acc",
                                             "valid_acc_seeds", "train_time_s")
             and c not in table.extras]
  if missing:
    raise ValueError(f"{source}: missing column(s) {', '.join(missing)} needed "
                     "by the shipped table; use the full NAS-Bench-201 export")
  with tabular._open_text(source) as f:  # pylint: disable=protected-access
    rows = list(csv.DictReader(f))
  rows.sort(key=lambda r: int(r["index"]))
  indices = [int(r["index"]) for r in rows]
  if indices != list(range(len(rows))):
    raise ValueError(f"{source}: column 'index' must hold 0..{len(rows) - 1} "
                     "once each; fix the source export")
  gaps = np.abs(table.valid_acc - np.nanmean(table.valid_seeds, axis=1))
  if gaps.max() > 1e-3:
    bad = int(np.argmax(gaps))
    raise ValueError(f"{source}, row of index {table.index[bad]}: valid_acc is not "
                     "the mean of valid_acc_seeds; fix the source export")
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(COLUMNS)
  for r in rows:
    values = []
    for c in COLUMNS:
      if c == "arch":
        values.append(r[c].strip())
      elif c == "valid_acc_seeds":
        values.append(";".join(trim(s) for s in r[c].split(";")))
      else:
        values.append(trim(r[c]))
    writer.writerow(values)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "wb") as raw:
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw,
                       mtime=0) as gz:
      gz.write(buffer.getvalue().encode("utf-8"))
  rebuilt = tabular.read_table(out)  # the shipped file must read back equal
  for name in ("archs", "index", "test_acc", "valid_acc", "train_time_s", "num_seeds"):
    if not np.array_equal(getattr(rebuilt, name), getattr(table, name)[np.argsort(table.index)]):
      raise AssertionError(f"column {name} changed while writing {out}")
  best = int(np.argmax(rebuilt.valid_acc))
  return {"rows": len(rows), "source_bytes": os.path.getsize(source),
          "out_bytes": os.path.getsize(out), "source_sha256": sha256(source),
          "out_sha256": sha256(out), "best_valid_arch": tabular.arch_string(rebuilt.archs[best]),
          "best_valid_test_acc": float(rebuilt.test_acc[best]),
          "max_test_acc": float(rebuilt.test_acc.max())}


PROVENANCE = """\
# NAS-Bench-201 CIFAR-10 table: provenance

`nb201_cifar10.csv.gz` holds all {rows} cells of the NAS-Bench-201 topology
space (Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural
Architecture Search", ICLR 2020) on CIFAR-10, one row per architecture in the
benchmark's index order.

- Source file: `nb201/nb201_cifar10.csv.gz` of the project's shared data folder
  ({source_bytes} bytes, SHA-256 `{source_sha256}`). Its README states: test
  accuracies from a public export of NATS-Bench `tss`
  (`get_more_info(i, 'cifar10', hp=200)`); validation accuracies, times and sizes
  from a public per-seed export of NAS-Bench-201; 12-epoch figures from a public
  export with `hp=12`.
- Licence of NAS-Bench-201: MIT.
- Built by: `{command}`
  (validates every column, op and cell; sorts by `index`; drops redundant
  trailing zeros of numbers, values unchanged; gzip level 9, zero timestamp).
- Output: {out_bytes} bytes, SHA-256 `{out_sha256}`.
- Columns: `index, arch, test_acc, valid_acc, valid_acc_seeds, train_time_s,
  params_mb` (meanings in `nas_jax/evaluators/tabular.py`). The source's
  12-epoch columns `valid_acc_12ep, test_acc_12ep` are left out (unused, 17 % of
  the size); pass the source file as `benchmark_file` to get them.
- Check: the best-validation cell is `{best_valid_arch}` with test accuracy
  {best_valid_test_acc:.4f} % (maximum test accuracy in the table
  {max_test_acc:.4f} %, the published optimum 94.37 %).

The search signal is `valid_acc_seeds` (one seed drawn per query); `test_acc`
is for reporting only.
"""


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--source", default=DEFAULT_SOURCE,
                      help="source CSV (default: %(default)s)")
  parser.add_argument("--out", default=DEFAULT_OUT,
                      help="table to write (default: %(default)s)")
  parser.add_argument("--provenance", default=None,
                      help="provenance file (default: NB201_PROVENANCE.md beside --out)")
  args = parser.parse_args(argv)
  figures = build(args.source, args.out)
  provenance = args.provenance or os.path.join(os.path.dirname(args.out),
                                               "NB201_PROVENANCE.md")
  command = "python scripts/build_nb201_table.py --source ../shared/data/nb201/nb201_cifar10.csv.gz"
  with open(provenance, "w", encoding="utf-8") as f:
    f.write(PROVENANCE.format(command=command, **figures))
  for k, v in figures.items():
    print(f"{k}: {v}")
  print(f"wrote {args.out} and {provenance}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
