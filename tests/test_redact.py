"""Credentials in camera URLs never reach logs, errors or saved configs."""

from __future__ import annotations

import logging
import sys

import pytest
import yaml

from ldfusion.redact import MaskCredentials, mask_credentials
from pipeline import cli
from tests.rtsp_server import free_port

SECRET = "hunter2"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("rtsp://admin:hunter2@192.168.1.20:554/stream1", "rtsp://***@192.168.1.20:554/stream1"),
        ("rtsp://admin@cam/x", "rtsp://***@cam/x"),  # a user name alone is masked too
        ("rtsp://u:p@ss@cam.local/live", "rtsp://***@cam.local/live"),  # an unescaped @ in the password
        ("rtsp://u:p%2Fq@cam/live?x=1", "rtsp://***@cam/live?x=1"),
        ("cannot open camera rtsp://a:b@h/1 or http://c:d@h/2.", "cannot open camera rtsp://***@h/1 or http://***@h/2."),
        ("rtsp://192.168.1.20/stream1", "rtsp://192.168.1.20/stream1"),  # nothing to hide
        ("mail me@example.com, path /a/b@c", "mail me@example.com, path /a/b@c"),  # no URL
        ("rtsp://cam/p@th", "rtsp://cam/p@th"),  # an @ after the host is not user-info
        # Credentials in the query, as HTTP/MJPEG cameras take them; other parameters stay.
        ("http://a:b@h/x.mp4?user=admin&pwd=QuerySecret", "http://***@h/x.mp4?user=***&pwd=***"),
        ("http://cam/video.cgi?resolution=640x480&Password=s3&fps=9", "http://cam/video.cgi?resolution=640x480&Password=***&fps=9"),
        ("rtsp://cam/live?token=abc.def#frag and ?token=plain", "rtsp://cam/live?token=***#frag and ?token=plain"),  # URLs only
        ("http://cam/x?api_key=k1;channel=2&keyframe=1", "http://cam/x?api_key=***;channel=2&keyframe=1"),
        # Forms a re-check found unmasked: in the fragment, P2P cameras' names, other spellings, signed URLs.
        ("http://cam/a#password=abc&access_token=t", "http://cam/a#password=***&access_token=***"),
        ("http://cam/a?loginuse=admin&loginpas=pw&next=1", "http://cam/a?loginuse=***&loginpas=***&next=1"),
        ("http://cam/a?user_pwd=x&api-key=k&X-Api-Key=k2&Authorization=Basic&client_secret=s&private_token=p",
         "http://cam/a?user_pwd=***&api-key=***&X-Api-Key=***&Authorization=***&client_secret=***&private_token=***"),
        ("https://s3/x?X-Amz-Signature=abc&X-Amz-Credential=AK&X-Amz-Date=2024", "https://s3/x?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Date=2024"),
        ("https://s3/x?AWSAccessKeyId=AK&psw=1&jwt=2&sid=3", "https://s3/x?AWSAccessKeyId=***&psw=***&jwt=***&sid=***"),
        # Percent-encoded names, which a server decodes: they were shown.
        ("http://cam/a?%70assword=pw&user%5Fpwd=x&api%2Dkey=k&fps=9", "http://cam/a?%70assword=***&user%5Fpwd=***&api%2Dkey=***&fps=9"),
        # Names that merely contain such a word are left alone: the saved config stays as written.
        ("rtsp://cam/live?authmode=2&passthrough=1&author=me&hotkey=3&tokenizer=x&bypass_cache=1",
         "rtsp://cam/live?authmode=2&passthrough=1&author=me&hotkey=3&tokenizer=x&bypass_cache=1"),
    ],
)
def test_mask_credentials_hides_credentials_only(text, masked):
    assert mask_credentials(text) == masked


def test_mask_credentials_reaches_into_configs():
    config = {"streams": [{"ir": {"path": f"rtsp://u:{SECRET}@h/ir", "fps": 9}}], "tags": ("rtsp://x:y@h/",), "n": 3}
    masked = mask_credentials(config)
    assert masked == {"streams": [{"ir": {"path": "rtsp://***@h/ir", "fps": 9}}], "tags": ("rtsp://***@h/",), "n": 3}


def test_log_filter_masks_arguments_and_tracebacks():
    handler_records = []

    class Keep(logging.Handler):
        def emit(self, record):
            handler_records.append(self.format(record))

    logger = logging.getLogger("test_redact")
    handler = Keep()
    handler.addFilter(MaskCredentials())
    logger.addHandler(handler)
    try:
        logger.warning("camera %s stopped", f"rtsp://u:{SECRET}@h/ir")
        try:
            raise RuntimeError(f"cannot read rtsp://u:{SECRET}@h/ir")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert handler_records[0] == "camera rtsp://***@h/ir stopped"
    assert "rtsp://***@h/ir" in handler_records[1] and SECRET not in "".join(handler_records)


def _camera_config(tmp_path, url: str):
    path = tmp_path / "live.yaml"
    camera = {"kind": "camera", "path": url, "read_timeout_s": 1.0}
    path.write_text(yaml.safe_dump({"streams": [{"ir": camera, "visible": {**camera, "path": "1"}}], "sinks": [{"kind": "mp4", "path": "o.mp4"}],
                                    "run": {"out_dir": str(tmp_path / "out")}}))
    return path


def test_print_config_masks_credentials(tmp_path, capsys):
    config = _camera_config(tmp_path, f"rtsp://operator:{SECRET}@10.0.0.9/ir")
    assert cli.main([str(config), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "rtsp://***@10.0.0.9/ir" in out and SECRET not in out and "operator" not in out


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("rtsp://operator:{secret}@127.0.0.1:{port}/ir", "rtsp://***@127.0.0.1"),
        ("http://127.0.0.1:{port}/video.mjpg?user=operator&pwd={secret}", "http://127.0.0.1:{port}/video.mjpg?user=***&pwd=***"),
    ],
)
def test_a_camera_that_does_not_answer_is_named_without_its_password(tmp_path, capfd, url, named):
    # A real OpenCV/FFmpeg open of a URL where nothing listens: the one-line error, the log,
    # and whatever FFmpeg itself prints on stderr.
    port = free_port()
    assert cli.main([str(_camera_config(tmp_path, url.format(secret=SECRET, port=port))), "--device", "cpu"]) == 2
    sys.stderr.flush()
    output = capfd.readouterr()
    assert f"cannot open camera {named.format(port=port)}" in output.err
    assert SECRET not in output.out + output.err and "operator" not in output.out + output.err


def test_the_command_lines_log_handlers_mask_any_message(capfd):
    from ldfusion.cli.common import setup_logging

    setup_logging()
    logging.getLogger("some.library").warning("retrying %s", f"rtsp://admin:{SECRET}@10.0.0.9/live")
    err = capfd.readouterr().err
    assert "retrying rtsp://***@10.0.0.9/live" in err and SECRET not in err
