"""Retrain a found architecture from scratch.

    python experiments/train.py --arch runs/random-nasnet-digits-seed0/best_arch.json
    python experiments/train.py --arch best_arch.json --epochs 50 --dataset cifar10 \\
        --set final.init_channels=36 --set final.layers=20

Settings: the run's config.json beside the arch file (else configs/default.py
and configs/<strategy>.py), then --config FILE, then the flags and --set (the
training settings are the config's ``final`` group; as in run.py, the built-in
files' images recipe is left out on a language-model dataset but for its
epochs). So by default it reproduces the run's final training and
final_test_acc (final_test_ppl). Outputs (retrain.json,
final_curve.png, checkpoints) go to --workdir (default: retrain-<dataset>-seed<seed>
beside the arch file); rerunning resumes. Bad input: one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIGS = pathlib.Path(__file__).resolve().parent / "configs"

from experiments._cli import OneLineErrorParser, fit_final_to_task, set_value  # noqa: E402  (needs ROOT on sys.path)


def main(argv=None) -> int:
  p = OneLineErrorParser(description=__doc__.split("\n\n")[0],
              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  p.add_argument("--arch", required=True, help="best_arch.json written by experiments/run.py")
  p.add_argument("--epochs", type=int, help="training epochs (final.epochs)")
  p.add_argument("--dataset", help="default: the dataset named in the arch file")
  p.add_argument("--data-dir", help="tfds data directory")
  p.add_argument("--seed", type=int)
  p.add_argument("--config", help="Python file with get_config() (only changed fields needed)")
  p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                 help="override a config field, e.g. --set final.layers=8 (repeatable)")
  p.add_argument("--workdir", help="output dir (default: beside the arch file)")
  p.add_argument("--quiet", action="store_true", help="no progress bar")
  args = p.parse_args(argv)
  try:
    from nas_jax import experiment  # pylint: disable=import-outside-toplevel
    experiment.enable_compile_cache()
    _, _, record = experiment.load_arch_file(args.arch)
    config = experiment.load_config_file(CONFIGS / "default.py")
    run_config = pathlib.Path(args.arch).parent / "config.json"
    run = json.loads(run_config.read_text()) if run_config.is_file() else None
    if run is not None and not isinstance(run, dict):
      raise ValueError(f"{run_config} does not hold an experiment config; move the arch file elsewhere")
    user = experiment.load_config_file(args.config) if args.config else {}
    strategy = str(record.get("strategy", ""))
    if run is None and re.fullmatch(r"[A-Za-z0-9_]+", strategy) and (CONFIGS / f"{strategy}.py").is_file():
      config = experiment.merge(config, experiment.load_config_file(CONFIGS / f"{strategy}.py"))
    searched = (run if run is not None else record).get("dataset")  # the dataset of the search
    dataset = (set_value(args.set, "dataset") or args.dataset or user.get("dataset")
               or (searched if isinstance(searched, str) else None) or config["dataset"])
    config = fit_final_to_task(config, dataset)  # the images recipe of the config files
    if run is not None:
      config = experiment.merge(config, run)
    elif isinstance(record.get("dataset"), str):
      config["dataset"] = record["dataset"]
    config = experiment.merge(config, user)
    config["space"], config["space_options"] = record["space"], record["space_options"]
    flags = {"dataset": args.dataset, "seed": args.seed, "data_dir": args.data_dir}
    config.update({k: v for k, v in flags.items() if v is not None})
    if args.epochs is not None:
      config["final"]["epochs"] = args.epochs
    config = experiment.apply_overrides(config, args.set or [])
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(config["dataset"])).strip("_")
    workdir = (pathlib.Path(args.workdir) if args.workdir else
               pathlib.Path(args.arch).parent / f"retrain-{slug}-seed{config.get('seed', 0)}")
    out = experiment.retrain(args.arch, config, workdir, quiet=args.quiet)
  except (ValueError, OSError) as e:  # bad input, unusable paths: one line, no traceback
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted; rerun the same command to resume", file=sys.stderr)
    return 130
  print(f"== retrained {out['arch_id']} on {out['dataset']} (seed {out['seed']}, "
        f"{out['final']['epochs']} epochs) ==")
  print(f"genotype        : {json.dumps(out['genotype'])}")
  lm = "final_test_ppl" in out  # a language model: perplexity (else accuracy, %)
  if out["search_score"] is not None:
    meaning = "80 / validation perplexity during search" if lm else "validation accuracy during search, %"
    print(f"search score    : {out['search_score']:.2f} ({meaning})")
  name, unit = ("ppl", "") if lm else ("acc", " %")
  value = out[f"final_test_{name}"]
  print(f"final test {name}  : " + ("not measured (no finite value)" if value is None else f"{value:.2f}{unit}"))
  print(f"time            : {out['final_seconds']:.1f} s")
  print(f"outputs         : {workdir}/ (retrain.json, final_curve.png, checkpoints/)")
  return 0


if __name__ == "__main__":
  from nas_jax import runtime  # pylint: disable=import-outside-toplevel
  runtime.reexec_with_huge_pages()  # before jax is imported: see nas_jax/runtime.py
  sys.exit(main())
