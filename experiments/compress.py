"""Compress a plain CNN with BayesNAS's prior on its filters and neurons.

    python experiments/compress.py --model lenet5 --workdir runs/compress-lenet5
    python experiments/compress.py --model lenet5 --set lam=0.15 --set outer_iterations=30
    python experiments/compress.py --model vgg_small --dataset imagefolder:/data/cifar10

The same job runs as ``python experiments/run.py --strategy bayesnas-compress
--model lenet5``.

Writes ``report.json`` (accuracy before and after, weights kept per layer,
the fraction pruned, the curve over the outer iterations; written atomically)
and ``sparsity.png`` to the workdir. Settings: ``nas_jax.oneshot.bayesnas_compress``
``default_config()``, overridden by ``--set FIELD=VALUE``. Bad input: one line
on stderr, exit code 2.

Resuming: the run checkpoints into ``WORKDIR/checkpoints`` after the dense
training, after every outer iteration, after the fine-tuning, and every minute
inside the dense training and the fine-tuning. Interrupted (Ctrl-C, SIGTERM:
exit code 130; or killed), the same command resumes from the last checkpoint
and ends with the report an uninterrupted run writes, without recomputing what
was saved; rerun after the end, it prints the report again at once. Other
settings on the same workdir are refused (one line, exit 2, nothing changed)::

    python experiments/compress.py --model lenet5 --workdir runs/c   # Ctrl-C at outer iteration 12
    python experiments/compress.py --model lenet5 --workdir runs/c   # resumes at outer iteration 13
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import threading

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments._cli import OneLineErrorParser  # noqa: E402


def _terminate(signum, frame):  # SIGTERM: stop like Ctrl-C (the last checkpoint stays)
  del signum, frame
  raise KeyboardInterrupt


def main(argv=None, prog: str | None = None) -> dict:
  from nas_jax.oneshot.bayesnas_compress import MODELS  # pylint: disable=import-outside-toplevel
  p = OneLineErrorParser(prog=prog, description="BayesNAS compression of a plain CNN (LeNet-5 on digits, a small VGG)")
  p.add_argument("--model", default="lenet5", choices=sorted(MODELS), help="network to compress")
  p.add_argument("--dataset", default="digits", help="image dataset (nas_jax.data.load_dataset)")
  p.add_argument("--workdir", default=None,
                 help="output folder, checkpoints in WORKDIR/checkpoints (default runs/compress-<model>)")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a setting")
  args = p.parse_args(argv)
  import nas_jax.data  # pylint: disable=import-outside-toplevel
  from nas_jax.experiment import parse_value  # pylint: disable=import-outside-toplevel
  from nas_jax.oneshot import bayesnas_compress as bc  # pylint: disable=import-outside-toplevel
  from nas_jax.checkpoint import write_json  # pylint: disable=import-outside-toplevel
  overrides = {"model": args.model}
  for item in args.set:
    field, sep, value = item.partition("=")
    if not sep:
      p.error(f"--set needs FIELD=VALUE, got {item!r}")
    overrides[field.strip()] = parse_value(value.strip())
  out = pathlib.Path(args.workdir or f"runs/compress-{args.model}")
  main_thread = threading.current_thread() is threading.main_thread()
  old_handler = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
  try:
    if out.exists() and not out.is_dir():
      raise ValueError(f"--workdir {out} is a file; give a directory")
    data = nas_jax.data.load_dataset(args.dataset)
    report = bc.compress(data, overrides, log=lambda line: print(line, flush=True),
                         checkpoint_dir=out / "checkpoints")
    path = out / "report.json"
    try:  # a finished run rerun: its report.json already holds this report, and nothing is rewritten
      saved = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: written anew
      saved = None
    fresh = saved != json.loads(json.dumps(report))
    if fresh:
      write_json(path, report)
    if fresh or not (out / "sparsity.png").is_file():
      bc.plot_report(report, out / "sparsity.tmp.png")
      os.replace(out / "sparsity.tmp.png", out / "sparsity.png")
  except (ValueError, OSError) as e:  # bad settings, a dataset that cannot be read, another run's workdir
    p.exit(2, f"{p.prog}: error: {e}\n")
  except KeyboardInterrupt:
    p.exit(130, f"{p.prog}: interrupted; rerun the same command to resume\n")
  finally:
    if main_thread:
      signal.signal(signal.SIGTERM, old_handler)
  print(f"{args.model} on {args.dataset}: {100 * report['pruned_fraction']:.1f}% of weights pruned, "
        f"test acc {report['dense_test_acc']:.2f}% dense -> {report['finetuned_test_acc']:.2f}% pruned and "
        f"fine-tuned; {out}/report.json, {out}/sparsity.png")
  return report


if __name__ == "__main__":
  main()
