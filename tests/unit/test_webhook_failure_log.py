"""What a failed webhook attempt leaves in the server log and the delivery log: one line without a
traceback for what receivers and networks do (INFO; a refused destination WARNING), a traceback for a
bug of ours, never the signing secret; and no latency in the delivery log when no answer came."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx2 as httpx
import pytest

from qianbao.events.sending import AttemptResult, Outgoing, new_http_client, send
from tests.support.receiver import public_resolver

SECRET = "whsec_never_logged"  # noqa: S105 - a test value
MESSAGE = Outgoing(
    delivery_id="whd_log",
    endpoint_id="whe_log",
    url="https://hooks.example.com/qianbao",
    secrets=(SECRET,),
    event_id="evt_log",
    event_type="transfer.succeeded",
    event_created_at=0,
    payload={"transfer_id": "trf_log"},
)


def raising(exc: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def private(host: str, port: int) -> list[str]:
    del host, port
    return ["10.0.0.7"]


def busy(request: httpx.Request) -> httpx.Response:
    del request
    return httpx.Response(503, text="busy")


def attempt(
    handler: Callable[[httpx.Request], httpx.Response],
    resolver: Callable[[str, int], list[str]] = public_resolver,
) -> AttemptResult:
    with new_http_client(transport=httpx.MockTransport(handler), resolver=resolver) as client:
        return send(client, MESSAGE, timestamp_s=1_700_000_000)


def logged(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    [record] = [r for r in caplog.records if r.name == "qianbao.events.sending"]
    text = record.getMessage() + (caplog.text or "")
    assert SECRET not in text
    assert "whd_log" in record.getMessage() and "whe_log" in record.getMessage()
    return record


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "connection_failed"),
        (httpx.ConnectTimeout("timed out"), "connection_failed"),
        (httpx.ReadTimeout("The read operation timed out"), "timeout"),
        (httpx.RemoteProtocolError("illegal status line"), "bad_response"),
    ],
)
def test_an_ordinary_failure_is_one_info_line_and_no_latency(
    caplog: pytest.LogCaptureFixture, exc: Exception, error: str
) -> None:
    caplog.set_level(logging.INFO, logger="qianbao.events.sending")
    result = attempt(raising(exc))
    assert (result.status_code, result.latency_ms, result.response_snippet, result.error) == (
        None,
        None,
        None,
        error,
    )
    record = logged(caplog)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert f"{type(exc).__name__}: {exc}" in record.getMessage() and error in record.getMessage()


def test_a_refused_destination_is_a_warning_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qianbao.events.sending")
    result = attempt(raising(AssertionError("never sent")), resolver=private)
    assert (result.latency_ms, result.error) == (None, "destination_not_allowed")
    record = logged(caplog)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "DestinationRefused" in record.getMessage() and "10.0.0.7" in record.getMessage()


def test_an_unexpected_exception_keeps_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qianbao.events.sending")
    result = attempt(raising(KeyError("a bug")))
    assert (result.latency_ms, result.error) == (None, "connection_failed")
    record = logged(caplog)
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "KeyError: 'a bug'" in caplog.text  # the traceback is written out


def test_an_answer_has_its_latency_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qianbao.events.sending")
    result = attempt(busy)
    assert (result.status_code, result.response_snippet, result.error) == (503, "busy", None)
    assert isinstance(result.latency_ms, int) and result.latency_ms >= 0
    assert [r for r in caplog.records if r.name == "qianbao.events.sending"] == []
