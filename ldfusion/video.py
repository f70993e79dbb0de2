"""Opening video files with PyAV, with the checks every reader needs and errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import av

from ldfusion.errors import DataError


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's own words, without the errno and path PyAV wraps them in."""
    return getattr(exc, "strerror", None) or str(exc)


def open_video(path: str | os.PathLike) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open ``path`` and return (container, first video stream); the caller closes the container.

    Missing files, files FFmpeg cannot read and files without a video stream are a
    ``DataError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise DataError(f"cannot read video {path}: {ffmpeg_reason(exc)} (corrupt, truncated or not a video)") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{path} holds no video stream")
    return container, container.streams.video[0]
