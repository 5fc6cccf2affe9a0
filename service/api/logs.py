"""Logs: one structured line per request and the process's own records, as JSON lines when the
output is not a terminal and as readable lines when it is.

structlog renders them: records of the standard library's loggers (uvicorn's, the pool's, …)
and failed requests (with their traceback) pass through its processors, so an operator reads
and parses one format. The line of a request that went well, written for every request, takes
a shorter road to the same JSON (`RequestLog`): one msgspec struct encoded and written in one
call, which costs a request a fifth of what structlog's processor chain does (BENCHMARKS.md,
"Request log and metrics").
"""

from __future__ import annotations

import datetime
import io
import logging
import os
import sys
import time
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
    processors: list[Processor] = [*_shared(), structlog.processors.format_exc_info, _renderer(json, stream)]
    if json:
        buffer: BinaryIO = stream.buffer
        logger: Any = structlog.BytesLogger(buffer)
    else:
        logger = structlog.WriteLogger(stream)
    # bind(): wrap_logger gives a lazy proxy that would build the logger again on every call.
    bound: FilteringBoundLogger = structlog.wrap_logger(
        logger, processors=processors, wrapper_class=structlog.make_filtering_bound_logger(level_number(level))
    ).bind()
    return bound


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


class RequestLine(msgspec.Struct, kw_only=True):
    """A request line, with the fields (and in the order) structlog's JSON renderer gives them."""

    method: str
    route: str
    status: int
    duration_ms: float
    tenant: str | None
    conversation_id: str | None
    request_id: str
    event: str = "request"
    level: str = "info"
    timestamp: str = ""


class RequestLog:
    """The lines of requests: `info` for one that went well, `error` (with its traceback) for one
    that failed. Off a terminal, `info` encodes the line itself and writes it to the stream's
    file descriptor at once (one write, no buffer and no lock: only the event loop's thread writes
    request lines); on a terminal, and for errors, structlog renders it."""

    def __init__(self, level: str, log_format: str, stream: TextIO | None = None) -> None:
        stream = stream or sys.stdout
        self.logger = request_logger(level, log_format, stream)
        self.error = self.logger.error
        self.enabled = level_number(level) <= logging.INFO
        self._fd: int | None = None
        self._buffer: BinaryIO | None = None
        if is_json(log_format, stream):
            try:
                self._fd = stream.fileno()
            except (AttributeError, OSError, io.UnsupportedOperation):
                self._buffer = stream.buffer
        self._encoder = msgspec.json.Encoder()
        self._second = -1
        self._second_text = ""

    def info(self, line: RequestLine) -> None:
        if not self.enabled:
            return
        if self._fd is None and self._buffer is None:
            self.logger.info("request", **{f: getattr(line, f) for f in REQUEST_FIELDS})
            return
        line.timestamp = self._timestamp()
        data = self._encoder.encode(line) + b"\n"
        if self._fd is not None:
            written = os.write(self._fd, data)
            while written < len(data):  # a pipe that took part of it (never for a file)
                written += os.write(self._fd, data[written:])
        else:
            assert self._buffer is not None
            self._buffer.write(data)
            self._buffer.flush()

    def _timestamp(self) -> str:
        # As structlog's TimeStamper(fmt="iso", utc=True) writes it; the date and time to the
        # second are formatted once a second.
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((now - second) * 1_000_000):06d}Z"


REQUEST_FIELDS = ("method", "route", "status", "duration_ms", "tenant", "conversation_id", "request_id")
