"""``ldfusion COMMAND ...``: dispatches to each command's own ``main(argv)``.

``python -m ldfusion_cli.main COMMAND ...`` runs it from a checkout without installing.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Iterator

from ldfusion import __version__
from ldfusion.errors import first_line
from ldfusion.redact import mask_credentials
from ldfusion.signals import Terminated, sigterm_as_interrupt, signals_handled, stopped_line

# Imported only when chosen, so `ldfusion fuse` never loads the pipeline or the trainer.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pipeline.demo", "fuse a demo clip (M3SVD if present, else a rendered one) into MP4s"),
    "fuse": ("ldfusion.cli.fuse", "fuse infrared/visible image pairs from two folders into PNGs"),
    "run": ("pipeline.cli", "run the streaming pipeline from a YAML config (files or live cameras)"),
    "subscribe": ("pipeline.subscriber", "receive fused frames published over ZeroMQ by `run`"),
    "train": ("ldfusion.training.cli", "train a fusion network with the language-driven loss (and --teacher)"),
    "calibrate": ("calibration.cli", "estimate, store and verify IR-to-visible registration"),
    "eval": ("ldfusion.cli.evaluate", "score fused images with the standard fusion metrics"),
    "bench": ("ldfusion_cli.bench", "measure model-only and pipeline throughput and latency"),
    "export": ("ldfusion.cli.export", "export weights as ONNX or OpenVINO IR (optionally int8) for fast CPU inference"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: ldfusion COMMAND [options]   (ldfusion {__version__})", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "`ldfusion COMMAND --help` explains each command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ldfusion: error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        with _signals_recorded() as signals:
            module = importlib.import_module(COMMANDS[name][0])  # torch takes seconds: Ctrl-C often lands here
        if signals:
            stopped_line(f"ldfusion {name}", "interrupted" if signals[0] == signal.SIGINT else "terminated")
            return 130 if signals[0] == signal.SIGINT else 143
        # SIGTERM's default killed fuse, eval, calibrate and train on the spot, with no word:
        # it now goes through each command's Ctrl-C handling, which exits 143 for it
        # (ldfusion.cli.common.one_line_errors; run and subscribe set their own handlers).
        with sigterm_as_interrupt():
            return int(module.main(rest) or 0)
    except KeyboardInterrupt as interrupt:
        word, code = ("terminated", 143) if isinstance(interrupt, Terminated) else ("interrupted", 130)
        stopped_line(f"ldfusion {name}", word)
        return code
    except Exception as exc:  # noqa: BLE001 (last resort: each command turns the errors it knows into one line itself)
        if os.environ.get("LDFUSION_DEBUG"):
            raise
        message = mask_credentials(first_line(exc))  # a camera URL in the message may hold a password
        print(f"ldfusion {name}: error: {type(exc).__name__}: {message} (LDFUSION_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _signals_recorded() -> Iterator[list[int]]:
    """Within: SIGINT and SIGTERM are recorded, not raised. A KeyboardInterrupt raised while a
    library is imported can land in its own ``except:`` around an optional import and be lost:
    a Ctrl-C one second into `ldfusion run` let it fuse every frame and exit 0."""
    received: list[int] = []
    with signals_handled(lambda signum, _frame: received.append(signum)):
        yield received


if __name__ == "__main__":
    sys.exit(main())
