"""`log_format=json`: one JSON object per line, uvicorn's lines included."""

import json
import logging

from sm70.config import load_config
from sm70.serve.main import JsonFormatter, ServeConfig, uvicorn_config


def test_json_lines():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("sm70.serve", logging.ERROR, __file__, 1, "upstream %s taken out", ("a:1",),
                                   sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "error" and entry["logger"] == "sm70.serve"
    assert entry["message"] == "upstream a:1 taken out" and "ValueError" in entry["exception"]
    assert entry["time"].endswith("+00:00")


def test_uvicorn_logs_through_the_root_handler_in_json():
    cfg = load_config(ServeConfig, upstream="http://127.0.0.1:1/v1", auth="none", log_format="json")
    assert uvicorn_config(None, cfg).log_config is None
    assert uvicorn_config(None, load_config(ServeConfig, model="/tmp/m", auth="none")).log_config is not None
