"""Tests of benchmarks/nb201_supernet.py: the ranking figures and a tiny end-to-end run."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import sys

import numpy as np
import pytest

_DIR = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(_DIR))  # the benchmark imports nao_ws_kendall from beside it
_spec = importlib.util.spec_from_file_location("nb201_supernet", _DIR / "nb201_supernet.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_ranking_figures():
  valid = np.array([10.0, 85.0, 90.0, 91.0, 70.0])
  test = valid + 0.5
  got = bench.ranking([0.0, 1.0, 2.0, 3.0, 4.0], valid, test)
  # all 5: 10 pairs, the last cell (70 %) is discordant with the 3 cells above it
  assert got["all"] == {"n": 5, "kendall_tau": pytest.approx(0.4, abs=1e-4)}
  assert got["trainable"] == {"n": 3, "kendall_tau": 1.0}  # 85, 90, 91 in order
  assert got["top1_test_acc"] == 70.5 and got["best_test_acc"] == 91.5
  assert "trainable" not in bench.ranking([1, 2, 3], [10, 20, 90], [10, 20, 90])


@pytest.mark.slow  # two supernet compilations, about 45 s
def test_tiny_run_end_to_end(tmp_path):
  image = pytest.importorskip("PIL.Image")
  rng = np.random.default_rng(0)
  for split, n in (("train", 8), ("test", 2)):
    for c in range(10):
      folder = tmp_path / "data" / split / f"class{c}"
      folder.mkdir(parents=True)
      for i in range(n):
        image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
  out = tmp_path / "out.json"
  result = bench.main(["--data", f"imagefolder:{tmp_path / 'data'}", "--steps", "3", "--eval-every", "2",
                       "--archs", "6", "--eval-batches", "1", "--channels", "2", "--layers", "1",
                       "--batch", "8", "--eval-batch", "20", "--out", str(out)])
  assert [h["steps"] for h in result["history"]] == [2, 3]
  final = json.loads(out.read_text())["final"]
  assert final["all"]["n"] == 6 and -1.0 <= final["all"]["kendall_tau"] <= 1.0
  assert 0.0 <= final["mean_score"] <= 100.0
  assert len(result["cells"]) == 6 and result["cells"][0]["arch"].startswith("|")
  with pytest.raises(SystemExit):
    bench.main(["--data", "imagefolder:/nowhere", "--archs", "2"])
