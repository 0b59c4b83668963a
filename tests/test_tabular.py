"""Tests of the NAS-Bench-201 tabular evaluator, its table reader and the build script."""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import itertools
import os
import types

import jax
import numpy as np
import pytest

from nas_jax import registry
from nas_jax.evaluators import tabular
from nas_jax.evaluators.tabular import TabularEvaluator, read_table, write_table

ALL_ARCHS = np.array(list(itertools.product(range(5), repeat=6)), np.int32)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTINEL = 12.3456


def synthetic_columns(seed: int = 0, test_value: float | None = None) -> dict:
  """Columns of a full synthetic table: an additive 'quality' per op, noisy seeds."""
  rng = np.random.default_rng(seed)
  quality = np.array([0.0, 1.0, 2.5, 3.0, 1.5])
  mean = 60.0 + 2.0 * quality[ALL_ARCHS].sum(axis=1) + rng.normal(0, 0.5, len(ALL_ARCHS))
  seeds = mean[:, None] + rng.normal(0, 0.4, (len(ALL_ARCHS), 3))
  seeds[::2, 2] = np.nan  # every other row has two seeds, as in the real table
  test = np.full(len(ALL_ARCHS), test_value) if test_value is not None else mean + 3.0
  return {"archs": ALL_ARCHS, "test_acc": test, "valid_seeds": seeds,
          "train_time_s": 1000.0 + 50.0 * ALL_ARCHS.sum(axis=1),
          "index": rng.permutation(len(ALL_ARCHS)),
          "extras": {"params_mb": 0.1 + 0.01 * ALL_ARCHS.sum(axis=1)}}


def write_synthetic(path, seed: int = 0, test_value: float | None = None) -> str:
  cols = synthetic_columns(seed, test_value)
  return write_table(path, cols.pop("archs"), **cols)


@pytest.fixture(scope="module")
def plain_table(tmp_path_factory) -> str:
  return write_synthetic(tmp_path_factory.mktemp("nb201") / "synthetic.csv")


@pytest.fixture(scope="module")
def sentinel_table(tmp_path_factory) -> str:
  return write_synthetic(tmp_path_factory.mktemp("nb201") / "sentinel.csv.gz",
                         test_value=SENTINEL)


@pytest.fixture(scope="module")
def space():
  return registry.get_space("nb201")


def _rewrite(src: str, dst, edit) -> str:
  with open(src, encoding="utf-8") as f:
    lines = f.read().split("\n")
  lines = edit(lines)
  with open(dst, "w", encoding="utf-8") as f:
    f.write("\n".join(lines))
  return str(dst)


# --- parsing -----------------------------------------------------------------
def test_parse_and_format_arch_string_roundtrip():
  text = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
          "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
  arch = tabular.parse_arch_string(text)
  assert arch.tolist() == [3, 3, 4, 1, 3, 1]
  assert tabular.arch_string(arch) == text


@pytest.mark.parametrize("text, match", [
    ("|none~0|+|none~0|none~1|", "3 joined by"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|", "expected 3"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "must read '<op>~1'"),
    ("|none~0|+|none~0|conv_5x5~1|+|none~0|none~1|none~2|", "unknown op 'conv_5x5'"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "start and end"),
])
def test_parse_arch_string_rejects_malformed(text, match):
  with pytest.raises(ValueError, match=match):
    tabular.parse_arch_string(text)


def test_read_table_synthetic(plain_table):
  table = read_table(plain_table)
  cols = synthetic_columns()
  assert table.archs.shape == (15625, 6)
  np.testing.assert_array_equal(table.archs, ALL_ARCHS)
  np.testing.assert_array_equal(table.index, cols["index"])
  np.testing.assert_allclose(table.test_acc, cols["test_acc"], atol=1e-6)
  assert table.num_seeds.tolist()[:4] == [2, 3, 2, 3]
  assert "params_mb" in table.extras
  # arch -> row is vectorised and exact
  perm = np.random.default_rng(1).permutation(15625)[:500]
  np.testing.assert_array_equal(table.rows(ALL_ARCHS[perm]), perm)


# --- file errors ---------------------------------------------------------------
def test_missing_file_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    read_table(tmp_path / "nope.csv.gz")


def test_missing_column_names_file_and_column(plain_table, tmp_path):
  def drop_time(lines):
    out = []
    for line in lines:
      parts = line.split(",")
      out.append(",".join(parts[:5] + parts[6:]) if line else line)
    return out
  bad = _rewrite(plain_table, tmp_path / "no_time.csv", drop_time)
  with pytest.raises(ValueError, match=r"no_time\.csv, line 1: missing column\(s\) train_time_s"):
    read_table(bad)


def test_unknown_op_names_file_line_and_column(plain_table, tmp_path):
  def corrupt(lines):
    lines[4] = lines[4].replace("none", "conv_7x7", 1)
    assert "conv_7x7" in lines[4]
    return lines
  bad = _rewrite(plain_table, tmp_path / "bad_op.csv", corrupt)
  with pytest.raises(ValueError, match=r"bad_op\.csv, line 5, column 'arch': unknown op 'conv_7x7'"):
    read_table(bad)


def test_malformed_arch_string(plain_table, tmp_path):
  def corrupt(lines):
    parts = lines[9].split(",")
    parts[1] = parts[1].replace("+", "", 1)
    lines[9] = ",".join(parts)
    return lines
  bad = _rewrite(plain_table, tmp_path / "bad_arch.csv", corrupt)
  with pytest.raises(ValueError, match=r"line 10, column 'arch'.*node group"):
    read_table(bad)


def test_duplicate_architecture(plain_table, tmp_path):
  def duplicate(lines):
    a, b = lines[1].split(","), lines[2].split(",")
    b[1] = a[1]
    lines[2] = ",".join(b)
    return lines
  bad = _rewrite(plain_table, tmp_path / "dup.csv", duplicate)
  with pytest.raises(ValueError, match=r"lines 2 and 3, column 'arch': duplicate"):
    read_table(bad)


def test_missing_architecture(plain_table, tmp_path):
  bad = _rewrite(plain_table, tmp_path / "short.csv", lambda lines: lines[:7] + lines[8:])
  with pytest.raises(ValueError, match=r"15624 architectures but NAS-Bench-201 has 15625.*missing"):
    read_table(bad)


def test_non_numeric_value(plain_table, tmp_path):
  def corrupt(lines):
    parts = lines[3].split(",")
    parts[4] = "abc;90.1"
    lines[3] = ",".join(parts)
    return lines
  bad = _rewrite(plain_table, tmp_path / "nan.csv", corrupt)
  with pytest.raises(ValueError, match=r"line 4, column 'valid_acc_seeds': 'abc' is not a number"):
    read_table(bad)


# --- the evaluator -----------------------------------------------------------------
def test_registry_and_config_checks(space, plain_table):
  assert registry.get_evaluator("tabular") is TabularEvaluator
  with pytest.raises(ValueError, match="unknown tabular setting"):
    TabularEvaluator(space, {"benchmark_file": plain_table, "epochs": 12})
  other = types.SimpleNamespace(name="nasnet", arch_shape=(2, 5, 4))
  with pytest.raises(ValueError, match="nb201"):
    TabularEvaluator(other, {"benchmark_file": plain_table})


def test_evaluate_draws_one_seed_with_the_key(space, plain_table):
  ev = TabularEvaluator(space, {"benchmark_file": plain_table})
  table = ev.table
  rows = np.arange(0, 15625, 37)
  archs = ALL_ARCHS[rows]
  res, state = ev.evaluate(ev.init(jax.random.key(0)), archs, jax.random.key(3))
  assert res.scores.shape == res.costs.shape == (len(rows),)
  for r, score in zip(rows, res.scores):
    assert score in table.valid_seeds[r, :table.num_seeds[r]]
  np.testing.assert_array_equal(res.costs, table.train_time_s[rows])
  assert [i["test_acc"] for i in res.info] == table.test_acc[rows].tolist()
  again, _ = ev.evaluate(state, archs, jax.random.key(3))
  np.testing.assert_array_equal(again.scores, res.scores)
  other, _ = ev.evaluate(state, archs, jax.random.key(4))
  assert not np.array_equal(other.scores, res.scores)
  quiet = TabularEvaluator(space, {"benchmark_file": plain_table, "noisy": False})
  mean, _ = quiet.evaluate({}, archs, jax.random.key(3))
  np.testing.assert_array_equal(mean.scores, table.valid_acc[rows])


def test_scores_never_carry_test_accuracy(space, sentinel_table):
  ev = TabularEvaluator(space, {"benchmark_file": sentinel_table})
  res, _ = ev.evaluate({}, ALL_ARCHS, jax.random.key(0))
  assert not np.isin(res.scores, ev.table.test_acc).any()
  assert np.all(ev.table.test_acc == SENTINEL)
  assert {i["test_acc"] for i in res.info} == {SENTINEL}
  assert ev.report(ALL_ARCHS[5])["test_acc"] == SENTINEL


def test_bad_archs_are_rejected(space, plain_table):
  ev = TabularEvaluator(space, {"benchmark_file": plain_table})
  with pytest.raises(ValueError, match="shape"):
    ev.evaluate({}, np.zeros((2, 5), np.int32), jax.random.key(0))
  with pytest.raises(ValueError, match="0..4"):
    ev.evaluate({}, np.full((1, 6), 5, np.int32), jax.random.key(0))


def test_shipped_cifar10_table(space):
  ev = TabularEvaluator(space)  # default: the packaged table
  table = ev.table
  assert table.archs.shape == (15625, 6) and len(np.unique(table.index)) == 15625
  best = int(np.argmax(table.valid_acc))
  assert table.test_acc[best] == pytest.approx(94.37, abs=0.01)
  assert table.test_acc.max() == table.test_acc[best]
  report = ev.report(table.archs[best])
  assert report["arch_str"] == ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
                                "|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
  # the evaluator and the nb201 space agree on strings, op order and indices
  for row in np.random.default_rng(0).integers(0, 15625, 30):
    arch = table.archs[row]
    assert space.to_string(arch) == tabular.arch_string(arch)
    np.testing.assert_array_equal(space.from_string(tabular.arch_string(arch)), arch)
    assert space.index(arch) == table.index[row]


def test_provenance_matches_shipped_table():
  assets = os.path.join(REPO, "nas_jax", "assets")
  with open(os.path.join(assets, "nb201_cifar10.csv.gz"), "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  with open(os.path.join(assets, "NB201_PROVENANCE.md"), encoding="utf-8") as f:
    provenance = f.read()
  assert digest in provenance, "rebuild with scripts/build_nb201_table.py"
  assert "MIT" in provenance


def test_build_script_is_reproducible(tmp_path):
  spec = importlib.util.spec_from_file_location(
      "build_nb201_table", os.path.join(REPO, "scripts", "build_nb201_table.py"))
  build = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(build)
  source = write_synthetic(tmp_path / "source.csv.gz", seed=3)
  outs = []
  for name in ("a", "b"):
    out = tmp_path / name / "table.csv.gz"
    assert build.main(["--source", source, "--out", str(out)]) == 0
    outs.append(out.read_bytes())
    provenance = (tmp_path / name / "NB201_PROVENANCE.md").read_text()
    assert hashlib.sha256(outs[-1]).hexdigest() in provenance
  assert outs[0] == outs[1]  # byte for byte (build() itself checks the values read back)
  lines = gzip.decompress(outs[0]).decode().split("\n")
  assert lines[0] == ",".join(build.COLUMNS)
  assert [int(line.split(",", 1)[0]) for line in lines[1:6]] == [0, 1, 2, 3, 4]  # index order
