"""Every setting is documented for operators: docs/configuration.md names each `QIANBAO_…` variable."""

from __future__ import annotations

from pathlib import Path

from qianbao.config import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_has_its_environment_variable_documented() -> None:
    text = DOC.read_text()
    missing = [name for name in Settings.model_fields if f"QIANBAO_{name.upper()}" not in text]
    assert missing == []
