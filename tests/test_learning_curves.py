"""Tests of learning-curve prediction and early stopping (nas_jax.predictors.learning_curves),
the training-log loader (nas_jax.data.nbnlp_logs) and benchmarks/lce.py, on tiny synthetic curves."""
from __future__ import annotations

import importlib.util
import json
import math
import pathlib
import zipfile

import numpy as np
import pytest

from nas_jax.data import nbnlp_logs
from nas_jax.predictors import learning_curves as lc

_PATH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "lce.py"
_spec = importlib.util.spec_from_file_location("lce_benchmark", _PATH)
lce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lce)

_RECIPE = json.dumps({"node_0": {"op": "linear", "input": ["x", "h_prev_0"]},
                      "node_1": {"op": "activation_sigm", "input": ["node_0"]},
                      "h_new_0": {"op": "elementwise_prod", "input": ["node_1", "h_prev_0"]}})


def _loss_curves(n, epochs=12, seed=0):
  """Loss curves: a run-specific floor and speed; the final value is a nonlinear function of the start."""
  rng = np.random.default_rng(seed)
  floor = rng.uniform(4.5, 6.0, n)
  speed = rng.uniform(2.0, 6.0, n)
  t = np.arange(1, epochs + 1)
  curves = floor[:, None] + 2.5 * np.exp(-t[None] / speed[:, None])
  return curves + rng.normal(0, 0.01, curves.shape), speed


def _log(i, epochs, curve=None, **extra):
  curve = list(curve) if curve is not None else [7.0 - 0.1 * j - 0.05 * (i % 7) for j in range(epochs)]
  log = {"recepie": _RECIPE, "num_params": 1000 + i, "lr": 0.001, "epochs": epochs, "cuda": True,
         "train_losses": [v + 0.2 for v in curve], "val_losses": curve,
         "test_losses": [v + 0.05 for v in curve], "wall_times": [1.0] * len(curve)}
  log.update(extra)
  return log


def _write_zip(path, logs):
  with zipfile.ZipFile(path, "w") as z:
    for name, log in logs.items():
      z.writestr(name, log if isinstance(log, str) else json.dumps(log))
  return path


# -- features and regressors ----------------------------------------------------------------------

def test_curve_features_values_and_shape():
  curves = np.array([[4.0, 3.0, 2.5, 2.4], [1.0, 2.0, 4.0, 8.0]])
  x = lc.curve_features(curves, 4, static=np.array([[1.0], [2.0]]), summary=False)
  assert x.shape == (2, 1 + 4 + 3 + 2)
  np.testing.assert_allclose(x[1], [2.0, 1, 2, 4, 8, 1, 2, 4, 1, 2])
  # Summary: last, min, mean, mean slope (8 - 1) / 3, mean of the last three differences (1 + 2 + 4) / 3.
  np.testing.assert_allclose(lc.curve_features(curves, 4)[1, -5:], [8, 1, 15 / 4, 7 / 3, 7 / 3])
  np.testing.assert_allclose(lc.curve_features(curves, 2)[0, -5:], [3, 3, 3.5, -1, -1])
  assert lc.curve_features(curves, 1, summary=False).shape == (2, 1)  # no differences from one epoch
  assert lc.curve_features(curves, 1).shape == (2, 6)
  with pytest.raises(ValueError, match="tau"):
    lc.curve_features(curves, 5)


@pytest.mark.parametrize("model", lc.REGRESSORS)
def test_every_regressor_fits_and_beats_predicting_the_mean(model):
  curves, _ = _loss_curves(60)
  train, test = curves[:40], curves[40:]
  srm = lc.SequentialRegressor(model, taus=[4], n_search=4, seed=0).fit(train)
  mean, std = srm.predict(test[:, :4])
  assert mean.shape == std.shape == (20,)
  assert np.all(std > 0) and np.all(np.isfinite(mean))
  assert lce.r2_score(test[:, -1], mean) > 0.5  # the mean of the targets scores 0


def test_nusvr_beats_the_last_observed_value():
  """The trivial baseline: the final loss is the last one seen (scaled to the targets by least squares)."""
  curves, speed = _loss_curves(90, seed=1)
  train, test = curves[:60], curves[60:]
  feats = [{"speed": float(s)} for s in speed]
  srm = lc.SequentialRegressor("nusvr_rbf", taus=[3], n_search=20, seed=0).fit(train, static=feats[:60])
  mean, _ = srm.predict(test[:, :3], static=feats[60:])
  slope, icpt = np.polyfit(train[:, 2], train[:, -1], 1)
  r2_model = lce.r2_score(test[:, -1], mean)
  r2_base = lce.r2_score(test[:, -1], slope * test[:, 2] + icpt)
  print(f"R2 nu-SVR {r2_model:.3f} vs last-value baseline {r2_base:.3f}")
  assert r2_model > 0.9 and 1 - r2_model < 0.25 * (1 - r2_base)  # 4x less unexplained variance


@pytest.mark.parametrize("target", lc.TARGETS)
def test_every_target_predicts_the_final_value(target):
  curves, _ = _loss_curves(60, seed=2)
  srm = lc.SequentialRegressor("nusvr_rbf", taus=[4], n_search=4, seed=0, target=target).fit(curves[:40])
  mean, std = srm.predict(curves[40:, :4])
  assert lce.r2_score(curves[40:, -1], mean) > 0.5
  # The spread is the out-of-fold RMSE of the final value (not of the target), about the test error.
  rmse = float(np.sqrt(np.mean((mean - curves[40:, -1]) ** 2)))
  assert 0.3 * rmse < std[0] < 3 * rmse


def test_increment_target_adds_back_the_last_value_beyond_the_training_range():
  """Every run drops by the same amount after epoch 3: the increment is constant, so predicted exactly
  even for curves far outside the training range, where the clipped final-value model saturates."""
  t = np.arange(1, 9.0)
  shape = 2.0 * np.exp(-t / 2.0)
  offsets = np.linspace(4.0, 6.0, 30)
  train = offsets[:, None] + shape
  test = np.array([8.0, 9.0])[:, None] + shape
  inc = lc.SequentialRegressor("ols", taus=[3], target="increment").fit(train)
  np.testing.assert_allclose(inc.predict(test[:, :3])[0], test[:, -1], atol=1e-9)
  final = lc.SequentialRegressor("ols", taus=[3]).fit(train)
  assert np.all(final.predict(test[:, :3])[0] < test[:, -1] - 1.0)  # clipped to the top of the range
  with pytest.raises(ValueError, match="positive final values"):
    lc.SequentialRegressor("ols", taus=[3], target="log").fit(train - 7.0)
  with pytest.raises(ValueError, match="unknown target"):
    lc.SequentialRegressor("ols", target="delta")


def test_predict_uses_the_longest_fitted_tau_and_checks_features():
  curves, _ = _loss_curves(20)
  feats = [{"a": 1.0, "b": float(i)} for i in range(20)]
  srm = lc.SequentialRegressor("ols", taus=[2, 5], seed=0).fit(curves, static=feats)
  assert srm.model_for(4) == 2 and srm.model_for(9) == 5 and srm.model_for(1) is None
  a, _ = srm.predict(curves[:3, :7], static=feats[:3])
  b, _ = srm.predict(curves[:3, :5], static=feats[:3])
  np.testing.assert_allclose(a, b)
  with pytest.raises(ValueError, match="no model for 1 observed"):
    srm.predict(curves[:3, :1], static=feats[:3])
  with pytest.raises(ValueError, match="'c' was not seen"):
    srm.predict(curves[:1, :5], static=[{"c": 1.0}])
  with pytest.raises(ValueError, match="pass static="):
    srm.predict(curves[:1, :5])
  with pytest.raises(ValueError, match="unknown regressor"):
    lc.SequentialRegressor("gp")


# -- the stopping rule ------------------------------------------------------------------------------

class _FixedRegressor:
  """Predicts ``mean`` +/- ``std`` at every tau of 1..epochs-1."""

  def __init__(self, mean, std, epochs=10):
    self.mean, self.std, self.epochs_ = mean, std, epochs
    self.taus_ = tuple(range(1, epochs))
    self.models_ = dict.fromkeys(self.taus_)
    self.static_keys_ = ()

  def predict(self, curves, static=None, tau=None):
    return np.full(len(curves), self.mean), np.full(len(curves), self.std)


def test_prob_beats_by_hand():
  # P(N(0.80, 0.05^2) > 0.90) = 1 - Phi(2) = 0.0227501; P(N(5, 0.5^2) < 4.5) = Phi(-1) = 0.1586553.
  assert float(lc.prob_beats(0.80, 0.05, 0.90, higher_is_better=True)) == pytest.approx(0.0227501, abs=1e-6)
  assert float(lc.prob_beats(5.0, 0.5, 4.5, higher_is_better=False)) == pytest.approx(0.1586553, abs=1e-6)
  assert float(lc.prob_beats(5.0, 0.5, 4.5, higher_is_better=True)) == pytest.approx(1 - 0.1586553, abs=1e-6)
  assert float(lc.prob_beats(1.0, 0.0, 2.0, higher_is_better=False)) == 1.0


@pytest.mark.parametrize("delta, stops", [(0.05, True), (0.01, False)])
def test_stopping_rule_on_a_hand_computed_case(delta, stops):
  stopper = lc.EarlyStopper(higher_is_better=True, epochs=10, regressor=_FixedRegressor(0.80, 0.05),
                            delta=delta, metric="valid_acc")
  assert stopper.decide([0.5, 0.6]) is None  # no best yet: never stop
  stopper.best = 0.90
  d = stopper.decide([0.5, 0.6])
  assert d.prob == pytest.approx(0.0227501, abs=1e-6) and d.stop is stops and d.tau == 2
  # The same numbers read as a loss: predicted 0.80 is below the best 0.90, so it beats it.
  loss = lc.EarlyStopper(higher_is_better=False, epochs=10, regressor=_FixedRegressor(0.80, 0.05), delta=delta)
  loss.best = 0.90
  assert loss.decide([0.5, 0.6]).prob == pytest.approx(1 - 0.0227501, abs=1e-6)
  assert not loss.decide([0.5, 0.6]).stop


def test_callback_stops_records_and_learns_online():
  stopper = lc.EarlyStopper(higher_is_better=False, epochs=6, metric="valid_loss", model="ols",
                            min_curves=4, refit_every=2, cv=2, min_epoch=2, delta=0.05)
  curves, _ = _loss_curves(8, epochs=6)
  for i in range(4):  # complete runs: the callback records them; the 4th fits the regressor
    cb = stopper.callback({"w": 1.0}, arch_id=f"full{i}")
    assert all(cb(e + 1, {"valid_loss": float(v)}) is None for e, v in enumerate(curves[i]))
  assert stopper.regressor is not None and stopper.regressor.taus_ == (1, 2, 3, 4, 5)
  assert stopper.best == pytest.approx(curves[:4, -1].min())
  bad = curves[0] + 3.0  # a clearly worse run
  cb = stopper.callback({"w": 1.0}, arch_id="bad")
  reasons = []
  for e, v in enumerate(bad):  # train_child stops calling once a reason is returned
    reasons.append(cb(e + 1, {"valid_loss": float(v)}))
    if reasons[-1]:
      break
  assert reasons[0] is None  # before min_epoch
  first = len(reasons) - 1
  assert reasons[first] and first < 5
  assert reasons[first].startswith(f"early stop at epoch {first + 1}: predicted final valid_loss")
  rec = stopper.records["bad"]
  assert rec.stop and rec.tau == first + 1 and rec.predicted > stopper.best
  assert f"{rec.predicted:.4g}" in reasons[first]
  # A resumed run (the callback sees epoch 3 first) is never stopped.
  cb = stopper.callback({"w": 1.0})
  assert cb(3, {"valid_loss": float(bad[2])}) is None and cb(4, {"valid_loss": float(bad[3])}) is None
  with pytest.raises(ValueError, match="higher_is_better"):
    lc.EarlyStopper(higher_is_better=None, epochs=5)
  with pytest.raises(ValueError, match="delta"):
    lc.EarlyStopper(higher_is_better=True, epochs=5, delta=1.5)


def test_simulated_search_with_accuracy_curves():
  curves, _ = _loss_curves(40, epochs=10, seed=3)
  acc = 100.0 - 10.0 * curves  # higher is better
  srm = lc.SequentialRegressor("nusvr_rbf", n_search=4, seed=0).fit(acc[:20])
  out = lc.simulate_early_stopping(srm, acc[20:], higher_is_better=True, seed=0)
  assert out["best_true"] == pytest.approx(acc[20:, -1].max())
  assert out["speedup"] > 1.5 and out["regret"] <= 0.01
  assert out["epochs"] == sum(out["stop_epochs"]) and out["full_epochs"] == 200


def test_callback_stops_train_child_and_the_reason_reaches_the_result():
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from nas_jax import data, train

  class Tiny(nn.Module):  # the build_child contract: (logits, aux logits)
    @nn.compact
    def __call__(self, x, *, train: bool, drop_prob=0.0):
      h = nn.relu(nn.Dense(8)(x.reshape(x.shape[0], -1)))
      return nn.Dense(10)(h), jnp.zeros((x.shape[0], 10))

  ds = data.load_dataset("digits", train_size=64, valid_size=64, test_size=32)
  stopper = lc.EarlyStopper(higher_is_better=True, epochs=3, metric="valid_acc",
                            regressor=_FixedRegressor(50.0, 1.0, epochs=3))
  stopper.best = 90.0  # a best final accuracy this run cannot reach
  result = train.train_child(None, None, ds, {"epochs": 3, "batch_size": 32, "auxiliary": False},
                             jax.random.key(0), model=Tiny(), callbacks=[stopper.callback(arch_id="a")])
  assert len(result["curve"]) == 1 and result["stopped"]["epoch"] == 1
  assert "predicted final valid_acc 50" in result["stopped"]["reason"]
  assert stopper.records["a"].predicted == 50.0


# -- the log loader ---------------------------------------------------------------------------------

def test_load_logs_reads_features_and_skips_bad_logs(tmp_path):
  logs = {f"run{i}.json": _log(i, 5) for i in range(4)}
  logs["short.json"] = _log(9, 5, curve=[7.0, 6.9, 6.8])
  logs["noloss.json"] = {k: v for k, v in _log(8, 5).items() if k != "val_losses"}
  logs["nan.json"] = _log(7, 5, curve=[7.0, float("nan"), 6.0, 5.0, 4.0])
  logs["broken.json"] = "{not json"
  path = _write_zip(tmp_path / "logs.zip", logs)
  out = nbnlp_logs.load_logs(path)
  assert out.names == [f"run{i}.json" for i in range(4)]
  assert out.curves["val_losses"].shape == (4, 5) and out.epochs == 5
  assert set(out.curves) == {"val_losses", "train_losses", "test_losses", "wall_times"}
  reasons = dict(out.skipped)
  assert len(out.skipped) == 4 and set(reasons) == {"short.json", "noloss.json", "nan.json", "broken.json"}
  assert "3 epochs, expected 5" in reasons["short.json"] and "val_losses" in reasons["noloss.json"]
  f = out.features(0)
  assert f["depth"] == 3 and f["op_linear"] == 1 and f["num_params"] == 1000 and f["hp_lr"] == 0.001
  assert "hp_cuda" not in f and "hp_num_params" not in f


@pytest.mark.parametrize("member, log, message", [
    ("noloss.json", {"num_params": 1, "train_losses": [1.0] * 5}, "noloss.json: no 'val_losses' column"),
    ("short.json", _log(9, 5, curve=[7.0, 6.9]), "short.json: val_losses has 2 epochs, expected 5"),
])
def test_load_logs_raise_names_the_log(tmp_path, member, log, message):
  logs = {f"run{i}.json": _log(i, 5) for i in range(3)}
  logs[member] = log
  path = _write_zip(tmp_path / "logs.zip", logs)
  with pytest.raises(ValueError, match=message) as e:
    nbnlp_logs.load_logs(path, on_bad="raise")
  assert "\n" not in str(e.value)


def test_truncated_zip_is_a_one_line_error_naming_the_file(tmp_path):
  path = _write_zip(tmp_path / "logs.zip", {f"run{i}.json": _log(i, 5) for i in range(3)})
  cut = tmp_path / "cut.zip"
  cut.write_bytes(path.read_bytes()[:-40])  # the central directory's end is lost
  with pytest.raises(ValueError, match="cut.zip is not a readable zip") as e:
    nbnlp_logs.load_logs(cut)
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match="no usable training log"):
    nbnlp_logs.load_logs(_write_zip(tmp_path / "empty.zip", {"a.json": "[]"}))


# -- the benchmark ----------------------------------------------------------------------------------

def test_benchmark_main_on_a_tiny_zip(tmp_path, capsys):
  curves, _ = _loss_curves(30, epochs=10, seed=5)
  logs = {f"run{i:02d}.json": _log(i, 10, curve=c.tolist()) for i, c in enumerate(curves)}
  logs["diverged.json"] = _log(99, 10, curve=[7.0, 6.5, float("nan")])
  zpath = _write_zip(tmp_path / "tiny.zip", logs)
  out = tmp_path / "out" / "lce.json"
  lce.main(["--logs", str(zpath), "--out", str(out), "--n-fit", "15", "--n-search", "3",
            "--splits", "1", "--orders", "2", "--delta", "0.05", "0.01"])
  result = json.loads(out.read_text())
  assert set(result["r2"]) == set(lc.REGRESSORS)
  for by_fraction in result["r2"].values():
    assert set(by_fraction) == {"0.1", "0.25", "0.5"}
    assert all(math.isfinite(v) for v in by_fraction.values())
  assert result["speedup"] >= 1.0 and 0.0 <= result["regret"] < 1.0
  assert set(result["by_delta"]) == {"0.05", "0.01"}
  assert result["speedup"] == result["by_delta"]["0.05"]["speedup"]
  # A smaller delta stops no more runs.
  assert sum(result["by_delta"]["0.01"]["stopped_per_run"]) <= sum(result["stopped_per_run"])
  assert result["skipped"] == 1 and result["n_test"] == 15
  assert set(result["hyperband"]) == {"hyperband_predicted", "hyperband_observed", "sha_predicted",
                                      "sha_observed"}
  for r in result["hyperband"].values():
    assert r["speedup"] > 1.0 and 0.0 <= r["regret"] < 1.0
  assert "speedup" in capsys.readouterr().out


# -- successive halving / Hyperband (nas_jax.predictors.hyperband) ---------------------------------

from nas_jax.predictors import hyperband  # noqa: E402
from nas_jax.tasks import get_task  # noqa: E402


class _CurveRegressor:
  """Predicts a loss curve's final value as its last value minus 10x its last step (a fast learner ends low)."""

  def __init__(self, epochs):
    self.epochs_, self.taus_, self.static_keys_ = epochs, tuple(range(1, epochs)), ()
    self.models_ = dict.fromkeys(self.taus_)

  def predict(self, curves, static=None, tau=None):
    c = np.asarray(curves)
    return c[:, -1] + 10.0 * (c[:, -1] - c[:, -2]), np.full(len(c), 0.1)


def test_hyperband_brackets_rungs_and_dealing():
  sha = hyperband.SuccessiveHalving(higher_is_better=False, epochs=50)  # NAS-Bench-NLP: R = 50
  assert sha.s_max == 3 and sha.eta == 3  # 3^3 = 27 <= 50 < 81
  assert [sha.rungs_of(s) for s in range(4)] == [(), (17,), (6, 17), (2, 6, 17)]  # 50/3, 50/9, 50/27
  assert hyperband.bracket_sizes(3, 3) == {3: 27, 2: 12, 1: 6, 0: 4}
  dealt = [sha._next_bracket() for _ in range(49)]
  assert {s: dealt.count(s) for s in range(4)} == {3: 27, 2: 12, 1: 6, 0: 4}
  assert dealt[:4] == [3, 2, 3, 1]  # interleaved, not 27 deep runs first
  with pytest.raises(ValueError, match="eta must be an integer >= 2"):
    hyperband.SuccessiveHalving(higher_is_better=False, epochs=9, eta=1)
  with pytest.raises(ValueError, match="unknown brackets"):
    hyperband.SuccessiveHalving(higher_is_better=False, epochs=9, brackets="bohb")


@pytest.mark.parametrize("predict", [False, True])
def test_rungs_rank_by_predicted_final_values(predict):
  """A run behind at a rung but falling fast is kept only when ranked by its predicted final value."""
  sha = hyperband.SuccessiveHalving(higher_is_better=False, epochs=18, brackets="sha", min_epoch=2,
                                    predict=predict, regressor=_CurveRegressor(18))
  assert sha.rungs_of(sha.s_max) == (2, 6)  # 18 / 9, 18 / 3
  t = np.arange(1, 19.0)
  flat = 2.0 + 0.01 / t
  slow = 1.0 + 8.0 / t ** 1.5  # 3.83 at epoch 2 (behind 2.005 and 2.505), 1.09 at the end
  reasons = {}
  for curve, name in ((flat, "flat"), (flat + 0.5, "flat2"), (slow, "slow")):
    cb = sha.callback(arch_id=name)
    for e in range(1, 19):
      reasons[name] = cb(e, {"valid_loss": float(curve[e - 1])})
      if reasons[name]:
        break
  d = sha.records["flat2"]  # behind "flat" at epoch 2 either way (2 runs there: keep 1)
  # The predicted final value is recorded either way (for the history line); only the ranking differs.
  assert d.stop and d.tau == 2 and d.prob is None
  assert d.predicted == pytest.approx(sha.regressor.predict((flat + 0.5)[None, :2], tau=2)[0][0])
  ranked = "predicted final valid_loss" if predict else "valid_loss 2.505 not in the best 1 of 2"
  assert ranked in reasons["flat2"] and reasons["flat2"].endswith(
      "at this rung" if predict else f"at this rung (predicted final {d.predicted:.4g})")
  if predict:  # predicted 3.83 - 10 * 1.11 < 0: kept at both rungs, completes, sets the best
    assert "slow" not in sha.records and sha.best == pytest.approx(slow[-1])
  else:
    assert sha.records["slow"].tau == 2 and sha.best == pytest.approx(flat[-1])


def test_observed_ranking_without_a_model_records_no_prediction():
  sha = hyperband.SuccessiveHalving(higher_is_better=True, epochs=4, brackets="sha", eta=2,
                                    predict=False, metric="valid_acc", min_curves=3)
  assert sha.rungs_of(sha.s_max) == (1, 2)
  reasons = {}
  for name, acc in (("a", 50.0), ("b", 40.0)):  # no completed run yet: no model, nothing to predict
    cb = sha.callback(arch_id=name)
    reasons[name] = next((r for e in range(1, 5) if (r := cb(e, {"valid_acc": acc + e}))), None)
  assert reasons["a"] is None and reasons["b"].endswith("valid_acc 41 not in the best 1 of 2 at this rung")
  assert sha.records["b"].predicted is None and sha.regressor is None and sha.best == 54.0


def test_rungs_rank_by_the_training_values():
  """rank_by="train": a run behind on validation but ahead on training accuracy at a rung is kept."""
  sha = hyperband.SuccessiveHalving(higher_is_better=True, epochs=4, brackets="sha", eta=2, predict=False,
                                    metric="valid_acc", rank_by="train")
  assert sha.rank_metric == "train_acc" and sha.rungs_of(sha.s_max) == (1, 2)
  runs = {"a": (50.0, 20.0), "b": (30.0, 60.0)}  # (valid_acc, train_acc) at every epoch
  reasons = {}
  for name, (valid, train) in runs.items():
    cb = sha.callback(arch_id=name)
    reasons[name] = next((r for e in range(1, 5) if (r := cb(e, {"valid_acc": valid, "train_acc": train}))),
                         None)
  assert reasons == {"a": None, "b": None} and sha.best == 50.0  # by train_acc b is ahead: both complete
  by_valid = hyperband.SuccessiveHalving(higher_is_better=True, epochs=4, brackets="sha", eta=2,
                                         predict=False, metric="valid_acc")
  out = hyperband.simulate_search(by_valid, np.array([[50.0] * 4, [30.0] * 4]), order=[0, 1])
  assert out["stop_epochs"] == [4, 1]  # by the validation values b stops at the first rung
  sha2 = hyperband.SuccessiveHalving(higher_is_better=True, epochs=4, brackets="sha", eta=2, predict=False,
                                     metric="valid_acc", rank_by="train")
  out = hyperband.simulate_search(sha2, np.array([[50.0] * 4, [30.0] * 4]), order=[0, 1],
                                  extra={"train_acc": np.array([[20.0] * 4, [60.0] * 4])})
  assert out["stop_epochs"] == [4, 4]
  # The training counterpart keeps the task's direction: perplexity, lower is better.
  lm = hyperband.SuccessiveHalving(higher_is_better=False, epochs=4, brackets="sha", eta=2, predict=False,
                                   metric="valid_ppl", rank_by="train")
  assert lm.rank_metric == "train_ppl"
  lm.callback(arch_id="x")(1, {"valid_ppl": 100.0, "train_ppl": 80.0})
  reason = lm.callback(arch_id="y")(1, {"valid_ppl": 90.0, "train_ppl": 95.0})
  assert reason.endswith("train_ppl 95 not in the best 1 of 2 at this rung") and lm.records["y"].tau == 1
  with pytest.raises(ValueError, match="set predict=False"):
    hyperband.SuccessiveHalving(higher_is_better=True, epochs=4, metric="valid_acc", rank_by="train")
  with pytest.raises(ValueError, match="rank_by must be one of"):
    hyperband.make_stopper(get_task("images"), 4, {"rule": "sha", "predict": False, "rank_by": "test"})
  cb = hyperband.make_stopper(get_task("images"), 4, {"rule": "sha", "predict": False,
                                                      "rank_by": "train"}).callback()
  with pytest.raises(ValueError, match="lacks"):
    cb(1, {"valid_acc": 50.0})


def test_simulated_hyperband_with_a_predictor():
  curves, _ = _loss_curves(60, epochs=9, seed=4)
  srm = lc.SequentialRegressor("nusvr_rbf", n_search=4, seed=0).fit(curves[:30])
  out = {}
  for predict in (True, False):
    sha = hyperband.SuccessiveHalving(higher_is_better=False, epochs=9, regressor=srm, predict=predict)
    out[predict] = hyperband.simulate_search(sha, curves[30:], seed=1)
  for r in out.values():
    assert r["epochs"] == sum(r["stop_epochs"]) and r["full_epochs"] == 270
    assert r["speedup"] > 1.5 and r["regret"] <= 0.02
  # Baker's rule runs through the same simulation (its callbacks) and agrees with the direct one.
  stopper = lc.EarlyStopper(higher_is_better=False, epochs=9, regressor=srm)
  via_callbacks = hyperband.simulate_search(stopper, curves[30:], seed=1)
  direct = lc.simulate_early_stopping(srm, curves[30:], higher_is_better=False, seed=1)
  assert via_callbacks["stop_epochs"] == direct["stop_epochs"]


def test_replay_rebuilds_the_schedule_of_a_resumed_search():
  curves, _ = _loss_curves(8, epochs=9, seed=6)
  live = hyperband.SuccessiveHalving(higher_is_better=False, epochs=9, predict=False)
  history = []
  for i, c in enumerate(curves[:7]):
    if i == 3:  # a failed run (no curve) took a bracket slot too
      live.callback(arch_id="failed")
      history.append({"arch_id": "failed", "error": "diverged"})
    cb, curve = live.callback(arch_id=f"a{i}"), []
    for e in range(1, 10):
      curve.append({"epoch": e, "valid_loss": float(c[e - 1])})
      if cb(e, dict(curve[-1])):
        break
    history.append({"arch_id": f"a{i}", "curve": curve})
  assert sum(len(h.get("curve", [])) < 9 for h in history) >= 2  # some runs were stopped
  resumed = hyperband.SuccessiveHalving(higher_is_better=False, epochs=9, predict=False)
  resumed.replay(history)
  assert resumed._dealt == live._dealt and resumed.best == live.best
  rung = lambda s: {k: [list(c) for c, *_ in v] for k, v in s._at_rung.items()}
  assert rung(resumed) == rung(live)
  # The next run meets the same schedule.
  decide = lambda s: [s.callback()(e, {"valid_loss": float(curves[7, e - 1])}) for e in range(1, 10)]
  assert decide(resumed) == decide(live)


def test_benchmark_r2_only(tmp_path):
  curves, _ = _loss_curves(24, epochs=10, seed=7)
  zpath = _write_zip(tmp_path / "tiny.zip", {f"run{i:02d}.json": _log(i, 10, curve=c.tolist())
                                             for i, c in enumerate(curves)})
  result = lce.run(str(zpath), n_fit=12, splits=1, orders=0, n_search=2, regressors=("ols",))
  assert result["r2"]["ols"]["0.5"] > 0.5 and math.isnan(result["speedup"])
  inc = lce.run(str(zpath), n_fit=12, splits=1, orders=0, n_search=2, regressors=("ols",),
                target="increment")
  assert inc["target"] == "increment" and inc["r2"]["ols"]["0.5"] > 0.5
  assert inc["r2"]["ols"]["0.5"] != result["r2"]["ols"]["0.5"]  # the option reaches the regressors
  # A fixed test set: the last n_test curves of the shuffle, whatever n_fit.
  fixed = [lce.run(str(zpath), n_fit=k, n_test=6, splits=1, orders=0, n_search=2, regressors=("ols",))
           for k in (12, 18)]
  assert [r["n_test"] for r in fixed] == [6, 6] and fixed[1]["n_fit"] == 18
  with pytest.raises(ValueError, match="n_test must be in 2..6"):
    lce.run(str(zpath), n_fit=18, n_test=7, splits=1, orders=0, regressors=("ols",))
  assert all(math.isnan(r["speedup"]) for r in result["hyperband"].values())
