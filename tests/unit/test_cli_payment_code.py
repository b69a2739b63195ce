"""`qianbao qr payment-code`: the code a device would show, for testing tills without a phone."""

from __future__ import annotations

import time

from typer.testing import CliRunner

from qianbao.cli.main import app
from qianbao.payments import payment_code_model

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # noqa: S105 - a throwaway test secret
runner = CliRunner()


def test_prints_the_current_code_for_a_device() -> None:
    before = payment_code_model.payment_code(SECRET, "1234567", time.time(), 3)
    result = runner.invoke(
        app, ["qr", "payment-code", "--secret", SECRET, "--number", "1234567", "--seq", "3"]
    )
    after = payment_code_model.payment_code(SECRET, "1234567", time.time(), 3)
    assert result.exit_code == 0, result.output
    assert result.output.strip() in (before, after)  # a minute may turn during the call


def test_bad_secrets_and_numbers_are_refused() -> None:
    bad_secret = runner.invoke(app, ["qr", "payment-code", "--secret", "!!", "--number", "1234567"])
    assert bad_secret.exit_code == 2
    bad_number = runner.invoke(app, ["qr", "payment-code", "--secret", SECRET, "--number", "12"])
    assert bad_number.exit_code == 2 and "7 digits" in bad_number.output
