"""``madis-stereo`` command line: argparse subcommands, each a thin module that calls the library.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets ``func`` (a
callable taking the parsed namespace and returning an exit code). Library exceptions for bad input become
one-line messages on stderr and exit code 2; ``--debug`` shows the traceback instead.
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
    except (ValueError, OSError, RuntimeError) as err:
        if args.debug:
            raise
        message = first_line(err)
        print(f"madis-stereo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
