"""Serve lesion_app: ``monailabel start_server --app <this app>`` with paths that may contain spaces.

MONAI Label's ``monailabel`` launcher passes its arguments on unquoted (``$*``), so ``--studies "/data/derm
photos"`` reaches its parser as two words and the server refuses to start. This program runs the same server in
the same way (``python -m monailabel.main start_server``) with the arguments as given, and finds the app by
itself.

Example::

    lesion-serve --studies "/data/derm photos" --conf models unet --conf threads 2
    lesion-serve --studies http://127.0.0.1:8042/dicom-web

Ctrl-C, SIGTERM and SIGHUP stop the server and the training and scoring processes it started.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import lesion_app
from apps.process_control import exit_now, stop_children, stoppable
from lesion_app.server.lifetime import stop_background_work

APP_DIR = Path(lesion_app.__file__).resolve().parent


def monailabel_argv(args: argparse.Namespace) -> list[str]:
    """The argument list of ``monailabel start_server`` for these options, one element per argument."""
    argv = ["monailabel", "start_server", "--app", str(APP_DIR), "--studies", args.studies]
    argv += ["--host", args.host, "--port", str(args.port)]
    for key, value in args.conf:
        argv += ["--conf", key, value]
    return argv


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lesion-serve", description=__doc__.splitlines()[0])
    p.add_argument("--studies", required=True, help="a folder of photographs, or a DICOMweb URL")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--conf", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"), help="a setting (docs/server.md)"
    )
    args = p.parse_args(argv)
    is_url = args.studies.startswith(("http://", "https://"))
    if not is_url and not Path(args.studies).is_dir():
        p.error(f"--studies {args.studies!r} is not a folder (or a DICOMweb URL)")
    return args


@stoppable
def main(argv: Sequence[str] | None = None) -> int:
    """Parses the options, runs MONAI Label's server in this process until Ctrl-C, SIGTERM or SIGHUP, then cancels
    the queued trainings and scorings, stops the running ones and exits with 0 at once."""
    args = parse_args(argv)
    import uvicorn.server
    from monailabel.main import Main

    # uvicorn shuts down gracefully on the signals it handles, then re-raises them (Stopped, which it swallows
    # as KeyboardInterrupt); SIGHUP would otherwise break into its event loop
    uvicorn.server.HANDLED_SIGNALS = (*uvicorn.server.HANDLED_SIGNALS, signal.SIGHUP)
    sys.argv = monailabel_argv(args)
    try:
        Main().run()
    finally:
        stop_background_work()  # the queued scorings and trainings must not start when the running ones stop
        stop_children()
    exit_now(0)  # everything is stopped and written: no slow teardown of the server's heap
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
