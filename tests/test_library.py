"""Tests of the library face: ``import nas_jax``, ``nas_jax.search``, ``CategoricalSpace``, and the
"Use as a library" example (``docs/library.md``, and README.md once the section is pasted there)."""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import nas_jax
from nas_jax import runner
from nas_jax.spaces import CategoricalSpace

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECTION = "## Use as a library"


def library_example(path: pathlib.Path) -> str | None:
  """The first python code block of the "Use as a library" section of ``path``, or None."""
  text = path.read_text(encoding="utf-8")
  start = text.find(SECTION)
  if start < 0:
    return None
  section = text[start + len(SECTION):]
  section = section[:m.start()] if (m := re.search(r"^## ", section, re.M)) else section
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  assert blocks, f"{path.name}: the section {SECTION!r} has no ```python block"
  return blocks[0]


@pytest.mark.parametrize("name", ["docs/library.md", "README.md"])
def test_library_example_runs(name, capsys):
  code = library_example(ROOT / name)
  if code is None:
    assert name == "README.md", f"{name} lost its {SECTION!r} section"
    pytest.skip("README.md has no 'Use as a library' section yet")
  exec(compile(code, name, "exec"), {"__name__": "__main__"})  # pylint: disable=exec-used
  assert "{'depth': 3, 'width': 128" in capsys.readouterr().out


def test_import_is_lazy():
  out = subprocess.run([sys.executable, "-c", "import sys, nas_jax; print('jax' in sys.modules); "
                        "nas_jax.spaces; print('jax' in sys.modules)"],
                       capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
  assert out == ["False", "True"]
  with pytest.raises(AttributeError, match="no attribute 'serach'"):
    nas_jax.serach  # pylint: disable=pointless-statement


def test_search_matches_the_runner(tmp_path):
  """Same names, settings and seed: the library and run_experiment evaluate the same archs."""
  cfg = runner.merge(runner.default_config(), {"space": "nb201", "budget": 12, "seed": 3,
                                               "strategy": {"name": "evolution", "population_size": 4,
                                                            "sample_size": 2}})
  result = runner.run_experiment(cfg, tmp_path / "run", quiet=True)
  lines = [json.loads(l) for l in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
  lib = nas_jax.search("nb201", "evolution", evaluator="tabular", budget=12, seed=3,
                       strategy_config={"population_size": 4, "sample_size": 2})
  assert [r["arch_id"] for r in lib.history] == [l["arch_id"] for l in lines]
  assert lib.best_score == result["best_search_score"]
  assert lib.best_genotype == result["best_genotype"]
  assert np.all(np.diff(lib.best_so_far()) >= 0) and lib.best_so_far()[-1] == lib.best_score


def test_search_errors():
  space = CategoricalSpace({"a": [0, 1]})
  with pytest.raises(ValueError, match="one-shot method"):
    nas_jax.search("nb201", "darts", budget=2)
  with pytest.raises(ValueError, match=r"needs \['data'\]; pass data=\.\.\."):
    nas_jax.search("nb201", "random", evaluator="supernet", budget=2)
  with pytest.raises(ValueError, match="budget=0"):
    nas_jax.search(space, "random", evaluator=lambda g: 1.0, budget=0)
  with pytest.raises(ValueError, match="no architecture got a finite"):
    nas_jax.search(space, "random", evaluator=lambda g: 1 / 0, budget=2)


def test_search_sizes_a_named_space_with_space_options():
  """space_options build a space given by name, as the runner's config key does."""
  score = lambda g: float(len(g["layers"]))  # noqa: E731
  result = nas_jax.search("macro", "random", evaluator=score, budget=2, space_options={"num_layers": 3})
  assert result.best_score == 3.0 and len(result.best_genotype["layers"]) == 3
  with pytest.raises(ValueError, match=r"space 'macro' has no option 'num_nodes'; its options: \['num_layers'\]"):
    nas_jax.search("macro", "random", evaluator=score, budget=2, space_options={"num_nodes": 9})
  with pytest.raises(ValueError, match="pass them to its constructor"):
    nas_jax.search(CategoricalSpace({"a": [0, 1]}), "random", evaluator=lambda g: 1.0, budget=2,
                   space_options={"a": 1})


def test_function_evaluator_failures_are_told_as_failed():
  space = CategoricalSpace({"a": [0, 1, 2, 3]})
  result = nas_jax.search(space, "random", evaluator=lambda g: 1.0 / g["a"], budget=4, seed=0)
  failed = [r for r in result.history if r["search_score"] is None]
  assert len(failed) == 1 and "ZeroDivisionError" in failed[0]["error"]
  assert result.best_genotype == {"a": 1}


class Toy(CategoricalSpace):
  name = "toy"
  choices = {"depth": [1, 2, 3], "act": ["relu", "tanh"], "lr": [0.1, 0.01, 0.001, 1e-4]}


def test_categorical_space_protocol():
  space = Toy()
  assert space.arch_shape == (3,) and space.vocab_size == 5 and hash(space) == hash(Toy())
  archs = np.asarray(jax.vmap(space.sample)(jax.random.split(jax.random.key(0), 200)))
  assert archs.min() == 0 and (archs.max(0) == [2, 1, 3]).all()  # every option drawn, none beyond
  for i, a in enumerate(archs[:20]):
    m = np.asarray(space.mutate(jax.random.key(i), a))
    assert (m != a).sum() == 1
    space.validate(m)
    assert (space.from_genotype(space.to_genotype(a)) == a).all()
    tokens = np.asarray(space.to_tokens(a))
    assert space.token_mask()[np.arange(3), tokens].all()
    assert (np.asarray(space.from_tokens(tokens)) == a).all()
  with pytest.raises(ValueError, match=r"toy arch\[2\] \(lr\) = 4 is out of range 0..3"):
    space.validate([0, 0, 4])
  with pytest.raises(ValueError, match="lr=0.5 is not an option"):
    space.from_genotype({"depth": 1, "act": "relu", "lr": 0.5})
  with pytest.raises(ValueError, match="decision 'x' needs a non-empty list"):
    CategoricalSpace({"x": []})
