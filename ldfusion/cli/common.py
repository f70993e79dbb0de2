"""What every command shares: logging set-up and turning user errors into one line."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from ldfusion.backends import PRECISIONS
from ldfusion.errors import DataError, LDFusionError, first_line
from ldfusion.paths import home_expanded
from ldfusion.redact import MaskCredentials, mask_credentials
from ldfusion.signals import Terminated, stopped_line

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_TERMINATED = 143  # 128 + SIGTERM


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True)
    for handler in logging.getLogger().handlers:  # camera URLs may carry passwords
        handler.addFilter(MaskCredentials())
    _quiet_opencv(verbose)


def _quiet_opencv(verbose: int) -> None:
    """OpenCV prints its own warnings to stderr (a truncated PNG: "[ WARN:0@1.1] global
    grfmt_png.cpp:793 ... buffer is incomplete") before the command's one-line error about the
    same file, even with -q. They are kept for -v."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_WARNING if verbose else cv2.utils.logging.LOG_LEVEL_ERROR)


def check_inputs_exist(inputs: dict[str, Path | None]) -> None:
    """Each input path (by its option: ``{"--ir": path}``) that is not there is named as missing:
    the image reader's own words, "not a folder: nope", sent users looking for what was wrong
    with a folder that is not there. One that exists but is of the wrong kind is left to the
    reader, which names what it found."""
    for option, path in inputs.items():
        if path is not None and not path.exists():
            raise DataError(f"{option} {path}: {'a link to nothing' if path.is_symlink() else 'no such file or folder'}")


def path_argument(text: str) -> Path:
    """argparse type of every path option: an empty one (``--out ""``, an unset shell variable)
    would quietly mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty")
    return Path(home_expanded(text))


def add_logging_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors, no progress bar (the result is still printed)")


def add_cpu_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--int8 / --no-int8`` (unset: ldfusion decides, ``ldfusion.backends.auto_int8``) and
    ``--precision`` (unset: the config's, else auto; ``ldfusion.backends.float_precision``)."""
    parser.add_argument(
        "--int8", action=argparse.BooleanOptionalAction, default=None,
        help="run the network's OpenVINO int8 export on the CPU (shipped with ldfusion for the bundled default, "
        "or made by `ldfusion export --int8`). Default: int8 when weights are auto on the CPU and their int8 "
        "export ships, as the bundled default's does (it meets the quality bar against LD-Lite); float otherwise",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None,
        help="what OpenVINO's float layers compute in on the CPU: f32 (agrees with PyTorch), bf16 (on CPUs that "
        "compute it natively: LD-Lite 1.7x faster at 53 dB agreement with PyTorch), auto (f32 for float networks, "
        "bf16 for an int8 network's float layers where the CPU has it natively). Default: auto",
    )


def error_line(prog: str, message: str) -> None:
    print(f"{prog}: error: {mask_credentials(message)}", file=sys.stderr)


def one_line_errors(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorate a command's ``main``: user errors print one line and exit 2, Ctrl-C exits 130,
    SIGTERM 143."""

    def decorate(fn: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs) -> int:
            try:
                return fn(*args, **kwargs)
            except LDFusionError as exc:
                error_line(prog, str(exc))
                return EXIT_USER_ERROR
            except OSError as exc:  # a missing file, no permission, a full disk ...
                where = f": {exc.filename}" if exc.filename else ""
                error_line(prog, f"{exc.strerror or first_line(exc)}{where}")
                return EXIT_USER_ERROR
            except MemoryError as exc:  # sizes a user asked for (100000x100000 frames) that no machine holds
                error_line(prog, f"not enough memory: {first_line(exc) or 'the sizes asked for are too large'}")
                return EXIT_USER_ERROR
            except Terminated:  # SIGTERM, raised as Ctrl-C is (ldfusion.signals.sigterm_as_interrupt)
                stopped_line(prog, "terminated")
                return EXIT_TERMINATED
            except KeyboardInterrupt:
                stopped_line(prog, "interrupted")
                return EXIT_INTERRUPTED

        return wrapper

    return decorate
