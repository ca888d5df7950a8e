"""``madis-stereo train CONFIG.yaml [key=value ...] [--out RUN_DIR] [--resume RUN_DIR]``.

Single process, or one rank of ``torchrun --nproc-per-node N -m madis_stereo train ...``. With
``--resume RUN_DIR`` and no CONFIG, the run's own ``config.yaml`` is used (overrides still apply).
SIGTERM, SIGUSR1 or Ctrl-C: the step in flight finishes, a checkpoint is written, the resume command is
printed and the exit status is 75.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register", "run"]

EPILOG = """examples:
  madis-stereo train configs/tiny_synthetic.yaml --out runs/tiny
  madis-stereo train configs/madis_vitb_basedec.yaml model.init=CroCo_V2_ViTBase_BaseDecoder optim.amp=bf16
  madis-stereo train --resume runs/tiny
  torchrun --nproc-per-node 4 -m madis_stereo train configs/madis_vitb_basedec.yaml model.init=...

SIGTERM, SIGUSR1 (e.g. sbatch --signal=USR1@120) or Ctrl-C: the current step finishes, a checkpoint is
written, the --resume command is printed and the exit status is 75. A second Ctrl-C stops at once.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train MaDis-Stereo (or the CroCo-Stereo baseline) from a YAML recipe",
        description="Train from a YAML recipe with key=value overrides (e.g. optim.lr=1e-5 run.seed=3).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("items", nargs="*", metavar="CONFIG.yaml [key=value ...]",
                        help="the recipe, then dotted overrides parsed as YAML values")
    parser.add_argument("--out", metavar="RUN_DIR", help="run folder (default: run.out_dir of the config)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its train_state.pt")
    parser.set_defaults(func=run, intermixed="items")  # CONFIG --out DIR key=value works too


def _split(items: list[str]) -> tuple[str | None, list[str]]:
    """The config path (the first item that is not key=value) and the overrides."""
    config = None
    overrides = []
    for item in items:
        if config is None and "=" not in item:
            config = item
        else:
            overrides.append(item)
    return config, overrides


def run(args: argparse.Namespace) -> int:
    from madis_stereo.app.cli import EXIT_PREEMPTED
    from madis_stereo.errors import ConfigError
    from madis_stereo.training.config import load_train_config
    from madis_stereo.training.trainer import CONFIG_NAME, TrainingInterrupted, train

    config, overrides = _split(args.items)
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise ConfigError("--resume RUN_DIR already names the run folder; drop --out")
    if config is None:
        if not args.resume:
            raise ConfigError("missing CONFIG.yaml (or --resume RUN_DIR)")
        config = str(Path(args.resume) / CONFIG_NAME)
    cfg = load_train_config(config, overrides)
    try:
        result = train(cfg, out_dir=args.resume or args.out, resume=bool(args.resume))
    except TrainingInterrupted as stop:
        print(f"madis-stereo train: {stop}", file=sys.stderr)
        return EXIT_PREEMPTED
    if result.checkpoint is not None and result.steps_trained:
        print(f"trained {result.steps_trained} steps (now at step {result.step}); last checkpoint: {result.checkpoint}")
    elif result.checkpoint is not None:
        print(f"nothing trained: the run already finished at step {result.step}; last checkpoint: {result.checkpoint}")
    return 0
