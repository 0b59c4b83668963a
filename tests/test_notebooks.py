"""The notebooks in notebooks/ run from top to bottom (tiny settings: ``NAS_JAX_NOTEBOOK_SMOKE=1``).

Each is executed by a real Jupyter kernel (nbclient) in a temporary directory, as
Colab would run it; the committed files must carry no outputs.
"""
from __future__ import annotations

import os
import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def execute(path: pathlib.Path, cwd: pathlib.Path) -> nbformat.NotebookNode:
  nb = nbformat.read(path, as_version=4)
  old = os.environ.get("NAS_JAX_NOTEBOOK_SMOKE")
  os.environ["NAS_JAX_NOTEBOOK_SMOKE"] = "1"  # the kernel inherits this process's environment
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
  finally:
    if old is None:
      os.environ.pop("NAS_JAX_NOTEBOOK_SMOKE")
    else:
      os.environ["NAS_JAX_NOTEBOOK_SMOKE"] = old
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


@pytest.mark.parametrize("name", ["quickstart.ipynb", "nb201_strategies.ipynb"])
def test_notebook_runs(name, tmp_path):
  t = time.perf_counter()
  nb = execute(ROOT / "notebooks" / name, tmp_path)
  text = "".join(o.get("text", "") for o in outputs(nb, "stream"))
  assert outputs(nb, "display_data"), "no plot was shown"
  if name == "quickstart.ipynb":
    assert "best search score" in text and "final test accuracy" in text
    assert (tmp_path / "best_arch.json").exists()
  else:
    for strategy in ("random", "evolution", "reinforce", "nao", "enas"):
      assert f"{strategy:10s} best validation" in text
  print(f"{name}: {time.perf_counter() - t:.1f} s")
