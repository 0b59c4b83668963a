"""The notebooks in notebooks/ run from top to bottom (tiny settings: ``NAS_JAX_NOTEBOOK_SMOKE=1``).

Each is executed by a real Jupyter kernel (nbclient) in a temporary directory, as
Colab would run it; the committed files must carry no outputs.
"""
from __future__ import annotations

import pathlib
import resource
import time

import jax
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def execute(path: pathlib.Path, cwd: pathlib.Path, monkeypatch) -> nbformat.NotebookNode:
  """Runs ``path`` in a fresh kernel (which inherits this process's environment)."""
  nb = nbformat.read(path, as_version=4)
  monkeypatch.setenv("NAS_JAX_NOTEBOOK_SMOKE", "1")
  cache = jax.config.jax_compilation_cache_dir  # the suite's (tests/conftest.py), when on
  if cache:  # both notebooks compile NAO's model for nb201: the second one reads it (-30 s)
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(cache))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(cwd)}}).execute()
  return nb


def outputs(nb, kind: str) -> list:
  return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


def test_notebooks_are_committed_without_outputs():
  assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "nb201_strategies.ipynb"}
  for path in NOTEBOOKS:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
      if cell.cell_type == "code":
        assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear the outputs"


def test_notebooks_run(tmp_path, monkeypatch):
  """Both notebooks, in one test so that one xdist worker runs them in turn: the first compiles
  NAO's model for nb201 into the suite's compilation cache, the second reads it."""
  for name, done in (("nb201_strategies.ipynb", "enas       best validation"),
                     ("quickstart.ipynb", "final test accuracy")):
    t, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    cwd = tmp_path / name.split(".")[0]
    cwd.mkdir()
    nb = execute(ROOT / "notebooks" / name, cwd, monkeypatch)
    text = "".join(o.get("text", "") for o in outputs(nb, "stream"))
    assert outputs(nb, "display_data"), f"{name}: no plot was shown"
    assert done in text, text[-2000:]
    if name == "quickstart.ipynb":
      assert "best search score" in text and (cwd / "best_arch.json").exists()
    else:
      for strategy in ("random", "evolution", "reinforce", "nao", "enas"):
        assert f"{strategy:10s} best validation" in text
    print(f"{name}: {time.perf_counter() - t:.1f} s wall, kernel CPU "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - cpu:.1f} s")
