"""Tests of experiments/run.py and experiments/train.py: every bad input gives
one line on stderr and exit code 2; config layering; a real subprocess run."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

import experiment_doubles  # noqa: F401  (registers test-only plug-ins)
from experiment_doubles import load_cli
from nas_jax import experiment

ROOT = pathlib.Path(__file__).resolve().parent.parent


run_cli = load_cli("run")
train_cli = load_cli("train")


@pytest.fixture(autouse=True)
def no_compile_cache(monkeypatch):
  """In-process CLI calls must not switch on the persistent cache for the test process."""
  monkeypatch.setenv("NAS_JAX_COMPILE_CACHE", "")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
  return experiment_doubles.write_synthetic_table(
      tmp_path_factory.mktemp("table") / "nb201_synthetic.csv.gz")


@pytest.fixture(scope="module")
def tab_config(table, tmp_path_factory):
  path = tmp_path_factory.mktemp("cfg") / "tabular.py"
  path.write_text(
      "def get_config():\n"
      f"  return {{'space': 'nb201', 'budget': 4, 'evaluator': {{'name': 'tabular', "
      f"'tabular': {{'benchmark_file': {table!r}}}}}, 'final': {{'epochs': 0}}}}\n")
  return str(path)


def fails(main, argv, capsys, message):
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err, err
  assert message in err, err
  return err


@pytest.mark.parametrize("argv, message", [
    (["--strategy", "nope"], "error: unknown strategy 'nope'; choose one of ["),
    (["--strategy", "random", "--space", "dartz"], "error: unknown space 'dartz'"),
    (["--strategy", "random", "--dataset", "nope"], "error: unknown dataset 'nope'"),
    (["--evaluator", "oracle"], "error: unknown evaluator 'oracle'"),
    (["--strategy", "random/../x"], "error: malformed strategy name"),
    (["--set", "budget=abc"], "error: budget must be a positive integer (architectures to "
                              "evaluate, or epochs of a one-shot method), got 'abc'"),
    (["--set", "budget"], "error: malformed --set 'budget'; write FIELD=VALUE"),
    (["--set", "seed=-3"], "error: seed must be a non-negative integer"),
    (["--set", "bugdet=3"], "error: unknown config field(s) ['bugdet']"),
    (["--set", "final.epochs=many"], "error: final.epochs must be a non-negative integer"),
    (["--config", "/nonexistent/cfg.py"], "error: config file /nonexistent/cfg.py does not exist"),
])
def test_run_bad_input(argv, message, capsys, tmp_path):
  fails(run_cli.main, argv + ["--workdir", str(tmp_path / "w")], capsys, message)
  assert not (tmp_path / "w").exists()  # nothing claimed


@pytest.mark.parametrize("argv, message", [
    (["--budget", "x"], "error: argument --budget: invalid int value: 'x'"),
    (["--frobnicate"], "error: unrecognized arguments: --frobnicate"),
])
def test_run_argparse_errors_exit_2(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    run_cli.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and message in err, err


def test_run_bad_config_files(tmp_path, capsys):
  bad = tmp_path / "bad.py"
  bad.write_text("def get_config(:\n")
  fails(run_cli.main, ["--config", str(bad)], capsys, "failed to load (SyntaxError")
  bad.write_text("x = 1\n")
  fails(run_cli.main, ["--config", str(bad)], capsys, "defines no get_config() function")
  bad.write_text("def get_config():\n  return {'strategy': 'random'}\n")
  fails(run_cli.main, ["--config", str(bad)], capsys, "strategy in")
  bad.write_text("def get_config():\n  return [1]\n")
  fails(run_cli.main, ["--config", str(bad)], capsys, "returned list, expected a dict")
  bad.write_text("def get_config():\n  return {'strategy': {'name': 'random', 'batch_size': 0}}\n")
  fails(run_cli.main, ["--config", str(bad), "--space", "nb201", "--workdir", str(tmp_path / "w")],
        capsys, "batch_size=0 is out of range")


def test_config_layering(tmp_path, tab_config):
  args = run_cli.make_parser().parse_args(["--config", tab_config, "--budget", "9", "--seed", "4",
                            "--set", "strategy.batch_size=3", "--final-epochs", "2"])
  cfg = run_cli.build_config(args)
  assert cfg["space"] == "nb201" and cfg["budget"] == 9 and cfg["seed"] == 4
  assert cfg["strategy"] == {"name": "random", "batch_size": 3}
  assert cfg["final"]["epochs"] == 2
  assert cfg["evaluator"]["tabular"]["benchmark_file"].endswith(".csv.gz")
  assert str(run_cli.default_workdir(cfg)) == "runs/random-nb201-digits-seed4"
  assert str(run_cli.default_workdir({**cfg, "dataset": "imagefolder:/a b/c"})) == \
      "runs/random-nb201-imagefolder_a_b_c-seed4"


def test_run_tabular_and_workdir_of_another_experiment(tab_config, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  assert run_cli.main(["--config", tab_config, "--workdir", workdir, "--quiet"]) == 0
  out = capsys.readouterr().out
  for text in ("best genotype", "best search score", "final test acc", "time", "outputs"):
    assert text in out
  result = json.loads((tmp_path / "run" / "result.json").read_text())
  assert f"{result['best_search_score']:.2f}" in out and f"{result['final_test_acc']:.2f}" in out
  fails(run_cli.main, ["--config", tab_config, "--workdir", workdir, "--seed", "1"], capsys,
        f"error: workdir {tmp_path / 'run'} holds another experiment (differs in seed: 0 there, "
        "1 now)")
  # the same command again: already complete, same summary
  assert run_cli.main(["--config", tab_config, "--workdir", workdir, "--quiet"]) == 0
  assert "best search score" in capsys.readouterr().out


def test_subprocess_error_is_one_line_exit_2(tmp_path):
  proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "--strategy",
                         "nope", "--workdir", str(tmp_path / "w")], capture_output=True, text=True)
  assert proc.returncode == 2
  assert proc.stderr.startswith("error: unknown strategy 'nope'") and proc.stderr.count("\n") == 1


# --- experiments/train.py ----------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    (None, "does not exist; give a best_arch.json"),
    ("{not json", "malformed --arch file"),
    ("[1, 2]", "expected a JSON object with 'space'"),
    ('{"space": "nb201"}', "expected a JSON object with 'space'"),
    ('{"space": "dartz", "genotype": {}}', "unknown space 'dartz'"),
    ('{"space": "nb201", "genotype": {"cell": "|bogus~0|+|none~0|none~1|+|none~0|none~1|none~2|"}}',
     "bad genotype"),
    ('{"space": "nasnet", "genotype": {"normal": 3}}', "bad genotype"),
])
def test_train_bad_arch_file(content, message, tmp_path, capsys):
  path = tmp_path / "best_arch.json"
  if content is not None:
    path.write_text(content)
  err = fails(train_cli.main, ["--arch", str(path), "--workdir", str(tmp_path / "w")], capsys,
              message)
  assert str(path) in err


def test_train_bad_epochs(tmp_path, capsys):
  path = tmp_path / "best_arch.json"
  path.write_text(json.dumps({"space": "nb201", "genotype": {
      "cell": "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"}}))
  fails(train_cli.main, ["--arch", str(path), "--epochs", "0"], capsys,
        "final.epochs must be >= 1 to retrain")
  fails(train_cli.main, ["--arch", str(path), "--set", "final.lr=-1", "--workdir",
                         str(tmp_path / "w")], capsys, "lr")


@pytest.mark.slow
def test_digits_end_to_end_and_retrain(tmp_path):
  """The real thing, tiny: nasnet supernet search on digits, final training from
  scratch, then experiments/train.py reproduces the final test accuracy.
  Slow because each network compiles for minutes on a loaded 2-core CPU."""
  workdir = tmp_path / "run"
  run = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "run.py"), "--strategy", "random",
       "--budget", "2", "--final-epochs", "1", "--workdir", str(workdir), "--quiet",
       "--set", "strategy.batch_size=2", "--set", "evaluator.supernet.steps_per_round=2"],
      capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads((workdir / "result.json").read_text())
  assert result["evaluator"] == "supernet" and result["final_source"] == "trained from scratch"
  assert 0.0 <= result["final_test_acc"] <= 100.0 and len(result["final_curve"]) == 1
  assert f"{result['final_test_acc']:.2f} %" in run.stdout
  for name in ("search.png", "final_curve.png", "best_arch.json", "history.jsonl"):
    assert (workdir / name).is_file()
  retrain = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "train.py"), "--arch",
       str(workdir / "best_arch.json"), "--epochs", "1", "--quiet"],
      capture_output=True, text=True)
  assert retrain.returncode == 0, retrain.stderr[-3000:]
  assert f"final test acc  : {result['final_test_acc']:.2f} %" in retrain.stdout


def test_workdir_that_is_a_file(tab_config, tmp_path, capsys):
  path = tmp_path / "file"
  path.write_text("x")
  fails(run_cli.main, ["--config", tab_config, "--workdir", str(path), "--quiet"], capsys,
        f"error: --workdir {path} is a file; give a directory")


def test_main_command_end_to_end_tiny(tmp_path):
  """`experiments/run.py --strategy nao` (the main command: NAO-WS on the nasnet supernet, digits,
  final training from scratch) end to end through the CLI, with a tiny config."""
  workdir = tmp_path / "run"
  tiny = ["--set", "strategy.init_pool=4", "--set", "strategy.new_per_round=2",
          "--set", "strategy.top_k=2", "--set", "strategy.train_steps=3",
          "--set", "evaluator.supernet.init_channels=4", "--set", "evaluator.supernet.layers=3",
          "--set", "evaluator.supernet.steps_per_round=2", "--set", "evaluator.supernet.total_rounds=2",
          "--set", "evaluator.supernet.eval_batch_size=64",
          "--set", "final.init_channels=4", "--set", "final.layers=3",
          # the published-cell reference compiles one more network (tens of seconds here);
          # its plumbing is tested with a recorded train_child in tests/test_references.py
          "--set", "references.cell=null"]
  run = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "run.py"), "--strategy", "nao", "--budget", "10",
       "--final-epochs", "1", "--workdir", str(workdir), "--quiet", *tiny],
      capture_output=True, text=True,
      env={**os.environ, "NAS_JAX_COMPILE_CACHE": str(tmp_path / "xla")})
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads((workdir / "result.json").read_text())
  assert result["strategy"] == "nao" and result["evaluator"] == "supernet"
  assert result["num_evaluations"] == 10 and result["final_source"] == "trained from scratch"
  assert f"{result['final_test_acc']:.2f} %" in run.stdout
  lines = [json.loads(l) for l in (workdir / "history.jsonl").read_text().splitlines()]
  assert len(lines) == 10 and all(l["flops"] > 0 and l["params"] > 0 for l in lines)
  assert result["pareto"] and result["best_flops"] > 0
  # the main command's classical reference: an SVM on the same pixels (train + valid)
  refs = result["references"]
  assert "cell" not in refs
  assert refs["classical"]["model"].startswith("SVC") and refs["classical"]["train_examples"] == 1438
  assert f"classical SVC {refs['classical']['test_acc']:.2f} %" in run.stdout
  for name in ("search.png", "pareto.png", "final_curve.png", "best_arch.json", "run.log"):
    assert (workdir / name).is_file(), name


# --- bad input in every corner: one line, exit 2, nothing written ---------------------------


@pytest.mark.parametrize("argv, message", [
    (["--seed", "99999999999999999999"], "error: seed must be a non-negative integer below 2**63"),
    (["--strategy", "random", "--dataset", "ptb"],
     "error: space 'nasnet' serves ['images'], but dataset 'ptb' is a language_model task; "
     "use --space rnn"),
    (["--strategy", "random", "--space", "rnn", "--dataset", "digits"],
     "error: space 'rnn' serves ['language_model'], but dataset 'digits' is a images task"),
    (["--space", "nb201", "--dataset", "imagefolder:/nonexistent"],
     "error: dataset 'imagefolder:/nonexistent' does not apply to the tabular evaluator"),
])
def test_impossible_combinations(argv, message, capsys, tmp_path):
  fails(run_cli.main, argv + ["--workdir", str(tmp_path / "w"), "--quiet"], capsys, message)
  assert not (tmp_path / "w").exists()


def test_bad_config_files(tmp_path, capsys):
  raising = tmp_path / "raising.py"
  raising.write_text("def get_config():\n  return 1 / 0\n")
  fails(run_cli.main, ["--config", str(raising)], capsys,
        f"error: get_config() of {raising} failed (ZeroDivisionError: division by zero)")
  wrong = tmp_path / "wrong.py"
  wrong.write_text("def get_config(a, b):\n  return {}\n")
  fails(run_cli.main, ["--config", str(wrong)], capsys, f"error: get_config() of {wrong} failed")
  fails(run_cli.main, ["--config", str(tmp_path)], capsys, f"error: config file {tmp_path} is a directory")


def test_data_that_fails_leaves_no_workdir(tmp_path, capsys):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  for cls in ("a", "b"):
    (tmp_path / "imgs" / cls).mkdir(parents=True)
    for i in range(3):
      Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "imgs" / cls / f"{i}.png")
  workdir = tmp_path / "w"
  fails(run_cli.main, ["--strategy", "random", "--dataset", f"imagefolder:{tmp_path / 'imgs'}",
                       "--workdir", str(workdir), "--quiet"], capsys, "lower batch_size")
  assert not workdir.exists()  # so the suggested fix can use the same workdir


def test_set_strategy_name_picks_that_strategys_config_file(tab_config, tmp_path):
  args = run_cli.make_parser().parse_args(["--set", "strategy.name=nao"])
  cfg = run_cli.build_config(args)
  assert cfg["strategy"]["name"] == "nao" and cfg["strategy"].get("init_pool") == 16
  assert cfg["budget"] == 88


def test_tabular_runs_name_the_tables_dataset(tab_config, tmp_path, capsys):
  assert run_cli.main(["--config", tab_config, "--workdir", str(tmp_path / "w"), "--quiet"]) == 0
  saved = json.loads((tmp_path / "w" / "config.json").read_text())
  result = json.loads((tmp_path / "w" / "result.json").read_text())
  assert saved["dataset"] == result["dataset"] and saved["dataset"].startswith("nb201-table:")


def test_another_experiment_names_the_strategy_first(tab_config, tmp_path, capsys):
  assert run_cli.main(["--config", tab_config, "--workdir", str(tmp_path / "w"), "--quiet"]) == 0
  capsys.readouterr()
  err = fails(run_cli.main, ["--config", tab_config, "--strategy", "evolution", "--workdir",
                             str(tmp_path / "w"), "--quiet"], capsys, "holds another experiment")
  assert "differs in strategy.name: 'random' there, 'evolution' now" in err


def test_retrain_refuses_a_foreign_non_empty_workdir(tmp_path, capsys):
  arch = tmp_path / "best_arch.json"
  arch.write_text(json.dumps({"space": "nb201", "genotype": {
      "cell": "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"}}))
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "precious.txt").write_text("keep me")
  fails(train_cli.main, ["--arch", str(arch), "--epochs", "1", "--dataset", "digits",
                         "--workdir", str(tmp_path / "data"), "--quiet"], capsys,
        "is not empty and holds no retraining")
  assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["precious.txt"]


def _tiny_ptb(root: pathlib.Path) -> pathlib.Path:
  """A tiny corpus in Penn Treebank's file layout (30 words, a few thousand tokens)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  words = [f"w{i}" for i in range(29)] + ["<unk>"]
  root.mkdir(parents=True, exist_ok=True)
  for split, n in (("train", 300), ("valid", 40), ("test", 40)):
    lines = [" ".join(words[j] for j in rng.integers(0, 30, 8)) for _ in range(n)]
    (root / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
  return root


def test_ptb_random_search_end_to_end_tiny(tmp_path):
  """The language-model task path: random search on the rnn space, Penn Treebank layout."""
  ptb = _tiny_ptb(tmp_path / "ptb")
  workdir = tmp_path / "run"
  sizes = []
  for group in ("evaluator.scratch", "final"):
    sizes += ["--set", f"{group}.batch_size=4", "--set", f"{group}.bptt=8",
              "--set", f"{group}.eval_batch_size=4", "--set", f"{group}.emb_size=8",
              "--set", f"{group}.hidden_size=8"]
  run = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "run.py"), "--strategy", "random", "--space", "rnn",
       "--dataset", "ptb", "--data-dir", str(ptb), "--budget", "2", "--final-epochs", "1",
       "--set", "strategy.batch_size=2", "--workdir", str(workdir), "--quiet", *sizes],
      capture_output=True, text=True, env={**os.environ, "NAS_JAX_COMPILE_CACHE": ""})
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads((workdir / "result.json").read_text())
  lines = [json.loads(l) for l in (workdir / "history.jsonl").read_text().splitlines()]
  assert len(lines) == 2
  for l in lines:
    ppl = l["metrics"]["valid_ppl"]
    assert ppl > 1 and l["search_score"] == pytest.approx(80.0 / ppl)
    assert l["curve"][0]["valid_ppl"] == ppl and l["flops"] > 0
  assert result["final_report"]["test_ppl"] > 1 and result["final_test_acc"] is None
  assert "final test ppl" in run.stdout and "80 / validation perplexity" in run.stdout


def test_ptb_directory_without_the_files(tmp_path, capsys):
  (tmp_path / "ptb").mkdir()
  (tmp_path / "ptb" / "ptb.train.txt").write_text("a b\n")
  fails(run_cli.main, ["--strategy", "random", "--space", "rnn", "--dataset", "ptb", "--data-dir",
                       str(tmp_path / "ptb"), "--workdir", str(tmp_path / "w"), "--quiet"], capsys,
        "ptb.valid.txt")
  assert not (tmp_path / "w").exists()


LM_SIZES = [f"{k}={v}" for k, v in (("batch_size", 4), ("bptt", 4), ("eval_batch_size", 4), ("emb_size", 4),
                                    ("hidden_size", 4))]


def test_retrain_a_language_model_arch_file(tmp_path, capsys):
  """train.py --arch on a Penn Treebank run's best_arch.json: the built-in images recipe
  (init_channels, rotate, ...) stays out, as in run.py; the run's final test perplexity is reproduced."""
  ptb = _tiny_ptb(tmp_path / "ptb")
  workdir = tmp_path / "run"
  sets = [f"{group}.{s}" for group in ("evaluator.scratch", "final") for s in LM_SIZES]
  sets += ["strategy.batch_size=1", "evaluator.scratch.epochs=1"]
  assert run_cli.main(["--strategy", "random", "--space", "rnn", "--dataset", "ptb", "--data-dir", str(ptb),
                       "--budget", "1", "--final-epochs", "1", "--quiet", "--workdir", str(workdir),
                       *[a for s in sets for a in ("--set", s)]]) == 0
  ppl = json.loads((workdir / "result.json").read_text())["final_report"]["test_ppl"]
  capsys.readouterr()
  # beside the run's config.json: its settings (final: 1 epoch, the tiny sizes; the data dir)
  assert train_cli.main(["--arch", str(workdir / "best_arch.json"), "--quiet"]) == 0
  out = capsys.readouterr().out
  assert f"final test ppl  : {ppl:.2f}\n" in out and "80 / validation perplexity during search" in out
  retrain = json.loads((workdir / "retrain-ptb-seed0" / "retrain.json").read_text())
  assert retrain["final_test_ppl"] == pytest.approx(ppl, rel=1e-5) and "final_test_acc" not in retrain
  assert retrain["final"] == {"epochs": 1, **{s.split("=")[0]: 4 for s in LM_SIZES}}
  # the arch file alone: the dataset named in it, the defaults of configs/default.py fitted to the task
  alone = tmp_path / "alone"
  alone.mkdir()
  (alone / "best_arch.json").write_text((workdir / "best_arch.json").read_text())
  argv = ["--arch", str(alone / "best_arch.json"), "--epochs", "1", "--data-dir", str(ptb), "--quiet",
          *[a for s in LM_SIZES for a in ("--set", f"final.{s}")]]
  assert train_cli.main(argv) == 0
  assert f"final test ppl  : {ppl:.2f}\n" in capsys.readouterr().out
  # the user's own settings are still checked strictly
  fails(train_cli.main, argv + ["--set", "final.init_channels=8", "--workdir", str(tmp_path / "w")], capsys,
        "unknown training config keys ['init_channels'] for the language_model task")


def test_retrain_an_image_arch_file_keeps_the_images_recipe(tmp_path, capsys):
  """An image arch file alone: configs/default.py's digits recipe (rotate, scale, ...) applies."""
  arch = tmp_path / "best_arch.json"
  arch.write_text(json.dumps({"space": "nb201", "dataset": "digits", "genotype": {
      "cell": "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"}}))
  assert train_cli.main(["--arch", str(arch), "--epochs", "1", "--quiet", "--set", "final.init_channels=2",
                         "--set", "final.layers=1", "--set", "data.train_size=128"]) == 0
  out = capsys.readouterr().out
  retrain = json.loads((tmp_path / "retrain-digits-seed0" / "retrain.json").read_text())
  assert f"final test acc  : {retrain['final_test_acc']:.2f} %\n" in out
  assert retrain["final"] == {**experiment.load_config_file(ROOT / "experiments" / "configs" / "default.py")["final"],
                              "epochs": 1, "init_channels": 2, "layers": 1}
