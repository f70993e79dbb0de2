#!/usr/bin/env python
"""Which hardware codecs open on this machine, why not when they do not, and decode speed.

    python scripts/codec_probe.py [--clip VIDEO.mp4] [--out codecs.json]

Opens ``h264_nvenc`` at 640x512 and 1920x1080 (encoding one frame, as the MP4 writer
would) and NVDEC (PyAV's cuda hwaccel) for H.264, through ``ldfusion.codecs``, and prints
FFmpeg's own reason for each failure. With ``--clip``, probes NVDEC for the clip's codec,
decodes it on the CPU and, when NVDEC opens, on NVDEC, and reports frames per second and
the frame layout each gives.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import av

from ldfusion import codecs


def decode_speed(path: Path, choice: codecs.DecoderChoice) -> dict:
    start = time.perf_counter()
    frames, layout = 0, None
    with av.open(str(path), **choice.open_options) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames += 1
            layout = frame.format.name
    seconds = time.perf_counter() - start
    return {"frames": frames, "fps": round(frames / seconds, 1), "format": layout}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=None, help="a video to time decoding on (the M3SVD clips are MPEG-4 Part 2)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result: dict = {
        "pyav": av.__version__,
        "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "hwdevices": list(av.codec.hwaccel.hwdevices_available()),
    }
    for width, height in [(640, 512), (1920, 1080)]:
        options = codecs.encoder_options(codecs.HARDWARE_ENCODER, 18, "veryfast")
        problem = codecs.encoder_problem(codecs.HARDWARE_ENCODER, width, height, options)
        result[f"h264_nvenc_{width}x{height}"] = problem or "opens"
    result["encoder_auto_640x512"] = codecs.choose_encoder("auto", 640, 512).name
    result["nvdec_h264"] = codecs.decoder_problem("h264") or "opens"
    if args.clip is not None:
        with av.open(str(args.clip)) as container:
            codec = container.streams.video[0].codec_context.name
        result["clip_codec"] = codec
        result[f"nvdec_{codec}"] = codecs.decoder_problem(codec) or "opens"
        result["decode_cpu"] = decode_speed(args.clip, codecs.DecoderChoice("cpu"))
        choice = codecs.choose_decoder("cuda", codec)
        if choice.device == "cuda":
            result["decode_nvdec"] = decode_speed(args.clip, choice)
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
