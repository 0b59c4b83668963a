"""Compress a plain CNN with BayesNAS's prior on its filters and neurons.

    python experiments/compress.py --model lenet5 --workdir runs/compress-lenet5
    python experiments/compress.py --model lenet5 --set lam=0.15 --set outer_iterations=30
    python experiments/compress.py --model vgg_small --dataset imagefolder:/data/cifar10

The same job runs as ``python experiments/run.py --strategy bayesnas-compress
--model lenet5``.

Writes ``report.json`` (accuracy before and after, weights kept per layer,
the fraction pruned, the curve over the outer iterations) and
``sparsity.png`` to the workdir. Settings: ``nas_jax.oneshot.bayesnas_compress``
``default_config()``, overridden by ``--set FIELD=VALUE``. Bad input: one line
on stderr, exit code 2.
"""
from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments._cli import OneLineErrorParser  # noqa: E402


def main(argv=None, prog: str | None = None) -> dict:
  from nas_jax.oneshot.bayesnas_compress import MODELS  # pylint: disable=import-outside-toplevel
  p = OneLineErrorParser(prog=prog, description="BayesNAS compression of a plain CNN (LeNet-5 on digits, a small VGG)")
  p.add_argument("--model", default="lenet5", choices=sorted(MODELS), help="network to compress")
  p.add_argument("--dataset", default="digits", help="image dataset (nas_jax.data.load_dataset)")
  p.add_argument("--workdir", default=None, help="output folder (default runs/compress-<model>)")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a setting")
  args = p.parse_args(argv)
  import nas_jax.data  # pylint: disable=import-outside-toplevel
  from nas_jax.experiment import parse_value  # pylint: disable=import-outside-toplevel
  from nas_jax.oneshot import bayesnas_compress as bc  # pylint: disable=import-outside-toplevel
  overrides = {"model": args.model}
  for item in args.set:
    field, sep, value = item.partition("=")
    if not sep:
      p.error(f"--set needs FIELD=VALUE, got {item!r}")
    overrides[field.strip()] = parse_value(value.strip())
  try:
    data = nas_jax.data.load_dataset(args.dataset)
    report = bc.compress(data, overrides, log=lambda line: print(line, flush=True))
  except (ValueError, OSError) as e:  # bad settings, a dataset that cannot be read
    p.exit(2, f"{p.prog}: error: {e}\n")
  out = pathlib.Path(args.workdir or f"runs/compress-{args.model}")
  out.mkdir(parents=True, exist_ok=True)
  (out / "report.json").write_text(json.dumps(report, indent=1))
  bc.plot_report(report, out / "sparsity.png")
  print(f"{args.model} on {args.dataset}: {100 * report['pruned_fraction']:.1f}% of weights pruned, "
        f"test acc {report['dense_test_acc']:.2f}% dense -> {report['finetuned_test_acc']:.2f}% pruned and "
        f"fine-tuned; {out}/report.json, {out}/sparsity.png")
  return report


if __name__ == "__main__":
  main()
