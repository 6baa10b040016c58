"""No password from REDIS_URL or CELERY_BROKER_URL in a setting error, log line or body."""

from __future__ import annotations

import logging

import orjson
import pytest

from api.errors import error_body
from predictions.infra.logs import formatter
from predictions.infra.redaction import redact
from predictions.settings import Settings, SettingsError

PASSWORD = "s3cretpw"  # noqa: S105 - a test password, the one to look for


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("redis://api:s3cretpw@cache:notaport/0", "redis://api:***@cache:notaport/0"),
        ("rediss://:s3cretpw@cache:6380/0", "rediss://:***@cache:6380/0"),
        ("redis://api:s3c@ret:pw@cache/0", "redis://api:***@cache/0"),
        ("redis://cache/0?password=s3cretpw&db=1", "redis://cache/0?password=***&db=1"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("redis://api@cache/0", "redis://api@cache/0"),
    ],
)
def test_redact_masks_the_password_only(raw: str, shown: str) -> None:
    assert redact(raw) == shown
    assert redact(f"got {raw!r} instead") == f"got {shown!r} instead"


@pytest.mark.parametrize("name", ["REDIS_URL", "CELERY_BROKER_URL"])
@pytest.mark.parametrize(
    "raw",
    [
        "redis://api:s3cretpw@cache:notaport/0",
        "redis://api:s3cretpw@cache:6379/99",
        "http://api:s3cretpw@cache:6379/0",
        "redis://cache:6379/x?password=s3cretpw",
    ],
)
def test_setting_errors_never_show_the_password(name: str, raw: str) -> None:
    if name == "CELERY_BROKER_URL":
        # Checked where it is used (worker and beat), against every scheme Celery takes;
        # a value kombu would take is not refused here, and a refused one is not shown.
        try:
            Settings.from_env({name: raw}).broker_url  # noqa: B018
        except SettingsError as exc:
            message = str(exc)
            assert name in message
            assert PASSWORD not in message
            assert "***" in message or "value not shown" in message
        return
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: raw})
    message = str(caught.value)
    assert name in message
    assert PASSWORD not in message
    assert "***" in message


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_lines_never_show_the_password(log_format: str) -> None:
    record = logging.LogRecord(
        "worker", logging.ERROR, __file__, 1,
        "cannot reach %s", ("redis://api:s3cretpw@cache:6379/1",), None,
    )  # fmt: skip
    try:
        raise ConnectionError("redis://api:s3cretpw@cache:6379/1 refused")
    except ConnectionError:
        import sys

        record.exc_info = sys.exc_info()
    line = formatter(log_format).format(record)
    assert PASSWORD not in line
    assert "redis://api:***@cache:6379/1" in line
    if log_format == "json":
        orjson.loads(line)


def test_error_bodies_never_show_the_password() -> None:
    body = error_body(503, "not_ready", "unreachable: redis://api:s3cretpw@cache:6379/0")
    assert PASSWORD.encode() not in body
    assert orjson.loads(body)["error"]["message"] == "unreachable: redis://api:***@cache:6379/0"
