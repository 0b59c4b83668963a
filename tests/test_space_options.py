"""``space_options``: constructor arguments of the space, from the config and ``--set`` to every part."""
from __future__ import annotations

import json

import numpy as np
import pytest

import experiment_doubles  # registers the test-only "test_nan" evaluator
from experiment_doubles import load_cli
from nas_jax import registry
from nas_jax.runner import config as config_lib
from nas_jax.runner import experiment
from nas_jax.runner import final as final_lib
from nas_jax.spaces.macro import MacroSpace
from nas_jax.spaces.rnn import RNNSpace

del experiment_doubles


def macro_config(**changes):
  """Random search on macro scored by the test-only test_nan evaluator: no training, a second."""
  cfg = config_lib.merge(config_lib.default_config(), {
      "space": "macro", "space_options": {"num_layers": 3}, "budget": 4,
      "strategy": {"name": "random", "batch_size": 2}, "evaluator": {"name": "test_nan"},
      "data": {"train_size": 64}, "final": {"epochs": 0}, "checkpoint": {"interval_s": 0.0}})
  return config_lib.merge(cfg, changes)


def test_registry_builds_the_space_with_its_options():
  assert registry.get_space("rnn", num_nodes=9, output="mean") == RNNSpace.darts()
  assert registry.get_space("macro", num_layers=24).arch_shape == MacroSpace(24).arch_shape
  assert registry.get_space("macro") == MacroSpace(12)  # no options: the defaults, as before
  assert registry.space_options("petridish") == ["stages", "layers_per_stage", "max_layers"]
  assert registry.space_options("nasnet") == []


@pytest.mark.parametrize("name, options, message", [
    ("macro", {"num_nodes": 9}, r"space 'macro' has no option 'num_nodes'; its options: \['num_layers'\]"),
    ("rnn", {"layers": 2, "steps": 3}, r"space 'rnn' has no options \['layers', 'steps'\]; its options: "
                                       r"\['num_nodes', 'output'\]"),
    ("nasnet", {"num_nodes": 4}, "space 'nasnet' has no option 'num_nodes'; it takes no options"),
    ("rnn", {"num_nodes": 1}, r"rnn num_nodes=1: must be an int >= 2"),
    ("rnn", {"output": "max"}, r"rnn output='max': choose one of \['loose_ends', 'mean'\]"),
    ("macro", {"num_layers": True}, "macro num_layers must be an integer >= 1, got True"),
    ("petridish", {"max_layers": 0}, "petridish space: max_layers must be an int >= 1, got 0"),
    ("petridish_cell", {"cells_per_stage": 1.5}, "petridish_cell space: cells_per_stage must be an int"),
])
def test_unknown_options_and_bad_values_are_refused(name, options, message):
  with pytest.raises(ValueError, match=message):
    registry.get_space(name, **options)
  with pytest.raises(ValueError, match="^space_options: " + message):
    config_lib.validate_config(config_lib.merge(config_lib.default_config(),
                                                {"space": name, "space_options": options}))


def test_set_reaches_the_space_and_a_bad_key_is_one_line_exit_2(tmp_path, capsys):
  run = load_cli("run")
  args = run.make_parser().parse_args(["--space", "rnn", "--dataset", "ptb", "--set", "space_options.num_nodes=9",
                                       "--set", "space_options.output=mean"])
  assert config_lib.validate_config(run.build_config(args))["space_options"] == {"num_nodes": 9, "output": "mean"}
  args = run.make_parser().parse_args(["--space", "macro", "--set", "space_options.num_layers=6",
                                       "--set", "data.train_size=64"])
  cfg = config_lib.validate_config(run.build_config(args))
  parts = experiment.build(cfg, tmp_path / "unused")  # the space, the strategy and the supernet evaluator
  assert parts.space == MacroSpace(6) and parts.method.space == MacroSpace(6)
  assert parts.evaluator.net_config.num_layers == 6
  code = run.main(["--space", "macro", "--set", "space_options.num_nodes=9", "--workdir", str(tmp_path / "w")])
  err = capsys.readouterr().err
  assert code == 2 and err.count("\n") == 1
  assert err == ("error: space_options: space 'macro' has no option 'num_nodes'; "
                 "its options: ['num_layers']\n")
  assert not (tmp_path / "w").exists()


def test_supernet_evaluator_follows_the_macro_space():
  from nas_jax.data import load_dataset  # pylint: disable=import-outside-toplevel
  from nas_jax.evaluators.supernet import SupernetEvaluator  # pylint: disable=import-outside-toplevel
  data = load_dataset("digits", train_size=64, valid_fraction=0.25)
  for layers in (3, 12):
    ev = SupernetEvaluator(MacroSpace(layers), {"init_channels": 4, "batch_size": 16}, data=data)
    assert ev.net_config.num_layers == layers


def test_options_are_part_of_the_experiment_and_the_best_arch_file(tmp_path):
  workdir = tmp_path / "run"
  result = experiment.run_experiment(macro_config(), workdir, quiet=True)
  assert result["space"] == "macro" and result["space_options"] == {"num_layers": 3}
  record = json.loads((workdir / "best_arch.json").read_text())
  assert record["space_options"] == {"num_layers": 3} and len(record["arch"]) == MacroSpace(3).arch_shape[0]
  # the best_arch.json round trip rebuilds the space searched
  space, arch, loaded = final_lib.load_arch_file(workdir / "best_arch.json")
  assert space == MacroSpace(3) and arch.tolist() == record["arch"]
  assert loaded["space_options"] == {"num_layers": 3}
  # a resumed run with other options is refused like any other changed setting
  with pytest.raises(ValueError, match=r"holds another experiment \(differs in space_options.num_layers: "
                                       r"3 there, 4 now"):
    experiment.run_experiment(macro_config(space_options={"num_layers": 4}), workdir, quiet=True)
  with pytest.raises(ValueError, match="differs in space_options.num_layers: 3 there, '<missing>' now"):
    experiment.run_experiment(macro_config() | {"space_options": {}}, workdir, quiet=True)
  a = config_lib.validate_config(macro_config())
  b = config_lib.validate_config(macro_config(space_options={"num_layers": 4}))
  assert config_lib.fingerprint(a) != config_lib.fingerprint(b)
  # the same options resume (here: the finished result comes back)
  assert experiment.run_experiment(macro_config(), workdir, quiet=True) == result


def test_files_from_before_space_options_still_load(tmp_path):
  # no space_options in config.json: the same experiment as {} (the fingerprint too)
  cfg = config_lib.validate_config(macro_config() | {"space_options": {}})  # 12 layers
  old = {k: v for k, v in cfg.items() if k != "space_options"}
  assert config_lib.fingerprint(old) == config_lib.fingerprint(cfg)
  workdir = tmp_path / "run"
  result = experiment.run_experiment(cfg, workdir, quiet=True)
  (workdir / "config.json").write_text(json.dumps(old))
  assert experiment.run_experiment(cfg, workdir, quiet=True) == result
  # a best_arch.json without space_options has the default space
  record = json.loads((workdir / "best_arch.json").read_text())
  assert record["space_options"] == {}
  del record["space_options"]
  (tmp_path / "old.json").write_text(json.dumps(record))
  space, arch, loaded = final_lib.load_arch_file(tmp_path / "old.json")
  assert space == MacroSpace(12) and arch.shape == (78,) and loaded["space_options"] == {}
  # options the genotype does not fit, or that the space lacks, name the file
  (tmp_path / "bad.json").write_text(json.dumps({**record, "space_options": {"num_layers": 3}}))
  with pytest.raises(ValueError, match="bad.json: bad genotype"):
    final_lib.load_arch_file(tmp_path / "bad.json")
  (tmp_path / "bad2.json").write_text(json.dumps({**record, "space_options": {"depth": 3}}))
  with pytest.raises(ValueError, match=r"bad2.json: bad space_options \(space 'macro' has no option 'depth'"):
    final_lib.load_arch_file(tmp_path / "bad2.json")


def test_options_equal_to_the_defaults_are_the_default_experiment(tmp_path):
  for space, options, kept in (("macro", {"num_layers": 12}, {}),
                               ("rnn", {"num_nodes": 12, "output": "loose_ends"}, {}),
                               ("rnn", {"num_nodes": 9, "output": "loose_ends"}, {"num_nodes": 9}),
                               ("petridish", {"stages": 3, "max_layers": 8}, {"max_layers": 8})):
    base = config_lib.merge(config_lib.default_config(),
                            {"space": space, "dataset": "ptb" if space == "rnn" else "digits"})
    spelled = config_lib.validate_config(config_lib.merge(base, {"space_options": options}))
    assert spelled["space_options"] == kept, space
    assert (config_lib.fingerprint(spelled) == config_lib.fingerprint(config_lib.validate_config(base))) == (not kept)
  # a run started without options resumes with the default spelled out, and the other way round
  for first, then in (({}, {"num_layers": 12}), ({"num_layers": 12}, {})):
    workdir = tmp_path / f"run{len(first)}"
    result = experiment.run_experiment(macro_config() | {"space_options": first}, workdir, quiet=True)
    assert experiment.run_experiment(macro_config() | {"space_options": then}, workdir, quiet=True) == result
    assert result["space_options"] == {}
    for name in ("config.json", "best_arch.json"):
      assert json.loads((workdir / name).read_text())["space_options"] == {}, name
  # the default space's architectures: 12 layers
  assert len(json.loads((workdir / "best_arch.json").read_text())["arch"]) == MacroSpace(12).arch_shape[0]


def test_summary_names_the_options(tmp_path):
  run = load_cli("run")
  result = experiment.run_experiment(macro_config(), tmp_path / "run", quiet=True)
  assert "== random on macro(num_layers=3)/digits (evaluator test_nan" in run.summary(result, tmp_path / "run")


MACRO_SETS = ["data.train_size=64", "space_options.num_layers=2"]


def test_random_search_with_the_supernet_on_a_two_layer_macro_space_end_to_end(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("NAS_JAX_COMPILE_CACHE", "")
  workdir = tmp_path / "w"
  sets = MACRO_SETS + ["strategy.batch_size=2"] + [
      f"evaluator.supernet.{k}={v}" for k, v in (("init_channels", 2), ("batch_size", 16), ("eval_batch_size", 16),
                                                 ("steps_per_round", 1), ("total_rounds", 1))]
  argv = ["--strategy", "random", "--space", "macro", "--budget", "2", "--final-epochs", "0", "--quiet",
          "--workdir", str(workdir)]
  assert load_cli("run").main(argv + [a for s in sets for a in ("--set", s)]) == 0
  assert "== random on macro(num_layers=2)/digits (evaluator supernet" in capsys.readouterr().out
  record = json.loads((workdir / "best_arch.json").read_text())
  assert record["space_options"] == {"num_layers": 2} and len(record["arch"]) == 3  # 2 ops + 1 skip bit
  lines = [json.loads(l) for l in (workdir / "history.jsonl").read_text().splitlines()]
  assert [len(l["genotype"]["layers"]) for l in lines] == [2, 2]
  assert all(0.0 <= l["search_score"] <= 100.0 for l in lines)


@pytest.mark.slow  # ~25 s on a loaded 2-core CPU: the macro supernet's train step and the controller compile
def test_enas_oneshot_on_a_two_layer_macro_space_end_to_end(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("NAS_JAX_COMPILE_CACHE", "")
  workdir = tmp_path / "w"
  sets = MACRO_SETS + [f"strategy.{k}={v}" for k, v in (
      ("child_steps", 1), ("controller_steps", 1), ("derive_samples", 2), ("controller.hidden_size", 4),
      ("controller.batch_size", 2), ("supernet.init_channels", 2), ("supernet.batch_size", 16),
      ("supernet.eval_batch_size", 16))]
  argv = ["--strategy", "enas_oneshot", "--space", "macro", "--budget", "1", "--final-epochs", "0", "--quiet",
          "--workdir", str(workdir)]
  assert load_cli("run").main(argv + [a for s in sets for a in ("--set", s)]) == 0
  assert "== enas_oneshot on macro(num_layers=2)/digits (one-shot" in capsys.readouterr().out
  record = json.loads((workdir / "best_arch.json").read_text())
  assert record["space_options"] == {"num_layers": 2} and len(record["arch"]) == 3
  line = json.loads((workdir / "history.jsonl").read_text().splitlines()[0])
  assert len(line["genotype"]["layers"]) == 2 and line["search_score"] is not None


def _tiny_ptb(root):
  rng = np.random.default_rng(0)
  words = [f"w{i}" for i in range(29)] + ["<unk>"]
  root.mkdir()
  for split, n in (("train", 100), ("valid", 20), ("test", 20)):
    lines = [" ".join(words[j] for j in rng.integers(0, 30, 8)) for _ in range(n)]
    (root / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
  return root


def test_enas_oneshot_on_a_three_node_rnn_cell_end_to_end(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("NAS_JAX_COMPILE_CACHE", "")
  workdir = tmp_path / "w"
  argv = ["--strategy", "enas_oneshot", "--space", "rnn", "--dataset", "ptb", "--data-dir",
          str(_tiny_ptb(tmp_path / "ptb")), "--budget", "1", "--final-epochs", "0", "--quiet",
          "--workdir", str(workdir),
          "--set", "space_options.num_nodes=3", "--set", "space_options.output=mean"]
  for k, v in (("child_steps", 2), ("controller_steps", 1), ("derive_samples", 2), ("controller.hidden_size", 4),
               ("controller.batch_size", 2), ("supernet.batch_size", 4), ("supernet.bptt", 4),
               ("supernet.emb_size", 4), ("supernet.hidden_size", 4), ("supernet.eval_batch_size", 4)):
    argv += ["--set", f"strategy.{k}={v}"]
  assert load_cli("run").main(argv) == 0
  assert "== enas_oneshot on rnn(num_nodes=3, output='mean')/ptb (one-shot" in capsys.readouterr().out
  record = json.loads((workdir / "best_arch.json").read_text())
  assert record["space_options"] == {"num_nodes": 3, "output": "mean"}
  assert np.asarray(record["arch"]).shape == (3, 2) and record["arch_id"].startswith("rnn-mean:")
  space, arch, _ = final_lib.load_arch_file(workdir / "best_arch.json")
  assert space == RNNSpace(3, "mean") and space.output_nodes(arch) == (1, 2)
