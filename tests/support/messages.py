"""Checking that a problem's `user_message` helps: specific to what went wrong, in the right language."""

from __future__ import annotations

import re
from typing import Any

from qianbao.error_messages import field_label, messages

CJK = re.compile(r"[\u4e00-\u9fff]")
# Three English words in a row: a sentence left untranslated in a Chinese message. Values a message
# quotes (「to」, choices such as wallet_id、phone) and fixed tokens (Content-Type: application/json, an
# RFC 3339 example) are single words or joined by punctuation, so they do not count.
ENGLISH_RUN = re.compile(r"[A-Za-z]{2,}(?:[ ,]+[A-Za-z]{2,}){2,}")
QUOTED = re.compile(r"「[^」]*」")


def field_of(body: dict[str, Any]) -> str | None:
    """The field a problem is about: its `field` extra, else its first `errors[]` entry's."""
    if isinstance(body.get("field"), str):
        return str(body["field"])
    errors = body.get("errors") or []
    if errors and isinstance(errors[0].get("field"), str):
        return str(errors[0]["field"])
    return None


def assert_helpful(body: dict[str, Any], language: str, context: str = "") -> None:
    """`user_message` is not the code's generic text, names the field the problem is about (by its label
    or its path), and is written in `language` only."""
    message = body["user_message"]
    generic = messages(language).get(f"error.{body['code']}")
    assert message != generic, f"{context}: generic message {message!r}"
    field = field_of(body)
    if field is not None:
        label = field_label(field, language)
        names = {label.casefold(), field.casefold(), field.rsplit(".", 1)[-1].casefold()}
        if language == "en":
            names.add(label.removeprefix("the ").casefold())
        named = any(name in message.casefold() for name in names)
        assert named, f"{context}: {message!r} does not name {field}"
    if language == "zh-CN":
        assert CJK.search(message), f"{context}: {message!r}"
        assert not ENGLISH_RUN.search(QUOTED.sub("", message)), f"{context}: English in {message!r}"
    else:
        assert not CJK.search(message), f"{context}: {message!r}"
        assert message[:1].isupper() or message[:1] in "\"'", f"{context}: {message!r}"
