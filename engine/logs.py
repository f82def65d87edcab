"""JSON-lines logs in $BOTCTL_HOME/logs/, rotated; each line carries the ids it concerns."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
from pathlib import Path

_IDS = ("command", "position", "order", "tx", "line", "reason", "signal")


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "at": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _IDS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup(home: Path, level: int = logging.INFO) -> logging.Handler:
    logs = Path(home) / "logs"
    logs.mkdir(mode=0o700, exist_ok=True)
    old = os.umask(0o077)
    try:
        handler = logging.handlers.RotatingFileHandler(logs / "botctl.log", maxBytes=5_000_000, backupCount=5)
    finally:
        os.umask(old)
    handler.setFormatter(JsonLines())
    root = logging.getLogger("botctl")
    root.setLevel(level)
    root.addHandler(handler)
    root.propagate = False
    return handler
