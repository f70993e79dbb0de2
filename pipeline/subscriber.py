"""Receiving fused frames from ``ldfusion run``'s ZeroMQ publisher.

A detector in another process reads the stream like this::

    from pipeline.subscriber import Subscriber

    with Subscriber("tcp://127.0.0.1:5555") as frames:
        for header, image in frames:          # image: (H, W, 3) RGB uint8
            boxes = detector(image)
            print(header["stream"], header["seq"], header["t_fused"])

``ldfusion subscribe`` does the same and prints what arrives.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator

import numpy as np
import zmq

from ldfusion.cli.common import EXIT_INTERRUPTED, add_logging_arguments, one_line_errors, setup_logging
from ldfusion.errors import DataError

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
_HEADER_KEYS = ("stream", "seq", "shape", "dtype")


def decode_message(parts: list[bytes]) -> tuple[dict, np.ndarray]:
    """[topic, JSON header, pixels] -> (header, frame array). A malformed message is a DataError."""
    if len(parts) != 3:
        raise DataError(f"expected a 3-part message (topic, header, pixels); got {len(parts)} part(s)")
    try:
        header = json.loads(parts[1])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"message header is not JSON: {exc}") from None
    missing = [key for key in _HEADER_KEYS if key not in header]
    if missing:
        raise DataError(f"message header lacks {', '.join(missing)}")
    header["topic"] = bytes(parts[0]).decode(errors="replace")
    dtype, shape = np.dtype(header["dtype"]), tuple(header["shape"])
    if len(parts[2]) != dtype.itemsize * int(np.prod(shape)):
        raise DataError(f"frame {header['seq']}: {len(parts[2])} bytes do not make a {shape} {dtype} array")
    frame = np.frombuffer(parts[2], dtype=dtype).reshape(shape)
    return header, frame


class Subscriber:
    """Subscribes to ``<topic>`` (every stream) or ``<topic>/<stream id>`` (one stream).

    Iterating yields (header, frame) until ``timeout_s`` passes without a frame (forever
    when None). ``receive`` gets one message.
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, topic: str = "fused", timeout_s: float | None = None, hwm: int = 100):
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.RCVHWM, hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(endpoint)  # connecting first is fine: ZeroMQ retries until the publisher binds
        self._socket.setsockopt(zmq.SUBSCRIBE, topic.encode())

    def receive(self, timeout_s: float | None = None) -> tuple[dict, np.ndarray] | None:
        """The next (header, frame), or None when ``timeout_s`` passes first."""
        timeout_ms = None if timeout_s is None else max(0, int(timeout_s * 1000))
        if not self._socket.poll(timeout_ms, zmq.POLLIN):
            return None
        return decode_message(self._socket.recv_multipart())

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
    parser.add_argument("--topic", default="fused", help="topic prefix; fused/cam0 for one stream (default: fused)")
    parser.add_argument("--count", type=int, help="exit after this many frames (error if the stream ends first)")
    parser.add_argument("--timeout", type=float, help="give up after this many seconds without a frame (default: wait forever)")
    parser.add_argument("--summary-only", action="store_true", help="no line per frame, only the rate")
    add_logging_arguments(parser)
    return parser


@one_line_errors("ldfusion subscribe")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    if args.count is not None and args.count < 1:
        raise DataError(f"--count must be at least 1; got {args.count}")
    received, started, interrupted = 0, time.monotonic(), False
    window_start, window_count = None, 0
    with Subscriber(args.endpoint, args.topic, args.timeout) as subscriber:
        try:
            for header, frame in subscriber:
                received += 1
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
        except KeyboardInterrupt:  # the usual way to end an open-ended subscription
            interrupted = True
    elapsed = time.monotonic() - started
    print(f"received {received} frame(s) in {elapsed:.1f} s")
    if interrupted:
        return EXIT_INTERRUPTED
    if received == 0:
        raise DataError(f"no frames from {args.endpoint} within {args.timeout} s")
    if args.count is not None and received < args.count:
        raise DataError(f"only {received} of {args.count} frame(s) arrived before {args.timeout} s passed without one")
    return 0


def _frame_line(header: dict, frame: np.ndarray) -> str:
    latency_ms = (time.time() - header["captured_unix"]) * 1000.0 if "captured_unix" in header else float("nan")
    shape = "x".join(str(n) for n in frame.shape)
    return (
        f"{header['stream']} seq {header['seq']} t {header.get('t_fused', float('nan')):.3f} s "
        f"(ir {header.get('t_ir', float('nan')):.3f}, vi {header.get('t_vi', float('nan')):.3f}) "
        f"{shape} {header.get('pixel_format', '?')} latency {latency_ms:.0f} ms"
    )
