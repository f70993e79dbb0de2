"""Receiving fused frames from ``ldfusion run``'s ZeroMQ publisher.

A detector in another process reads the stream like this::

    from pipeline.subscriber import Subscriber

    with Subscriber("tcp://127.0.0.1:5555") as frames:
        for header, image in frames:          # image: (H, W, 3) RGB uint8
            boxes = detector(image)
            print(header["stream"], header["seq"], header["t_fused"])

``ldfusion subscribe`` does the same and prints what arrives.

A malformed message (wrong part count, a header that is not a JSON object, a bad shape or
dtype, a pixel buffer of the wrong size) is a ``DataError`` naming the message and what
is wrong with it. With ``skip_malformed=True`` (``--skip-malformed``) it is logged, counted
in ``Subscriber.malformed`` and skipped, so one bad sender does not end the caller's loop.

Convention: header text is the sender's, not ours. ``Subscriber`` hands it over as received;
``ldfusion subscribe`` prints it with non-printable characters escaped (``\\x1b``, ``\\n``), so
a sender cannot clear the terminal or forge lines of output.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Iterator

import numpy as np
import zmq

from ldfusion.cli.common import EXIT_INTERRUPTED, EXIT_TERMINATED, add_logging_arguments, one_line_errors, setup_logging
from ldfusion.errors import ConfigError, DataError
from ldfusion.signals import Terminated, sigterm_as_interrupt
from pipeline.config import check_tcp_port

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
_HEADER_KEYS = ("stream", "seq", "shape", "dtype")
_TIME_KEYS = ("t_fused", "t_ir", "t_vi", "captured_unix", "published_unix")  # optional; finite numbers where given, never null
DTYPES = ("uint8", "uint16", "float32")  # what a frame may hold; the zmq sink sends uint8
MAX_SIDE, MAX_CHANNELS = 65536, 4
_LONGEST_POLL_MS = 3_600_000


def decode_message(parts: list[bytes]) -> tuple[dict, np.ndarray]:
    """[topic, JSON header, pixels] -> (header, frame array). A malformed message is a DataError
    that names the message (its topic, and its seq when the header has one) and the problem."""
    topic = bytes(parts[0]).decode(errors="replace") if parts else ""
    if len(parts) != 3:
        raise DataError(f"message on {topic!r}: expected 3 parts (topic, header, pixels); got {len(parts)}")
    try:
        header = json.loads(parts[1])
    except (ValueError, UnicodeDecodeError) as exc:  # ValueError: JSONDecodeError, and an integer of over 4300 digits
        raise DataError(f"message on {topic!r}: header is not JSON: {exc}") from None
    except RecursionError:
        raise DataError(f"message on {topic!r}: header JSON nests too deeply") from None
    if not isinstance(header, dict):
        raise DataError(f"message on {topic!r}: header is a JSON {type(header).__name__}, not an object")
    name = f"message on {topic!r}" + (f" seq {header['seq']!r}" if "seq" in header else "")
    missing = [key for key in _HEADER_KEYS if key not in header]
    if missing:
        raise DataError(f"{name}: header lacks {', '.join(missing)}")
    _check_header_types(header, name)
    header["topic"] = topic
    shape, dtype = _frame_shape(header["shape"], name), _frame_dtype(header["dtype"], name)
    if len(parts[2]) != dtype.itemsize * math.prod(shape):
        raise DataError(f"{name}: {len(parts[2])} bytes do not make a {'x'.join(map(str, shape))} {dtype} frame")
    frame = np.frombuffer(parts[2], dtype=dtype).reshape(shape)
    return header, frame


def _check_header_types(header: dict, name: str) -> None:
    """``stream`` text, ``seq`` a whole number, ``pixel_format`` text and the times numbers
    where given: what the caller's code (and ``ldfusion subscribe``'s line) formats. A string,
    NaN or null there crashed the subscriber, even with ``--skip-malformed``."""
    if not isinstance(header["stream"], str):
        raise DataError(f"{name}: stream {header['stream']!r} is not text")
    if not isinstance(header["seq"], int) or isinstance(header["seq"], bool):
        raise DataError(f"{name}: seq {header['seq']!r} is not a whole number")
    if not isinstance(header.get("pixel_format", ""), str):
        raise DataError(f"{name}: pixel_format {header['pixel_format']!r:.40} is not text")
    for key in _TIME_KEYS:
        # A key left out is fine; a null is not: the publisher always sends a number, and
        # ``t {None:.3f}`` or ``time.time() - None`` raised TypeError past --skip-malformed.
        if key in header and not _finite_number(header[key]):
            raise DataError(f"{name}: {key} {header[key]!r:.40} is not a finite number")


def _finite_number(value) -> bool:
    """A number that is a finite float, as the caller's code uses it (10**400 overflowed there)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _frame_shape(shape, name: str) -> tuple[int, ...]:
    """(H, W) or (H, W, C) with sides in 1..MAX_SIDE and 1..MAX_CHANNELS channels."""
    valid = (
        isinstance(shape, list)
        and len(shape) in (2, 3)
        and all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
        and all(1 <= n <= MAX_SIDE for n in shape[:2])
        and (len(shape) == 2 or 1 <= shape[2] <= MAX_CHANNELS)
    )
    if not valid:
        raise DataError(f"{name}: shape {shape!r} is not [height, width] or [height, width, channels] of sane sizes")
    return tuple(shape)


def _frame_dtype(dtype, name: str) -> np.dtype:
    if dtype not in DTYPES:
        raise DataError(f"{name}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return np.dtype(dtype)


def _poll_ms(deadline: float | None) -> int | None:
    """Milliseconds to poll until ``deadline`` (None: forever), at most an hour: ZeroMQ takes a
    C long, which a timeout such as 1e308 s overflows."""
    if deadline is None:
        return None
    return math.ceil(min(_LONGEST_POLL_MS, max(0.0, (deadline - time.monotonic()) * 1000)))  # ceil: no early wake-up to spin on


def _check_reachable(endpoint: str) -> None:
    """inproc:// reaches only sockets of the same ZeroMQ context, and a Subscriber makes its own:
    nothing, not even this process, could publish to it, so it waited for --timeout or forever."""
    if endpoint.startswith("inproc://"):
        raise ConfigError(f"ZeroMQ endpoint {endpoint}: inproc:// reaches no publisher (the subscriber has its own context); "
                          "use the tcp:// or ipc:// endpoint the publisher binds")


class Subscriber:
    """Subscribes to ``<topic>`` (every stream) or ``<topic>/<stream id>`` (one stream).

    Iterating yields (header, frame) until ``timeout_s`` passes without a frame (forever
    when None). ``receive`` gets one message. A malformed message raises ``DataError``;
    with ``skip_malformed`` it is logged, counted in ``malformed`` and skipped instead.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        topic: str = "fused",
        timeout_s: float | None = None,
        hwm: int = 100,
        skip_malformed: bool = False,
    ):
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.skip_malformed = skip_malformed
        self.malformed = 0  # messages skipped as malformed
        check_tcp_port(endpoint)
        _check_reachable(endpoint)
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.connect(endpoint)  # connecting first is fine: ZeroMQ retries until the publisher binds
        except zmq.ZMQError as exc:
            self.close()
            raise DataError(f"cannot connect to endpoint {endpoint!r} ({exc}); expected e.g. {DEFAULT_ENDPOINT}") from None
        self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._topic = topic

    def _wanted(self, message_topic: str) -> bool:
        """ZeroMQ matches topics by prefix: ``fused/cam0`` also received ``fused/cam01``. A
        topic names whole parts: itself, or what lies below it after a ``/``."""
        return not self._topic or message_topic == self._topic or message_topic.startswith(self._topic.rstrip("/") + "/")

    def receive(self, timeout_s: float | None = None) -> tuple[dict, np.ndarray] | None:
        """The next well-formed (header, frame), or None when ``timeout_s`` passes first."""
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, timeout_s)
        while True:
            if not self._socket.poll(_poll_ms(deadline), zmq.POLLIN):
                if deadline is None or not time.monotonic() < deadline:  # `not <`: a NaN timeout ends too
                    return None
                continue  # a long timeout waits in several polls
            parts = self._socket.recv_multipart()
            if not self._wanted(bytes(parts[0]).decode(errors="replace")):
                continue
            try:
                return decode_message(parts)
            except DataError as exc:
                if not self.skip_malformed:
                    raise
                self.malformed += 1
                log.warning("skipped a malformed message (%d so far): %s", self.malformed, exc)

    def __iter__(self) -> Iterator[tuple[dict, np.ndarray]]:
        while (message := self.receive(self.timeout_s)) is not None:
            yield message

    def close(self) -> None:
        self._socket.close()
        self._context.term()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldfusion subscribe",
        description="Receive fused frames published by `ldfusion run` (a zmq sink) and print one line "
        "per frame (stream, seq, timestamps, size, latency) and the rate once a second. "
        "An example of what a detector does with the stream.",
    )
    parser.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help=f"publisher address (default: {DEFAULT_ENDPOINT})")
    parser.add_argument("--topic", default="fused",
                        help="fused (every stream) or fused/<stream id> for one stream; the sink's topic: where its config "
                             "sets one (default: fused)")
    parser.add_argument("--count", type=int, help="exit after this many frames (with --timeout: an error if the stream pauses that long first)")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds without a frame (default: wait forever)")
    parser.add_argument("--summary-only", action="store_true", help="no line per frame, only the rate")
    parser.add_argument(
        "--skip-malformed", action="store_true",
        help="log, count and skip malformed messages instead of stopping at the first (the count is printed at the end)",
    )
    add_logging_arguments(parser)
    return parser


@one_line_errors("ldfusion subscribe")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.count is not None and args.count < 1:
        raise DataError(f"--count must be at least 1; got {args.count}")
    received, started, signalled_exit = 0, time.monotonic(), 0
    last_frame_at = started
    gaps = SeqGaps()
    window_start, window_count = None, 0
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise DataError(f"--timeout must be a positive number of seconds; got {args.timeout}")
    with Subscriber(args.endpoint, args.topic, args.timeout, skip_malformed=args.skip_malformed) as subscriber, sigterm_as_interrupt():
        try:
            for header, frame in subscriber:
                received += 1
                last_frame_at = time.monotonic()
                gaps.note(header["stream"], header["seq"])
                window_count += 1
                window_start = window_start or time.monotonic()
                if not args.summary_only:
                    print(_frame_line(header, frame), flush=True)
                now = time.monotonic()
                if now - window_start >= 1.0:
                    print(f"rate {window_count / (now - window_start):.1f} fps", flush=True)
                    window_start, window_count = now, 0
                if args.count is not None and received >= args.count:
                    break
        except KeyboardInterrupt as stop:  # the usual way to end an open-ended subscription (SIGTERM too)
            signalled_exit = EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
        malformed = subscriber.malformed
    elapsed = last_frame_at - started  # not the wait for a frame that never came (--timeout)
    skipped = f"; skipped {malformed} malformed message(s)" if args.skip_malformed else ""
    missed = (f"; missed {gaps.missed} between the frames received (gaps in seq: this subscriber fell more than "
              "the sink's hwm behind, or a live run dropped them)") if gaps.missed else ""
    print(f"received {received} frame(s) in {elapsed:.1f} s{missed}{skipped}")
    if signalled_exit:
        return signalled_exit
    if received == 0:
        raise DataError(f"no frames from {args.endpoint} within {args.timeout} s (subscribed to topic {args.topic!r}: "
                        f"a sink that sets its own topic publishes under '<topic>/<stream>')")
    if args.count is not None and received < args.count:
        raise DataError(f"only {received} of {args.count} frame(s) arrived before {args.timeout} s passed without one")
    return 0


class SeqGaps:
    """Frames missed, from the gaps in each stream's ``seq`` (consecutive from 0 as published).
    The publisher cannot count them: ZeroMQ drops a slow subscriber's frames on its own side."""

    def __init__(self) -> None:
        self.missed = 0
        self._last: dict[str, int] = {}

    def note(self, stream: str, seq: int) -> None:
        last = self._last.get(stream)
        if last is not None and seq > last + 1:
            self.missed += seq - last - 1
        if last is None or seq > last:
            self._last[stream] = seq


def _frame_line(header: dict, frame: np.ndarray) -> str:
    """One frame as a line of text; ``decode_message`` checked the types of what it formats."""
    latency_ms = (time.time() - header["captured_unix"]) * 1000.0 if "captured_unix" in header else float("nan")
    shape = "x".join(str(n) for n in frame.shape)
    return (
        f"{_printable(header['stream'])} seq {header['seq']} t {header.get('t_fused', float('nan')):.3f} s "
        f"(ir {header.get('t_ir', float('nan')):.3f}, vi {header.get('t_vi', float('nan')):.3f}) "
        f"{shape} {_printable(header.get('pixel_format', '?'))} latency {latency_ms:.0f} ms"
    )


def _printable(text: str) -> str:
    """``text`` with each non-printable character (and the backslash, so an escape cannot be
    forged) written as Python escapes it: a sender's ANSI escapes and newlines printed raw
    could clear the terminal or fake lines of output, and a lone surrogate made print() raise.
    A stream id that a config allows comes out unchanged."""
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in text)
