"""References beside the found architecture: what the search bought.

A search's final test accuracy means little alone. After the final training
the runner can train, on exactly the same split, with exactly the same recipe
(``cfg["final"]``) and the same seed:

* ``cell``: a published cell of the space (``space.published``, e.g.
  ``"NAONet-B"``, the cell NAO-WS found, or ``"ENAS"`` on ``nasnet``;
  ``"DARTS_V2"`` on ``darts``), through the very function that trained the
  found cell (``final.final_training``);
* ``classical``: a scikit-learn model on the raw pixels of the split the final
  training uses (``final.train_split``), scored on the same test split:
  ``"svc"`` (RBF support-vector machine, ``C=10``, ``gamma="scale"``) or
  ``"logreg"`` (multinomial logistic regression).

Tabular runs train nothing; their reference is the table itself: its best and
median test accuracy (``table_reference``).

Settings: the top-level config group ``references`` (``DEFAULTS``); it only
adds figures to the report, so it is not part of the experiment's fingerprint:
switching it on for a finished run and rerunning trains just the references.

Example:
    >>> resolve({"cell": "NAONet-B", "classical": "svc"}, "nasnet")
    {'cell': 'NAONet-B', 'classical': 'svc'}
    >>> resolve({"cell": "NASNet-A"}, "nasnet")
    Traceback (most recent call last):
    ...
    ValueError: references.cell 'NASNet-A' is not a published cell of space 'nasnet'; choose one of ['ENAS', 'NAONet-B'] or null
"""
from __future__ import annotations

import pathlib
import time
from typing import Any, Callable

import numpy as np

from nas_jax import registry

DEFAULTS: dict[str, Any] = {"cell": None, "classical": None}

def _svc():
  # C = 10: the SVM that issue 17 measured on this digits split (99.72 % test); gamma
  # "scale" = 1 / (n_features * X.var()), scikit-learn's default.
  from sklearn.svm import SVC  # pylint: disable=import-outside-toplevel
  return SVC(C=10.0, kernel="rbf", gamma="scale")


def _logreg():
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  return LogisticRegression(max_iter=5000)


#: scikit-learn models of ``classical``: name -> (description, factory).
CLASSICAL: dict[str, tuple[str, Callable[[], Any]]] = {
    "svc": ("SVC(kernel='rbf', C=10, gamma='scale')", _svc),
    "logreg": ("LogisticRegression()", _logreg),
}


def published_cells(space_name: str) -> dict[str, Any]:
  """The published cells (name -> genotype) of a registered space ({} if none)."""
  cls = registry.lookup("space", space_name)
  return dict(getattr(cls, "published", None) or {})


def resolve(refs: Any, space_name: str) -> dict[str, Any]:
  """``DEFAULTS`` updated by the ``references`` config group, checked.

  Raises:
    ValueError: an unknown key, a cell the space does not publish, an unknown
      classical model (one line naming the choices).
  """
  if refs is None:
    refs = {}
  if not isinstance(refs, dict):
    raise ValueError(f"references must be a dict like {DEFAULTS}, got {refs!r}")
  unknown = sorted(set(refs) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"unknown references setting(s) {unknown}; allowed: {sorted(DEFAULTS)}")
  out = {**DEFAULTS, **refs}
  cells = published_cells(space_name)
  if out["cell"] is not None and out["cell"] not in cells:
    raise ValueError(f"references.cell {out['cell']!r} is not a published cell of space "
                     f"{space_name!r}; choose one of {sorted(cells)} or null")
  if out["classical"] is not None and out["classical"] not in CLASSICAL:
    raise ValueError(f"references.classical {out['classical']!r} is unknown; choose one of "
                     f"{sorted(CLASSICAL)} or null")
  return out


def published_cell_reference(space, name: str, cfg: dict[str, Any], key, workdir: pathlib.Path,
                             data_fn, quiet: bool) -> dict[str, Any]:
  """Trains the published cell ``name`` exactly as the found cell was trained.

  Same function (``final.final_training``), same ``cfg["final"]`` recipe,
  same key and same data as the found cell's final training; its own
  checkpoint directory ``workdir`` (a rerun resumes it).

  Returns:
    ``{"name", "genotype", "arch_id", "test_acc" (or "test_ppl"), "params",
    "curve", "seconds"}``.
  """
  from nas_jax.runner import final as final_lib  # pylint: disable=import-outside-toplevel
  from nas_jax.runner import report  # pylint: disable=import-outside-toplevel
  genotype = published_cells(space.name)[name]
  arch = space.validate(space.from_genotype(genotype))
  t = time.perf_counter()
  out = final_lib.final_training(space, arch, cfg, key, workdir, data_fn, quiet,
                                 desc=f"reference {name}")
  metric, value = final_lib.metric_of(out)
  return {"name": name, "genotype": space.to_genotype(arch), "arch_id": space.arch_id(arch),
          metric: None if value is None else float(value), "params": out.get("params"),
          "curve": report.clean_curve(out.get("curve")),
          "seconds": round(time.perf_counter() - t, 3)}


def classical_reference(dataset, model: str, train_split: str) -> dict[str, Any]:
  """Fits a scikit-learn model on the raw pixels of ``train_split``; scores the test split.

  Example:
    >>> from nas_jax.data import load_dataset
    >>> ds = load_dataset("digits", seed=0)
    >>> ref = classical_reference(ds, "logreg", "train+valid")
    >>> ref["train_examples"], ref["test_examples"], ref["test_acc"] > 90
    (1438, 359, True)
  """
  if not hasattr(dataset, "arrays"):
    raise ValueError(f"references.classical needs an image dataset, got "
                     f"{type(dataset).__name__}; set references.classical=null")
  description, factory = CLASSICAL[model]
  x, y = dataset.arrays(train_split)
  x_test, y_test = dataset.arrays("test")
  if len(y_test) == 0:
    raise ValueError(f"dataset {dataset.name!r} has no test split; set references.classical=null")
  flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0
  t = time.perf_counter()
  clf = factory().fit(flat(x), y)
  acc = float(np.mean(clf.predict(flat(x_test)) == y_test) * 100.0)
  return {"model": description, "test_acc": acc, "train_split": train_split,
          "train_examples": int(len(y)), "test_examples": int(len(y_test)),
          "seconds": round(time.perf_counter() - t, 3)}


def table_reference(reporter) -> dict[str, Any] | None:
  """The benchmark table's best and median test accuracy (tabular runs), else None."""
  table = getattr(reporter, "table", None)
  test_acc = getattr(table, "test_acc", None)
  if test_acc is None or len(test_acc) == 0:
    return None
  acc = np.asarray(test_acc, np.float64)
  return {"table_best_test_acc": float(np.max(acc)), "table_median_test_acc": float(np.median(acc)),
          "table_size": int(acc.size)}
