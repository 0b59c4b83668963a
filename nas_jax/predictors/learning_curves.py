"""Learning-curve performance prediction and early stopping (Baker et al. 2018).

Baker, Gupta, Raskar, Naik, "Accelerating Neural Architecture Search using
Performance Prediction" (ICLR 2018 workshop; arXiv 1705.10823): predict the
final value of a run's learning curve from

* architecture features (parameters, depth, op counts, ...: any dict of
  numbers per run),
* hyperparameters (learning rate, weight decay, ...: also numbers in that dict),
* the partial curve ``y_1..y_tau`` with its first and second differences
  (``curve_features``),

with a *sequential regression model*: one regressor per observed length
``tau`` (``SequentialRegressor``). The regressors are those the paper compares:
nu-SVR with an RBF or a linear kernel, a random forest and ordinary least
squares (scikit-learn); hyperparameters are chosen by random search with
k-fold cross-validation. The prediction's uncertainty is Gaussian, its
standard deviation the root-mean-square of the chosen model's out-of-fold
residuals at that ``tau`` (the paper uses a small ensemble's spread instead).
Queries are clipped to the training features' range, which keeps the linear
models from extrapolating wildly on an unusual curve (on NAS-Bench-NLP, OLS's
R^2 at 10 % of the curve went from -7.9 to 0.58 with it) and the RBF model's
stopping decisions sound (``SequentialRegressor``'s ``clip``).

Early stopping (``EarlyStopper``, the paper's rule): after ``tau`` epochs, a
run stops when the probability that its final value beats the best final value
so far is below ``delta`` (``prob_beats``). ``higher_is_better`` says which way
"beats" goes (True for accuracy, False for a loss or a perplexity).
``EarlyStopper.callback(features)`` is a ``train_child`` callback
``(epoch, entry) -> reason | None``; the reason holds the predicted final value
(``EarlyStopper.make_callbacks()`` is a ``ScratchEvaluator`` ``make_callbacks``).
``simulate_early_stopping`` replays a random search over recorded curves.
Hyperband / successive halving with rungs ranked by these predictions is
``nas_jax.predictors.hyperband``.

Example:
    Curves that decay to a level set by one architecture number:

    >>> rng = np.random.default_rng(0)
    >>> level = rng.uniform(1.0, 2.0, 60)
    >>> t = np.arange(1, 11)
    >>> curves = level[:, None] + 2.0 * np.exp(-t / (2.0 * level[:, None]))
    >>> feats = [{"width": float(w)} for w in level]
    >>> srm = SequentialRegressor("ols", taus=[3]).fit(curves, static=feats)
    >>> mean, std = srm.predict(curves[:2, :3], static=feats[:2])
    >>> bool(np.all(np.abs(mean - curves[:2, -1]) < 0.05)), std.shape
    (True, (2,))
    >>> stopper = EarlyStopper(higher_is_better=False, epochs=10, regressor=srm, metric="valid_loss")
    >>> stopper.best = 1.2  # best final loss so far
    >>> cb = stopper.callback({"width": 1.9}, arch_id="a")
    >>> [cb(e, {"valid_loss": float(y)}) for e, y in zip(t[:3], 1.9 + 2.0 * np.exp(-t[:3] / 3.8))][-1]
    'early stop at epoch 3: predicted final valid_loss 2.04... +/- ..., P(beats best 1.2) = 0 < delta 0.01'
    >>> stopper.records["a"].predicted  # what the history line needs
    2.04...
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

REGRESSORS = ("nusvr_rbf", "nusvr_linear", "random_forest", "ols")
# Models without curve_features' summary numbers by default: to them the numbers are exact linear
# combinations of the other features, so they add only collinearity (with them, on NAS-Bench-NLP,
# OLS's R^2 at 10 / 25 % fell from 0.561 / 0.675 to -1.77 / 0.32; linear nu-SVR's at 10 % 0.718 -> 0.634).
_LINEAR = ("nusvr_linear", "ols")
# What SequentialRegressor's models regress (each an equivalent predictor of the final value):
# "final" is Baker et al.'s and the default; "increment" (final - last observed) and "log" are options
# that did worse on NAS-Bench-NLP (nu-SVR RBF R^2 at 10 / 25 / 50 %: final 0.768 / 0.874 / 0.970 and
# log 0.761 / 0.870 / 0.970 over 20 splits; increment -3.2 / 0.47 / 0.80 over 5, where one spiking
# test curve keeps its spike; benchmarks/lce.py's docstring).
TARGETS = ("final", "increment", "log")
# Baker et al. (2018), Sec. 4: stop when P(final beats the best so far) <= Delta. Domhan et al. (2015)
# use delta = 0.05 in the rule this one follows; on the NAS-Bench-NLP curves that leaves a regret above
# the 0.5 % target, 0.01 meets it (figures: benchmarks/lce.py's docstring), so 0.01.
DEFAULT_DELTA = 0.01
# Hyperparameter search of the regressors: random search scored by k-fold cross-validation, as in the
# paper (Sec. 3). The ranges and k = 3 follow NASLib's re-implementation of the paper
# (naslib/predictors/lcsvr.py): C and gamma log-uniform on [1e-5, 10], nu uniform on (0, 1);
# random forest max_features uniform on [0.1, 0.5]. NASLib draws 1000 settings; 100 here (CPU): on the
# NAS-Bench-NLP curves (nu-SVR, 25 % of the curve, 5 splits) 300 draws gave the same mean R^2 as 100
# (0.892), 30 draws were worse on some splits (0.63 instead of 0.87).
# The first setting tried is scikit-learn's default (a short search never does worse in CV); a
# forest (100 trees per fit) gets at most _RF_SEARCH settings.
DEFAULT_CV = 3
DEFAULT_SEARCH = 100
_RF_SEARCH = 10
# The chosen C sits at the top of its range on NAS-Bench-NLP (58 of 60 choices in [1, 10]); C up to
# 1e3 (chosen 0.9-880) gave R^2 0.754 / 0.869 / 0.980 at 10 / 25 / 50 % against 0.768 / 0.874 / 0.970
# (20 splits), so NASLib's range stays. gamma (chosen 1e-4 - 5e-2) and nu are inside theirs.
_C_RANGE = (1e-5, 10.0)  # log-uniform
_GAMMA_RANGE = (1e-5, 10.0)  # log-uniform (RBF kernel on standardised features)
_NU_RANGE = (0.05, 1.0)  # NASLib: (0, 1); nu near 0 leaves almost no support vectors
_RF_FEATURES = (0.1, 0.5)
_RF_TREES = 100  # scikit-learn's default n_estimators (NASLib searches 10-800)


def curve_features(curves: np.ndarray, tau: int, static: np.ndarray | None = None,
                   summary: bool = True) -> np.ndarray:
  """Feature matrix of partial learning curves (Baker et al. 2018, Sec. 3).

  Baker et al.'s time-series features are ``y_1..y_tau`` with their first and
  second differences. ``summary`` appends five numbers computed from them: the
  last value, the lowest value so far, the mean of the whole curve, its
  mean slope ``(y_tau - y_1) / (tau - 1)`` and the mean of its last three
  first differences. They add no information, only weight: every standardised
  column counts alike in an RBF kernel's distance, so without them the
  curve's current level and recent slope weigh as much as any one of the
  ``3 tau - 3`` noisy per-epoch columns. Measured on NAS-Bench-NLP at 25 % of
  the curve (``benchmarks/lce.py``, 5 splits): nu-SVR RBF R^2 0.891 -> 0.893,
  random forest 0.847 -> 0.858; on 10 other random splits (seeds 10-19)
  nu-SVR 0.868 -> 0.884. To linear models the numbers are linear combinations
  of the other features (``SequentialRegressor`` leaves them out there).

  Args:
    curves: ``[N, >= tau]`` values per epoch (only the first ``tau`` are read).
    tau: observed length.
    static: optional ``[N, S]`` per-run numbers (architecture, hyperparameters).
    summary: append the five summary numbers.

  Returns:
    ``[N, S + tau + (tau - 1) + (tau - 2) (+ 5)]`` (differences only where
    defined): static numbers, ``y_1..y_tau``, first differences, second
    differences, then the summary (last, min, mean, mean slope, recent slope).

  Example:
    >>> curve_features(np.array([[4.0, 3.0, 2.5, 9.0]]), 3, static=np.array([[7.0]]), summary=False)
    array([[ 7. ,  4. ,  3. ,  2.5, -1. , -0.5,  0.5]])
    >>> np.round(curve_features(np.array([[4.0, 3.0, 2.5, 9.0]]), 3)[0, -5:], 2)  # last, min, mean, slopes
    array([ 2.5 ,  2.5 ,  3.17, -0.75, -0.75])
  """
  curves = np.asarray(curves, np.float64)
  if curves.ndim != 2 or curves.shape[1] < tau or tau < 1:
    raise ValueError(f"curves must be [N, >= tau] with tau >= 1, got shape {curves.shape} and tau={tau}")
  y = curves[:, :tau]
  d1 = np.diff(y, n=1, axis=1)
  parts = [] if static is None else [np.asarray(static, np.float64).reshape(len(y), -1)]
  parts += [y, d1, np.diff(y, n=2, axis=1)]
  if summary:
    zero = np.zeros((len(y), 1))
    slope = (y[:, -1:] - y[:, :1]) / (tau - 1) if tau > 1 else zero
    recent = d1[:, -3:].mean(1, keepdims=True) if tau > 1 else zero
    parts += [y[:, -1:], y.min(1, keepdims=True), y.mean(1, keepdims=True), slope, recent]
  return np.concatenate(parts, axis=1)


def static_matrix(features: Sequence[Mapping[str, float]] | None, n: int,
                  keys: Sequence[str] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
  """Dicts of numbers -> ``[n, len(keys)]`` matrix and the key order.

  Args:
    features: one dict per run, or None (no static features).
    n: number of runs.
    keys: column order; default the sorted union of the dicts' keys. A key a
      dict lacks reads 0 (a count of something absent).

  Returns:
    ``(matrix, keys)``.

  Raises:
    ValueError: a wrong number of dicts, a key outside ``keys``, a non-number.

  Example:
    >>> static_matrix([{"b": 2, "a": 1}, {"a": 3}], 2)
    (array([[1., 2.],
           [3., 0.]]), ('a', 'b'))
  """
  if features is None:
    if keys:
      raise ValueError(f"the regressor was fitted with features {list(keys)}; pass static=")
    return np.zeros((n, 0)), ()
  features = list(features)
  if len(features) != n:
    raise ValueError(f"got {len(features)} feature dicts for {n} curves; give one per curve")
  if keys is None:
    keys = tuple(sorted({k for f in features for k in f}))
  index = {k: i for i, k in enumerate(keys)}
  out = np.zeros((n, len(keys)))
  for row, f in enumerate(features):
    for k, v in f.items():
      if k not in index:
        raise ValueError(f"feature {k!r} was not seen when fitting (known: {list(keys)}); "
                         "refit with it or leave it out")
      try:
        out[row, index[k]] = float(v)
      except (TypeError, ValueError):
        raise ValueError(f"feature {k!r} must be a number, got {v!r}") from None
  if not np.all(np.isfinite(out)):
    raise ValueError("static features must be finite")
  return out, tuple(keys)


def prob_beats(mean, std, best: float, higher_is_better: bool):
  """P(final value beats ``best``) under ``N(mean, std^2)``.

  "Beats" is ``> best`` when higher is better, ``< best`` otherwise; with
  ``std == 0`` the probability is 0 or 1.

  Example:
    >>> round(float(prob_beats(0.80, 0.05, 0.90, higher_is_better=True)), 5)  # 1 - Phi(2)
    0.02275
    >>> round(float(prob_beats(5.0, 0.5, 4.5, higher_is_better=False)), 5)  # Phi(-1)
    0.15866
  """
  mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  z = (mean - best) / np.where(std > 0, std, 1.0)
  if not higher_is_better:
    z = -z
  p = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
  hard = np.where((mean > best) if higher_is_better else (mean < best), 1.0, 0.0)
  return np.where(std > 0, p, hard)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _estimator(model: str, params: dict[str, Any], seed: int):
  from sklearn import ensemble, linear_model, svm  # pylint: disable=g-import-not-at-top
  if model == "nusvr_rbf":
    return svm.NuSVR(kernel="rbf", **params)
  if model == "nusvr_linear":
    return svm.NuSVR(kernel="linear", **params)
  if model == "random_forest":
    return ensemble.RandomForestRegressor(n_estimators=_RF_TREES, random_state=seed, **params)
  if model == "ols":
    return linear_model.LinearRegression()
  raise ValueError(f"unknown regressor {model!r}; choose one of {REGRESSORS}")


def _draw_params(model: str, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
  def loguniform(lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
  if model == "ols":
    return [{}]
  out = [{"C": 1.0, "nu": 0.5, "gamma": "scale"} if model == "nusvr_rbf" else
         {"C": 1.0, "nu": 0.5} if model == "nusvr_linear" else {"max_features": 1.0}]
  for _ in range(min(n, _RF_SEARCH) - 1 if model == "random_forest" else n - 1):
    if model == "nusvr_rbf":
      out.append({"C": loguniform(*_C_RANGE), "nu": float(rng.uniform(*_NU_RANGE)),
                  "gamma": loguniform(*_GAMMA_RANGE)})
    elif model == "nusvr_linear":
      out.append({"C": loguniform(*_C_RANGE), "nu": float(rng.uniform(*_NU_RANGE))})
    else:
      out.append({"max_features": float(rng.uniform(*_RF_FEATURES))})
  return out


@dataclasses.dataclass
class _TauModel:
  estimator: Any
  x_mean: np.ndarray
  x_scale: np.ndarray
  x_low: np.ndarray  # the training features' range (standardised): queries are clipped to it
  x_high: np.ndarray
  y_mean: float  # of the target (SequentialRegressor's ``target``) at this tau
  y_scale: float
  params: dict[str, Any]
  cv_rmse: float  # out-of-fold root-mean-square error, in the target's units


class SequentialRegressor:
  """One regressor per observed curve length ``tau`` (Baker et al. 2018).

  Features and targets are standardised with the training set's mean and
  standard deviation; hyperparameters are chosen per ``tau`` by random search
  (``n_search`` draws, ``cv``-fold mean squared error); the predictive standard
  deviation is the chosen setting's out-of-fold RMSE at that ``tau``.

  Args:
    model: one of ``REGRESSORS``.
    taus: observed lengths to fit (default every ``1..T-1``).
    n_search: hyperparameter settings tried per ``tau``: scikit-learn's
      defaults, then random draws (not used by ``ols``; at most 10 for
      ``random_forest``).
    cv: folds of the cross-validation.
    seed: seeds the draws, the folds and the forest.
    clip: clip queries to the training features' range (standardised). It
      keeps the linear models from extrapolating wildly on an unusual curve,
      and the RBF model's stopping decisions too: on NAS-Bench-NLP
      (``benchmarks/lce.py``, 5 splits) unclipped nu-SVR RBF queries gave R^2
      at 25 % 0.895 against 0.893 clipped, but an early-stopping regret of
      0.62 % against 0.28 % (Delta 0.01), and Hyperband ranked by
      predictions a regret of 1.2 % against 0.04 %.
    summary: ``curve_features``'s summary numbers; default (None) for the
      nonlinear models only (``nusvr_rbf``, ``random_forest``).
    target: what the models regress (``TARGETS``); every choice predicts the
      final value. ``"final"`` (the paper's): the final value itself;
      ``"increment"``: final value minus the last observed one (added back
      at prediction); ``"log"``: the log of the final value (positive values
      only; exponentiated back). The standard deviation is always the
      out-of-fold RMSE of the final value.

  Example:
    >>> t = np.arange(1, 9.0)
    >>> curves = np.stack([a + 1.0 / (t + b) for a, b in [(1, 0), (2, 1), (3, 0), (4, 2), (5, 1), (6, 0)]])
    >>> srm = SequentialRegressor("ols", taus=[2, 4], cv=2).fit(curves)
    >>> srm.taus_, srm.epochs_
    ((2, 4), 8)
    >>> mean, std = srm.predict(curves[:1, :4])  # tau 4
    >>> round(float(mean[0]), 1)
    1.1
  """

  def __init__(self, model: str = "nusvr_rbf", *, taus: Sequence[int] | None = None,
               n_search: int = DEFAULT_SEARCH, cv: int = DEFAULT_CV, seed: int = 0,
               clip: bool = True, summary: bool | None = None, target: str = "final"):
    if model not in REGRESSORS:
      raise ValueError(f"unknown regressor {model!r}; choose one of {REGRESSORS}")
    if target not in TARGETS:
      raise ValueError(f"unknown target {target!r}; choose one of {TARGETS}")
    self.target = target
    if int(n_search) < 1 or int(cv) < 2:
      raise ValueError(f"n_search must be >= 1 and cv >= 2, got n_search={n_search}, cv={cv}")
    self.model, self.n_search, self.cv, self.seed = model, int(n_search), int(cv), int(seed)
    self.clip = bool(clip)
    self.summary = model not in _LINEAR if summary is None else bool(summary)
    self._taus_arg = None if taus is None else sorted({int(t) for t in taus})
    self.models_: dict[int, _TauModel] = {}
    self.taus_: tuple[int, ...] = ()
    self.epochs_: int | None = None
    self.static_keys_: tuple[str, ...] = ()

  def fit(self, curves, final=None, static: Sequence[Mapping[str, float]] | None = None
          ) -> "SequentialRegressor":
    """Fits one model per ``tau``.

    Args:
      curves: ``[N, T]`` complete learning curves.
      final: ``[N]`` targets; default the curves' last values.
      static: one dict of numbers per run (architecture, hyperparameters).

    Returns:
      self.

    Raises:
      ValueError: fewer runs than folds, non-finite values, ``taus`` outside
        ``1..T``.
    """
    from sklearn import model_selection  # pylint: disable=g-import-not-at-top
    curves = np.asarray(curves, np.float64)
    if curves.ndim != 2 or curves.shape[1] < 2:
      raise ValueError(f"curves must be [N, T] with T >= 2 epochs, got shape {curves.shape}")
    n, epochs = curves.shape
    y = curves[:, -1] if final is None else np.asarray(final, np.float64).reshape(-1)
    if len(y) != n:
      raise ValueError(f"final has {len(y)} values for {n} curves")
    if n < self.cv:
      raise ValueError(f"{n} curves cannot be split into cv={self.cv} folds; give more curves or lower cv")
    if not (np.all(np.isfinite(curves)) and np.all(np.isfinite(y))):
      raise ValueError("curves and final values must be finite (leave diverged runs out)")
    taus = self._taus_arg or list(range(1, epochs))
    if taus[0] < 1 or taus[-1] > epochs:
      raise ValueError(f"taus must lie in 1..{epochs}, got {taus}")
    if self.target == "log" and np.any(y <= 0):
      raise ValueError("target='log' needs positive final values; use target='final' or 'increment'")
    s, keys = static_matrix(static, n)
    rng = np.random.default_rng(self.seed)
    folds = model_selection.KFold(self.cv, shuffle=True, random_state=self.seed)
    models = {}
    for tau in taus:
      t = self._to_target(y, curves[:, tau - 1])
      y_mean, y_scale = float(t.mean()), float(t.std()) or 1.0
      yz = (t - y_mean) / y_scale
      x = curve_features(curves, tau, s, self.summary)
      x_mean, x_scale = x.mean(0), x.std(0)
      x_scale = np.where(x_scale > 0, x_scale, 1.0)
      xz = (x - x_mean) / x_scale
      best = None
      for params in _draw_params(self.model, rng, self.n_search):
        oof = np.empty(n)
        for train, test in folds.split(xz):
          est = _estimator(self.model, params, self.seed).fit(xz[train], yz[train])
          oof[test] = est.predict(xz[test])
        # Scored on the final value, whatever the target (the same as on yz for "final").
        final_oof = self._from_target(oof * y_scale + y_mean, curves[:, tau - 1])
        mse = float(np.mean((final_oof - y) ** 2))
        if best is None or mse < best[0]:
          best = (mse, params)
      mse, params = best
      est = _estimator(self.model, params, self.seed).fit(xz, yz)
      models[tau] = _TauModel(est, x_mean, x_scale, xz.min(0), xz.max(0), y_mean, y_scale, params,
                              cv_rmse=math.sqrt(mse))
    self.models_, self.taus_, self.epochs_, self.static_keys_ = models, tuple(taus), epochs, keys
    return self

  def model_for(self, observed: int) -> int | None:
    """The longest fitted ``tau`` not beyond ``observed`` epochs (None if none)."""
    fitted = [t for t in self.taus_ if t <= observed]
    return fitted[-1] if fitted else None

  def predict(self, curves, static: Sequence[Mapping[str, float]] | None = None,
              tau: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted final values of partial curves and their standard deviations.

    Args:
      curves: ``[N, L]`` partial curves (``L`` epochs observed so far).
      static: one dict per run, with the keys seen when fitting.
      tau: the model to use; default the longest fitted one ``<= L``.

    Returns:
      ``(mean, std)``, both ``[N]``.

    Raises:
      ValueError: not fitted, no model for so short a curve, bad features.
    """
    if not self.models_:
      raise ValueError("SequentialRegressor is not fitted; call fit(curves) first")
    curves = np.atleast_2d(np.asarray(curves, np.float64))
    tau = self.model_for(curves.shape[1]) if tau is None else int(tau)
    if tau not in self.models_ or tau > curves.shape[1]:
      raise ValueError(f"no model for {curves.shape[1]} observed epochs (tau={tau}); "
                       f"fitted taus: {self.taus_}")
    m = self.models_[tau]
    s, _ = static_matrix(static, len(curves), self.static_keys_)
    xz = (curve_features(curves, tau, s, self.summary) - m.x_mean) / m.x_scale
    if self.clip:
      xz = np.clip(xz, m.x_low, m.x_high)
    mean = self._from_target(m.estimator.predict(xz) * m.y_scale + m.y_mean, curves[:, tau - 1])
    return mean, np.full(len(mean), m.cv_rmse)

  def _to_target(self, final: np.ndarray, last: np.ndarray) -> np.ndarray:
    if self.target == "increment":
      return final - last
    return np.log(final) if self.target == "log" else final

  def _from_target(self, value: np.ndarray, last: np.ndarray) -> np.ndarray:
    if self.target == "increment":
      return value + last
    return np.exp(value) if self.target == "log" else value


@dataclasses.dataclass
class Decision:
  """One early-stopping decision (``EarlyStopper.decide``)."""
  stop: bool
  tau: int
  predicted: float
  std: float
  prob: float
  best: float | None


class EarlyStopper:
  """Stops runs that will probably not beat the best final value so far.

  After ``tau`` epochs (a fitted ``tau`` of the regressor, from ``min_epoch``
  on), a run stops when ``prob_beats(predicted, std, best) < delta``.
  ``best`` is the best final value of the runs completed so far (the
  callback's runs that reach ``epochs``, or ``observe``); no run stops before
  one is known.

  The regressor is either given (fitted on earlier curves, e.g. logs) or
  learnt online: every completed run's curve joins the training set, the
  regressor is fitted once ``min_curves`` are known and refitted after every
  ``refit_every`` more (the paper fits its models on the first fully trained
  configurations of a search and then stops the later ones).

  Args:
    higher_is_better: True for accuracy, False for loss / perplexity.
    epochs: length of a complete run (``T``).
    metric: the curve entry to read in callbacks (``valid_acc``, ``valid_loss``, ...).
    delta: stop below this probability of beating the best.
    regressor: a fitted ``SequentialRegressor`` (its ``epochs_`` must be
      ``epochs``), or None to learn online.
    model, n_search, cv, seed: settings of the online regressor.
    min_curves: completed runs before the online regressor is fitted
      (at least ``cv``).
    refit_every: completed runs between online refits.
    min_epoch: earliest epoch a run may stop at.

  Attributes:
    best: best final value so far (None before the first completed run).
    records: ``arch_id -> Decision`` of every stopped run.
  """

  def __init__(self, *, higher_is_better: bool, epochs: int, metric: str = "valid_loss",
               delta: float = DEFAULT_DELTA, regressor: SequentialRegressor | None = None,
               model: str = "nusvr_rbf", n_search: int = DEFAULT_SEARCH, cv: int = DEFAULT_CV,
               seed: int = 0, min_curves: int = 10, refit_every: int = 5, min_epoch: int = 1):
    # min_curves, refit_every: our choices for searches of tens of runs (the paper fits on 100 curves).
    if not isinstance(higher_is_better, bool):
      raise ValueError(f"higher_is_better must be True (accuracy) or False (loss), got {higher_is_better!r}")
    if not 0.0 < float(delta) < 1.0:
      raise ValueError(f"delta must be a probability in (0, 1), got {delta!r}")
    if int(epochs) < 2:
      raise ValueError(f"epochs must be >= 2, got {epochs!r}")
    if regressor is not None and regressor.epochs_ not in (None, int(epochs)):
      raise ValueError(f"the regressor was fitted on {regressor.epochs_}-epoch curves, not {epochs}")
    if regressor is None and int(min_curves) < int(cv):
      raise ValueError(f"min_curves ({min_curves}) must be >= cv ({cv})")
    self.higher_is_better, self.epochs, self.metric = higher_is_better, int(epochs), metric
    self.delta, self.min_epoch = float(delta), int(min_epoch)
    self.regressor = regressor
    self._online = regressor is None
    self._settings = dict(model=model, n_search=n_search, cv=cv, seed=seed)
    self.min_curves, self.refit_every = int(min_curves), max(1, int(refit_every))
    self.best: float | None = None
    self.records: dict[str, Decision] = {}
    self._curves: list[np.ndarray] = []
    self._static: list[Mapping[str, float]] | None = []
    self._fitted_on = 0

  @classmethod
  def for_task(cls, task, epochs: int, **kwargs) -> "EarlyStopper":
    """A stopper on a task's validation metric and direction (``nas_jax.tasks``).

    Example:
      >>> from nas_jax.tasks import get_task
      >>> s = EarlyStopper.for_task(get_task("language_model"), epochs=10)
      >>> s.metric, s.higher_is_better
      ('valid_ppl', False)
    """
    return cls(higher_is_better=bool(task.higher_is_better), epochs=epochs, metric=task.metric,
               **kwargs)

  def make_callbacks(self, features_of: Callable[[str], Mapping[str, float] | None] | None = None
                     ) -> Callable[[str], list[Callable[[int, dict[str, Any]], str | None]]]:
    """``ScratchEvaluator``'s ``make_callbacks``: ``arch_id -> [self.callback(...)]``.

    Args:
      features_of: ``arch_id -> features dict`` (architecture numbers), or None.

    Example:
      >>> s = EarlyStopper(higher_is_better=True, epochs=5, metric="valid_acc")
      >>> [cb] = s.make_callbacks()("arch-7")
      >>> cb(1, {"valid_acc": 40.0}) is None  # nothing learnt yet: never stops
      True
    """
    def make(arch_id: str):
      return [self.callback(None if features_of is None else features_of(arch_id), arch_id=arch_id)]
    return make

  def _better(self, a: float, b: float) -> bool:
    return a > b if self.higher_is_better else a < b

  def observe(self, curve, features: Mapping[str, float] | None = None) -> None:
    """Records a completed run: its final value updates ``best``; online, its curve trains."""
    curve = np.asarray(curve, np.float64).reshape(-1)
    if len(curve) != self.epochs:
      raise ValueError(f"a completed curve has {self.epochs} epochs, got {len(curve)}")
    final = float(curve[-1])
    if not math.isfinite(final):
      return
    if self.best is None or self._better(final, self.best):
      self.best = final
    if not self._online or not np.all(np.isfinite(curve)):
      return
    self._curves.append(curve)
    if features is None:
      self._static = None
    elif self._static is not None:
      self._static.append(dict(features))
    n = len(self._curves)
    if n >= self.min_curves and (self.regressor is None or n - self._fitted_on >= self.refit_every):
      self.regressor = SequentialRegressor(**self._settings).fit(np.stack(self._curves),
                                                                 static=self._static)
      self._fitted_on = n

  def decide(self, partial, features: Mapping[str, float] | None = None) -> Decision | None:
    """The stopping decision for a partial curve (None: no model or no best yet)."""
    partial = np.asarray(partial, np.float64).reshape(-1)
    tau = len(partial)
    if (self.regressor is None or self.best is None or tau < self.min_epoch or tau >= self.epochs
        or tau not in self.regressor.models_ or not np.all(np.isfinite(partial))):
      return None
    static = None if not self.regressor.static_keys_ else [features or {}]
    mean, std = self.regressor.predict(partial[None], static=static, tau=tau)
    prob = float(prob_beats(mean[0], std[0], self.best, self.higher_is_better))
    return Decision(stop=prob < self.delta, tau=tau, predicted=float(mean[0]), std=float(std[0]),
                    prob=prob, best=self.best)

  def callback(self, features: Mapping[str, float] | None = None, arch_id: str | None = None
               ) -> Callable[[int, dict[str, Any]], str | None]:
    """A ``train_child`` callback for one run.

    Args:
      features: the run's architecture / hyperparameter numbers (the keys the
        regressor was fitted with; None when it uses none).
      arch_id: key of ``records`` (default a counter).

    Returns:
      ``callback(epoch, entry) -> reason | None``: reads ``entry[metric]``;
      returns the stopping reason (with the predicted final value) or None;
      at epoch ``epochs`` it records the completed run (``observe``). A
      callback that missed epochs (a resumed run) never stops its run.
    """
    values: list[float] = []
    key = arch_id if arch_id is not None else f"run{len(self.records)}_{id(values)}"

    def callback(epoch: int, entry: dict[str, Any]) -> str | None:
      value = entry.get(self.metric)
      values.append(float("nan") if value is None else float(value))
      if len(values) != epoch:  # resumed: the first epochs were not seen
        return None
      if epoch == self.epochs:
        self.observe(values, features)
        return None
      d = self.decide(values, features)
      if d is None or not d.stop:
        return None
      self.records[key] = d
      return (f"early stop at epoch {epoch}: predicted final {self.metric} {d.predicted:.4g} "
              f"+/- {d.std:.2g}, P(beats best {d.best:.4g}) = {d.prob:.3g} < delta {self.delta:g}")

    return callback


def simulate_early_stopping(regressor: SequentialRegressor, curves, *, higher_is_better: bool,
                            static: Sequence[Mapping[str, float]] | None = None,
                            delta: float = DEFAULT_DELTA, min_epoch: int = 1,
                            seed: int = 0) -> dict[str, Any]:
  """Random search over recorded curves with early stopping (the curves act as the evaluator).

  The runs are visited in a random order (``seed``); each "trains" epoch by
  epoch, and an ``EarlyStopper`` with the fitted ``regressor`` may stop it at
  any fitted ``tau``; only completed runs set the best so far. The regret is
  that of the best completed run against the best final value of all runs, as
  a fraction of the latter's magnitude.

  Args:
    regressor: a fitted ``SequentialRegressor`` (on other curves).
    curves: ``[N, T]`` complete curves of the searched runs.
    higher_is_better: the direction of the metric.
    static: one features dict per run, when the regressor uses them.
    delta, min_epoch: the stopping rule (``EarlyStopper``).
    seed: the order of the runs.

  Returns:
    dict with ``epochs`` (trained with stopping), ``full_epochs`` (``N * T``),
    ``speedup`` (their ratio), ``stopped`` (runs stopped), ``best_found``,
    ``best_true``, ``regret`` (fraction, >= 0), ``stop_epochs`` (per run,
    in search order; ``T`` when completed).

  Example:
    >>> t = np.arange(1, 11.0)
    >>> curves = np.stack([a + np.exp(-t) for a in np.linspace(1, 3, 12)])  # loss-like
    >>> srm = SequentialRegressor("ols", cv=2).fit(curves)
    >>> out = simulate_early_stopping(srm, curves, higher_is_better=False, seed=0)
    >>> out["regret"], out["speedup"] > 2
    (0.0, True)
  """
  curves = np.asarray(curves, np.float64)
  n, epochs = curves.shape
  stopper = EarlyStopper(higher_is_better=higher_is_better, epochs=epochs, regressor=regressor,
                         delta=delta, min_epoch=min_epoch)
  order = np.random.default_rng(seed).permutation(n)
  stop_epochs = []
  for i in order:
    feats = None if static is None else static[i]
    stop_at = epochs
    for tau in regressor.taus_:
      d = stopper.decide(curves[i, :tau], feats)
      if d is not None and d.stop:
        stop_at = tau
        break
    if stop_at == epochs:
      stopper.observe(curves[i], feats)
    stop_epochs.append(stop_at)
  finals = curves[:, -1]
  best_true = float(finals.max() if higher_is_better else finals.min())
  gap = (best_true - stopper.best) if higher_is_better else (stopper.best - best_true)
  total = int(np.sum(stop_epochs))
  return {"epochs": total, "full_epochs": n * epochs, "speedup": n * epochs / total,
          "stopped": int(sum(s < epochs for s in stop_epochs)), "best_found": stopper.best,
          "best_true": best_true, "regret": float(gap / abs(best_true)) if best_true else float(gap),
          "stop_epochs": stop_epochs}
