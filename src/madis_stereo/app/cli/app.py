"""``madis-stereo app``: start the local Gradio web app (the ``app`` extra)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("madis_stereo")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "app", help="start a local web app to try a model (needs: pip install 'madis-stereo[app]')",
        description="Start a local Gradio web app: upload a pair or take the example, see disparity, certainty "
        "and a 3-D point cloud, download PFM, PNG16 and PLY.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--checkpoint", default="bundled",
                   help="initial checkpoint: 'bundled', a local path, or a registered name (changeable in the app)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from madis_stereo.app.web import build_app

    app = build_app(args.checkpoint)
    log.info("madis-stereo app on http://%s:%d (Ctrl+C stops it)", args.host, args.port)
    app.queue().launch(server_name=args.host, server_port=args.port, share=False, show_error=True, quiet=True)
    return 0
