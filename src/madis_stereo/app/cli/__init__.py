"""``madis-stereo`` command line: argparse subcommands, each a thin module that calls the library.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets ``func`` (a
callable taking the parsed namespace and returning an exit code).

Exit codes: 0 success; 2 bad input (the project's own errors: ConfigError, InputError, CheckpointError,
DataError, TrainingError, and OS errors such as a missing file), printed as one line; 3 out of memory (with
what to change); 75 training stopped by a signal after saving a checkpoint (``train`` says how to resume);
130 interrupted. Anything else is a bug and keeps its traceback; ``--debug`` shows tracebacks for all.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

# Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS = ("predict", "rectify", "app", "train", "evaluate", "analyze", "export", "demo", "info", "models",
               "data")

EXIT_ERROR = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_PREEMPTED = 75  # EX_TEMPFAIL of sysexits.h: stopped on request, resume to continue

# What to change when a command runs out of memory.
MEMORY_HINTS = {
    "train": "lower optim.batch_size (raise optim.accum_steps to keep the effective batch), a smaller "
             "model.crop, or optim.amp=bf16",
}
DEFAULT_MEMORY_HINT = "use --tile-batch 1, --bf16, or a smaller --crop (tile size, multiples of 32)"

log = logging.getLogger("madis_stereo")


def _version() -> str:
    """``madis-stereo X (Python Y)``, X from the installed distribution's metadata."""
    import platform
    from importlib import metadata

    try:
        version = metadata.version("madis-stereo")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        version = "(not installed)"
    return f"madis-stereo {version} (Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="madis-stereo",
        description="MaDis-Stereo / CroCo-Stereo: train, run and evaluate Transformer stereo matching.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"madis_stereo.app.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"madis_stereo.app.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that report bad input (the CLI prints them as one line)."""
    from madis_stereo.errors import MadisStereoError

    return MadisStereoError, OSError


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA/MPS out-of-memory errors, Python's MemoryError and the CPU allocator's RuntimeError."""
    if isinstance(err, MemoryError):
        return True
    oom = getattr(sys.modules.get("torch"), "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    return isinstance(err, RuntimeError) and ("can't allocate memory" in str(err) or "out of memory" in str(err))


def main(argv: Sequence[str] | None = None) -> int:
    from madis_stereo.errors import first_line

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    intermixed = getattr(args, "intermixed", None)  # a positional list that may continue after options
    if extra and intermixed and not any(item.startswith("-") for item in extra):
        setattr(args, intermixed, [*getattr(args, intermixed), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args.debug, args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("madis-stereo: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        if is_out_of_memory(err):
            hint = MEMORY_HINTS.get(args.command, DEFAULT_MEMORY_HINT)
            print(f"madis-stereo {args.command}: error: out of memory ({first_line(err)[:200]}); {hint}",
                  file=sys.stderr)
            return EXIT_OUT_OF_MEMORY
        if not isinstance(err, user_errors()):
            raise  # a bug: its traceback is what a report needs
        print(f"madis-stereo {args.command}: error: {first_line(err)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
