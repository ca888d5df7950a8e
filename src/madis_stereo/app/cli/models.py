"""``madis-stereo models`` (the registered checkpoints, cached or not) and ``madis-stereo download NAME...``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports the library only when a command runs
    from madis_stereo.model.registry import RegisteredModel

CACHE_HELP = ("cache: $MADIS_STEREO_HOME (default $XDG_CACHE_HOME/madis-stereo, else ~/.cache/madis-stereo); "
              "MADIS_STEREO_OFFLINE=1 never downloads; MADIS_STEREO_MIRROR replaces the official host")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the registered checkpoints (official CroCo / CroCo-Stereo)",
                              description="The checkpoints known by name, what each is, and whether it is "
                              "in the cache. Any --checkpoint accepts these names. " + CACHE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON (with URLs, training data and licences)")
    p.set_defaults(func=run_models)
    d = subparsers.add_parser("download", help="download registered checkpoints (or URLs) into the cache",
                              description="Fetch checkpoints ahead of time: a progress bar on a terminal, resume "
                              "after a dropped connection, and a size/checksum and architecture check before "
                              "the file enters the cache. " + CACHE_HELP)
    d.add_argument("names", nargs="+", metavar="NAME", help="registered names (see 'madis-stereo models') or URLs")
    d.set_defaults(func=run_download)


def _row(entry: RegisteredModel) -> dict:
    from madis_stereo.model import registry

    params = registry.parameter_count(entry.preset, entry.kind)
    size = entry.size or params * 4  # fp32 weights
    cached = registry.cached_path(entry)
    return {"name": entry.name, "preset": entry.preset, "kind": entry.kind, "params_M": round(params / 1e6, 1),
            "size_GB": round(size / 1e9, 2), "size_known": entry.size is not None, "cached": cached.is_file(),
            "path": str(cached), "url": entry.url(), "description": entry.description, "data": entry.data,
            "licence": entry.licence, "sha256": entry.sha256}


def run_models(args: argparse.Namespace) -> int:
    from madis_stereo.model import registry
    from madis_stereo.utils.tables import format_table

    rows = [_row(entry) for entry in registry.MODELS.values()]
    if args.json:
        print(json.dumps({"cache": str(registry.cache_dir()), "models": rows}, indent=2))
        return 0
    table = [{"name": r["name"], "architecture": f"{r['preset']} ({r['params_M']:.0f} M)",
              "size": f"{r['size_GB']:.2f} GB" if r["size_known"] else f"~{r['size_GB']:.1f} GB",
              "cached": "yes" if r["cached"] else "no", "what": r["description"]} for r in rows]
    print(format_table(table, ["name", "architecture", "size", "cached", "what"]))
    print(f"\ncache: {registry.cache_dir()}  (~ size: estimated from the parameter count, fp32)")
    print("licence of these weights: " + registry.NAVER_LICENCE + "; training data: madis-stereo models --json")
    print("also: bundled (or default), the package's own model, offline; madis-stereo info bundled describes it")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from madis_stereo.errors import CheckpointError, first_line
    from madis_stereo.model import registry

    failures = []
    for name in args.names:
        progress = False if args.quiet else None  # None: a bar when stderr is a terminal
        try:
            fetch = registry.resolve_checkpoint if registry.is_url(name) else registry.fetch
            path = fetch(name, progress)
        except (CheckpointError, OSError) as err:
            failures.append(f"{name}: {first_line(err)}")
            print(f"madis-stereo download: error: {failures[-1]}", file=sys.stderr)
            continue
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if failures and len(args.names) > 1:
        print(f"madis-stereo download: {len(failures)} of {len(args.names)} failed", file=sys.stderr)
    return 1 if failures else 0
