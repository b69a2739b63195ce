"""Access-log records lose their query strings (which can carry phone numbers)."""

from __future__ import annotations

import logging

from qianbao.api.log_redaction import DropQueryStrings


def access_record(path: str) -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", 200), None,
    )  # fmt: skip


def test_query_strings_are_dropped() -> None:
    record = access_record("/v1/recipients?phone=%2B8613800138000")
    assert DropQueryStrings().filter(record)
    message = record.getMessage()
    assert "13800138000" not in message and "/v1/recipients?…" in message


def test_paths_without_queries_and_other_records_are_untouched() -> None:
    record = access_record("/v1/me")
    DropQueryStrings().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /v1/me HTTP/1.1" 200'
    other = logging.LogRecord("x", logging.INFO, __file__, 1, "plain %s", ("a?b",), None)
    DropQueryStrings().filter(other)
    assert other.getMessage() == "plain a?b"
