"""Run (or resume) a neural architecture search.

    python experiments/run.py --strategy random
    python experiments/run.py --strategy evolution --space nb201 --budget 100
    python experiments/run.py --strategy darts --space nb201 --dataset imagefolder:/data/cifar10
    python experiments/run.py --strategy random --space rnn --dataset ptb --data-dir /data/ptb
    python experiments/run.py --config my_config.py --set strategy.population_size=20
    python experiments/run.py --strategy enas_oneshot --space macro --set space_options.num_layers=24
    python experiments/run.py --strategy random --evaluator scratch --budget 20 --early-stop
    python experiments/run.py --strategy bayesnas-compress --model lenet5   (experiments/compress.py)

Config = configs/default.py, then configs/<strategy>.py (when present), then
--config FILE, then the flags, then --set FIELD=VALUE (repeatable). Outputs go
to --workdir (default runs/<strategy>-<space>-<dataset>-seed<seed>); rerunning
the same command resumes. Bad input: one line on stderr, exit code 2.
Compiled networks are cached in $NAS_JAX_COMPILE_CACHE (default
~/.cache/nas_jax/xla; empty: off), so a second run starts in seconds.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import signal
import sys
import threading

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIGS = pathlib.Path(__file__).resolve().parent / "configs"

from experiments._cli import OneLineErrorParser, fit_final_to_task, set_value  # noqa: E402  (needs ROOT on sys.path)


def build_config(args) -> dict:
  """The experiment config from the config files, flags and --set."""
  from nas_jax import experiment  # pylint: disable=import-outside-toplevel
  config = experiment.load_config_file(CONFIGS / "default.py")
  user = experiment.load_config_file(args.config) if args.config else {}
  for group in ("strategy", "evaluator", "final"):
    if not isinstance(user.get(group, {}), dict):
      raise ValueError(f"{group} in {args.config} must be a dict of settings, "
                       f"got {user[group]!r}")
  strategy = (set_value(args.set, "strategy.name") or args.strategy
              or user.get("strategy", {}).get("name") or config["strategy"]["name"])
  if not isinstance(strategy, str) or not re.fullmatch(r"[A-Za-z0-9_]+", strategy):
    raise ValueError(f"malformed strategy name {strategy!r}")
  if (CONFIGS / f"{strategy}.py").is_file():
    config = experiment.merge(config, experiment.load_config_file(CONFIGS / f"{strategy}.py"))
  dataset = set_value(args.set, "dataset") or args.dataset or user.get("dataset") or config["dataset"]
  config = fit_final_to_task(config, dataset)  # the images recipe of the config files
  config = experiment.merge(config, user)
  config["strategy"]["name"] = strategy
  flags = {"space": args.space, "dataset": args.dataset, "seed": args.seed,
           "budget": args.budget, "data_dir": args.data_dir}
  config.update({k: v for k, v in flags.items() if v is not None})
  if args.evaluator is not None:
    config["evaluator"]["name"] = args.evaluator
  if args.final_epochs is not None:
    config["final"]["epochs"] = args.final_epochs
  config = experiment.apply_overrides(config, args.set or [])
  if args.early_stop is not None:
    from nas_jax.runner import config as config_lib  # pylint: disable=import-outside-toplevel
    evaluator = config_lib.resolve_evaluator_name(config)
    if evaluator != "scratch":
      raise ValueError(f"--early-stop stops candidates trained from scratch, but the evaluator is "
                       f"{evaluator!r}; add --evaluator scratch")
    stop = config["evaluator"].setdefault("scratch", {})
    stop["early_stop"] = True if args.early_stop is True else {"delta": args.early_stop}
  return config


def default_workdir(config: dict) -> pathlib.Path:
  slug = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s)).strip("_")
  return pathlib.Path("runs") / (f"{slug(config['strategy']['name'])}-{slug(config['space'])}-"
                                 f"{slug(config['dataset'])}-seed{config['seed']}")


def _score_meaning(result: dict) -> str:
  """What the search score of a result is, in words."""
  metrics = result.get("best_metrics") or {}
  ppl = metrics.get("valid_ppl")
  if ppl is not None:
    return f"80 / validation perplexity {ppl:.1f} during the search"
  if metrics.get("supernet_valid_ppl") is not None:  # ENAS's shared LM: one validation window
    return (f"80 / validation perplexity {metrics['supernet_valid_ppl']:.1f} of a validation window "
            "under the shared weights")
  return "validation accuracy during the search, %"


def summary(result: dict, workdir: pathlib.Path) -> str:
  """The printed summary of a finished experiment."""
  acc = result["final_test_acc"]
  extra = result.get("final_report") or {}
  if acc is not None:
    final_text = f"final test acc     : {acc:.2f} % ({result['final_source']})"
  elif extra.get("test_ppl") is not None:
    final_text = f"final test ppl     : {extra['test_ppl']:.2f} ({result['final_source']})"
  else:
    final_text = f"final test acc     : not measured ({result['final_source']})"
  files = [p.name for p in sorted(workdir.iterdir()) if p.is_file() and p.suffix != ".tmp"]
  from nas_jax.runner import config as config_lib  # pylint: disable=import-outside-toplevel
  space = config_lib.space_label(result)  # with its space_options, e.g. macro(num_layers=6)
  oneshot = result.get("kind") == "oneshot"
  if result.get("kind") == "growth":  # Petridish: every model is grown from a trained parent
    where, how = f"{space}/{result['dataset']}", "forward growth"
    count = f"{result['num_evaluations']} trained models"
    picked = f"model {result['best_index'] + 1} of {result['num_evaluations']}"
  elif oneshot:
    where, how = f"{space}/{result['dataset']}", "one-shot"
    count = f"{result['num_evaluations']} epochs"
    picked = f"derived after epoch {result['best_index'] + 1}"
  else:
    where = (f"{space} (tabular benchmark)" if result["evaluator"] == "tabular"
             else f"{space}/{result['dataset']}")
    how, count = f"evaluator {result['evaluator']}", f"{result['num_evaluations']} architectures"
    picked = f"evaluation {result['best_index'] + 1} of {result['num_evaluations']}"
  size = ""
  if result.get("best_flops") is not None:
    size = (f"size               : {result['best_flops'] / 1e6:.2f} M multiply-adds, "
            f"{result['best_params'] / 1e6:.3f} M parameters; "
            f"{len(result.get('pareto') or [])} architecture(s) on the score/FLOPs frontier")
  lines = [
      f"== {result['strategy']} on {where} ({how}, seed {result['seed']}, {count}) ==",
      f"best genotype      : {json.dumps(result['best_genotype'])}",
      f"best search score  : {result['best_search_score']:.2f} ({_score_meaning(result)}; {picked})",
      final_text]
  if size:
    lines.append(size)
  refs = result.get("references") or {}
  ref_parts = []
  for what, ref in (("published cell", refs.get("cell")), ("classical", refs.get("classical"))):
    if ref and ref.get("test_acc") is not None:
      name = ref.get("name") or ref.get("model", "").split("(")[0]
      ref_parts.append(f"{what} {name} {ref['test_acc']:.2f} %")
    elif ref and ref.get("test_ppl") is not None:
      ref_parts.append(f"{what} {ref.get('name')} ppl {ref['test_ppl']:.2f}")
  if ref_parts:
    lines.append(f"references         : {'; '.join(ref_parts)} (same split, same recipe and seed)")
  table = refs.get("table")
  if table:
    lines.append(f"table references   : best {table['table_best_test_acc']:.2f} %, median "
                 f"{table['table_median_test_acc']:.2f} % test acc over its {table['table_size']} cells")
  bench = result.get("benchmark_report")
  if bench and bench.get("test_acc") is not None:
    lines.append(f"benchmark table    : test acc {bench['test_acc']:.2f} % (NAS-Bench-201's own 200-epoch "
                 "CIFAR-10 training of the derived cell; not trained here)")
  lines += [
      f"time               : set-up {result.get('setup_seconds', 0.0):.1f} s (data, network "
      f"init), search {result['search_seconds']:.1f} s, final {result['final_seconds']:.1f} s, "
      f"references {result.get('references_seconds', 0.0):.1f} s, "
      f"total {result['total_seconds']:.1f} s",
      f"outputs            : {workdir}/ ({', '.join(files)})",
  ]
  return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
  p = OneLineErrorParser(description=__doc__.split("\n\n")[0],
              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("--strategy", help="search strategy (registry name), e.g. random, nao")
  p.add_argument("--space", help="search space: nasnet, nb201, darts, macro or rnn (sizes: --set "
                 "space_options.num_layers=24 on macro, space_options.num_nodes=9 on rnn)")
  p.add_argument("--dataset", help="digits, cifar10, cifar100, a tfds name, imagefolder:PATH, or "
                 "ptb (Penn Treebank: --data-dir or $NAS_JAX_PTB_DIR)")
  p.add_argument("--evaluator", help="auto, tabular, scratch or supernet")
  p.add_argument("--config", help="Python file with get_config() (only changed fields needed)")
  p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                 help="override a config field, e.g. --set strategy.population_size=20 (repeatable)")
  p.add_argument("--workdir",
                 help="output dir (default runs/<strategy>-<space>-<dataset>-seed<seed>)")
  p.add_argument("--seed", type=int)
  p.add_argument("--budget", type=int,
                 help="architectures to evaluate (epochs for one-shot strategies such as darts)")
  p.add_argument("--final-epochs", type=int, help="epochs of the final training (0: none)")
  p.add_argument("--data-dir", help="tfds data directory, or the Penn Treebank directory")
  p.add_argument("--early-stop", nargs="?", const=True, type=float, metavar="DELTA",
                 help="stop candidates whose predicted final score will probably not beat the "
                 "best (learning-curve prediction, Baker et al.; evaluator scratch); DELTA: stop "
                 "below this probability (default 0.05)")
  p.add_argument("--quiet", action="store_true", help="no progress bars")
  return p


def _terminate(signum, frame):  # SIGTERM: stop like Ctrl-C (the search saves a checkpoint)
  del signum, frame
  raise KeyboardInterrupt


COMPRESS = "bayesnas-compress"  # not a search: BayesNAS's prior on a plain CNN (experiments/compress.py)


def _compress_args(argv: list[str]) -> list[str] | None:
  """``argv`` without its ``--strategy bayesnas-compress`` when that is the strategy, else None."""
  for i, a in enumerate(argv):
    if a == "--strategy" and i + 1 < len(argv) and argv[i + 1] == COMPRESS:
      return argv[:i] + argv[i + 2:]
    if a == f"--strategy={COMPRESS}":
      return argv[:i] + argv[i + 1:]
  return None


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  rest = _compress_args(argv)
  if rest is not None:
    from experiments import compress  # pylint: disable=import-outside-toplevel
    compress.main(rest, prog="run.py --strategy bayesnas-compress")
    return 0
  args = make_parser().parse_args(argv)
  main_thread = threading.current_thread() is threading.main_thread()
  old_handler = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
  try:
    return _main(args)
  finally:
    if main_thread:
      signal.signal(signal.SIGTERM, old_handler)


def _main(args) -> int:
  try:
    from nas_jax import experiment  # pylint: disable=import-outside-toplevel
    experiment.enable_compile_cache()
    config = experiment.validate_config(build_config(args))
    workdir = pathlib.Path(args.workdir) if args.workdir else default_workdir(config)
    result = experiment.run_experiment(config, workdir, quiet=args.quiet)
  except (ValueError, OSError) as e:  # bad input, unusable paths: one line, no traceback
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted; rerun the same command to resume", file=sys.stderr)
    return 130
  print(summary(result, workdir))
  return 0


if __name__ == "__main__":
  from nas_jax import runtime  # pylint: disable=import-outside-toplevel
  runtime.reexec_with_huge_pages()  # before jax is imported: see nas_jax/runtime.py
  sys.exit(main())
