"""Logs: one structured line per request and the process's own records, as JSON lines when the
output is not a terminal and as readable lines when it is.

structlog renders both: the request line goes straight to a byte stream through a logger whose
level filter is decided once (a call below the level is a no-op method, so a request pays for
one call and one write), and records of the standard library's loggers (uvicorn's, the
pool's, …) pass through the same renderer, so an operator reads and parses one format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, BinaryIO, TextIO

import msgspec
import structlog
from structlog.typing import FilteringBoundLogger, Processor

FORMATS = ("auto", "json", "console")
_LEVELS = logging.getLevelNamesMapping()


def level_number(name: str) -> int:
    try:
        return _LEVELS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown log level {name!r} (debug, info, warning, error)") from None


def is_json(log_format: str, stream: TextIO) -> bool:
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r} ({', '.join(FORMATS)})")
    return log_format == "json" or (log_format == "auto" and not stream.isatty())


def _shared() -> list[Processor]:
    return [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]


def _renderer(json: bool, stream: TextIO) -> Processor:
    if json:
        return structlog.processors.JSONRenderer(serializer=_encode)
    return structlog.dev.ConsoleRenderer(colors=stream.isatty())


def _encode(value: Any, **_: Any) -> bytes:
    return msgspec.json.encode(value, enc_hook=str)


def _encode_text(value: Any, **_: Any) -> str:
    return _encode(value).decode()


def request_logger(level: str, log_format: str, stream: TextIO | None = None) -> FilteringBoundLogger:
    """The logger of request lines: JSON lines to `stream` (default stdout) unless it is a terminal."""
    stream = stream or sys.stdout
    json = is_json(log_format, stream)
    processors = [*_shared(), structlog.processors.format_exc_info, _renderer(json, stream)]
    if json:
        buffer: BinaryIO = stream.buffer  # type: ignore[attr-defined]
        logger: Any = structlog.BytesLogger(buffer)
    else:
        logger = structlog.WriteLogger(stream)
    # bind(): wrap_logger gives a lazy proxy that would build the logger again on every call.
    return structlog.wrap_logger(
        logger, processors=processors, wrapper_class=structlog.make_filtering_bound_logger(level_number(level))
    ).bind()


def configure_process(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Render the standard library's records (uvicorn, convtree's modules) as the request lines are."""
    stream = stream or sys.stdout
    json = is_json(log_format, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *_shared()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_encode_text) if json else _renderer(False, stream),
            ],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_number(level))
