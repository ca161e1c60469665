"""Command line: ``python -m tracedistill demo`` runs the embedded offline default."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = argparse.ArgumentParser(prog="python -m tracedistill", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline offline on synthetic problems with a tiny local student",
    )
    demo.add_argument("--dir", default="runs/demo", help="run directory (default: runs/demo)")
    demo.add_argument("--size", choices=("full", "ci"), default="full")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    report = sub.add_parser("version", help="print the installed version")
    del report
    args = parser.parse_args(argv)
    if args.command == "version":
        from tracedistill import __version__

        print(__version__)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import anyio

    from tracedistill.demo import run_demo

    started = time.monotonic()
    results = anyio.run(
        lambda: run_demo(args.dir, size=args.size, progress=False if args.no_progress else None)
    )
    print(results.to_markdown())
    print(
        f"\nDone in {time.monotonic() - started:.0f} s. Everything is in {args.dir}/: "
        f"report.md, report.html, experiment.json, experiment.log, traces/, runs/, evaluations/."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
