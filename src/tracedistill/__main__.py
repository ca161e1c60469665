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
    # The demo narrates its stages (INFO of tracedistill); other libraries only warn.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("tracedistill").setLevel(logging.INFO)
    _quiet_third_parties()
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


def _quiet_third_parties() -> None:
    """Keep the demo's output to its own story: no weight-loading bars or deprecation notes."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    warnings.filterwarnings("ignore", message=r".*tie_word_embeddings.*", category=UserWarning)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the `local` extra is not installed; the demo will say so
        return
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    sys.exit(main())
