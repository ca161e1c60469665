"""Command line: ``python -m tracedistill demo`` runs the embedded offline default;
``python -m tracedistill doctor openrouter --model ...`` checks a provider with a few tiny
requests under a hard cost cap.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any


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
    _add_doctor(sub)
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return _doctor(args)
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


def _add_doctor(sub: Any) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check a provider with a few tiny requests under a hard cost cap (your own key)",
        description="Sends a handful of tiny requests (the cap is printed first) and reports "
        "the rate-limit headers, the limiter's reading of them, where reasoning arrives, "
        "whether cost is reported, finish reasons, and whether streaming works.",
    )
    doctor.add_argument("provider", choices=("openrouter", "anthropic", "openai"))
    doctor.add_argument("--model", required=True, help="the model id at that provider")
    doctor.add_argument("--base-url", help="the API root (default: the provider's)")
    doctor.add_argument(
        "--api-key-env",
        help="environment variable holding the key (default: OPENROUTER_API_KEY, "
        "ANTHROPIC_API_KEY or OPENAI_API_KEY)",
    )
    doctor.add_argument(
        "--max-usd", type=float, default=0.01, help="hard cost cap in USD (default 0.01)"
    )
    doctor.add_argument("--price-in", type=float, help="USD per million input tokens")
    doctor.add_argument("--price-out", type=float, help="USD per million output tokens")
    doctor.add_argument(
        "--max-tokens", type=int, default=256, help="max_tokens of the main checks (default 256)"
    )


def _doctor(args: argparse.Namespace) -> int:
    import anyio

    from tracedistill.errors import ConfigurationError
    from tracedistill.teachers.doctor import DoctorConfig, run_doctor

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    config = DoctorConfig(
        provider=args.provider,
        model=args.model,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        max_usd=args.max_usd,
        price_in=args.price_in,
        price_out=args.price_out,
        max_tokens=args.max_tokens,
    )
    try:
        return anyio.run(run_doctor, config)
    except ConfigurationError as exc:
        print(f"doctor: {exc}", file=sys.stderr)
        return 2


def _quiet_third_parties() -> None:
    """Keep the demo's output to its own story: no weight-loading bars or deprecation notes."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the `local` extra is not installed; the demo will say so
        return
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    sys.exit(main())
