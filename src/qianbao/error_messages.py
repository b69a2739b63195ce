"""User-facing error text in zh-CN and en, read from the gettext catalogs with Babel.

The catalogs are `qianbao/locale/<en|zh_CN>/LC_MESSAGES/qianbao.po`, shipped as package data and parsed
once per process (`babel.messages.pofile.read_po`): reading the .po needs no compile step, so a clean
`pip install -e .` and a wheel behave the same. msgids are symbolic (`error.<code>`,
`next_step.<name>`), so the English text is a translation like the Chinese one and can change without
touching code. Messages may use `{reference}` (the support reference) and, in `.until` variants,
`{until}` (the end of a lock, in China time).

Specific messages (`error.<code>.<variant>`, see `qianbao.error_codes.MESSAGE_VARIANTS`) take the
parameters their error carries: a field is shown by its label (`field.<name>`) or else as its JSON path,
a list of choices joined the language's way, a number grouped by locale, an amount of money as money
(¥0.01). A route whose parameter means something else than the label of its name says which label it
takes (`labels`, path → label name: the history filter `to` is the end of a period, not a recipient).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from importlib.resources import files
from importlib.resources.abc import Traversable
from types import MappingProxyType

from babel.dates import format_date, format_time
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

from qianbao.error_codes import NEXT_STEP_BY_NAME, lookup
from qianbao.errors import UserText
from qianbao.money import Money, format_money

DOMAIN = "qianbao"
LANGUAGES = ("en", "zh-CN")
DEFAULT_LANGUAGE = "en"
LOCALE_DIRS = {"en": "en", "zh-CN": "zh_CN"}
# Dates in messages are shown in China time (no daylight saving), like the daily limits' local day.
CHINA_TIME = timezone(timedelta(hours=8))
# An Accept-Language header is short; a longer one is cut rather than parsed at length.
MAX_HEADER_ENTRIES = 32
# Parameters of a specific message that name a field (a JSON path) and so are shown by their label.
FIELD_PARAMS = ("field", "other")
LIST_SEPARATORS = {"en": ", ", "zh-CN": "、"}
# How a field without a label is quoted: its JSON path as sent.
UNLABELLED_FIELD = {"en": '"{path}"', "zh-CN": "「{path}」"}
MAX_SHOWN_PATH = 64
_INDEX = re.compile(r"\[\d+\]$")
# Chinese text puts a space between Han characters and Latin letters or digits ("钱包 ID 无效"); a label
# or value filled into a template may bring either side.
_HAN_LATIN_BOUNDARY = re.compile(r"(?<=[A-Za-z0-9])(?=[\u4e00-\u9fff])|(?<=[\u4e00-\u9fff])(?=[A-Za-z0-9])")


def catalog_file(language: str) -> Traversable:
    return files("qianbao") / "locale" / LOCALE_DIRS[language] / "LC_MESSAGES" / f"{DOMAIN}.po"


def load_catalog(language: str) -> Catalog:
    with catalog_file(language).open("rb") as handle:
        return read_po(handle, locale=LOCALE_DIRS[language], domain=DOMAIN)


@functools.cache
def messages(language: str) -> Mapping[str, str]:
    """msgid → text for one language; fuzzy and empty entries are left out (they are not reviewed)."""
    catalog = load_catalog(language)
    return MappingProxyType(
        {
            message.id: message.string
            for message in catalog
            if isinstance(message.id, str)
            and message.id
            and isinstance(message.string, str)
            and message.string
            and not message.fuzzy
        }
    )


def negotiate_language(header: str | None) -> str:
    """The best of `LANGUAGES` for an Accept-Language header (RFC 9110 §12.5.4), else the default.

    Any Chinese tag (`zh`, `zh-CN`, `zh-Hans`, `zh-Hans-CN`, even `zh-TW`) reads the simplified Chinese
    catalog, the only Chinese one there is; `q=0` refuses a language; `*` stands for the default."""
    if not header:
        return DEFAULT_LANGUAGE
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:MAX_HEADER_ENTRIES]):
        tag, _, params = part.strip().partition(";")
        quality = _quality(params)
        tag = tag.strip().lower()
        if quality is None or quality <= 0 or not tag:
            continue
        ranked.append((-quality, position, tag))
    for _rank, _position, tag in sorted(ranked):
        if tag == "*":
            return DEFAULT_LANGUAGE
        primary = tag.split("-", 1)[0]
        if primary == "zh":
            return "zh-CN"
        if primary == "en":
            return "en"
    return DEFAULT_LANGUAGE


def _quality(params: str) -> float | None:
    """The q-value of one Accept-Language entry (1 when absent); None when malformed."""
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() != "q":
            continue
        try:
            quality = float(value.strip())
        except ValueError:
            return None
        return quality if 0 <= quality <= 1 else None
    return 1.0


def user_message(code: str, language: str, status: int) -> str:
    """The message for a code; an unregistered code gets the generic one for its class of status."""
    texts = messages(language)
    entry = lookup(code)
    if entry is not None and entry.msgid in texts:
        return texts[entry.msgid]
    return texts["error.internal_error" if status >= 500 else "error.validation_error"]


def specific_message(
    text: UserText, language: str, *, field: object = None, labels: Mapping[str, str] | None = None
) -> str | None:
    """The specific message `text` in `language`, or None when the catalog lacks it (the caller falls back
    to the code's message). `field` is the error's own `field` extra, used when `text` names none;
    `labels` the route's own field labels (path → label name)."""
    template = messages(language).get(text.msgid)
    if template is None:
        return None
    params: dict[str, object] = {} if field is None else {"field": field}
    params.update(text.params)
    shown = {name: _shown(name, value, language, labels or {}) for name, value in params.items()}
    try:
        rendered = template.format_map(shown)
    except (KeyError, IndexError, ValueError):
        return None  # a parameter the error did not carry: the code's message is better than a hole
    if language == "zh-CN":
        return _HAN_LATIN_BOUNDARY.sub(" ", rendered)
    return rendered[:1].upper() + rendered[1:]


def field_label(path: str, language: str, labels: Mapping[str, str] | None = None) -> str:
    """How a message names the field at `path` (`amount.currency`, `events[0]`): the label the route gives
    that path (`labels`), else the label of its last segment in `language`, else the path itself, quoted."""
    name = (labels or {}).get(path) or _INDEX.sub("", path.rsplit(".", 1)[-1])
    label = messages(language).get(f"field.{name}")
    if label:
        return label
    if len(path) > MAX_SHOWN_PATH:  # an unknown field's name comes from the client: keep it short
        path = path[: MAX_SHOWN_PATH - 1] + "…"
    return UNLABELLED_FIELD[language].format(path=path)


def _shown(name: str, value: object, language: str, labels: Mapping[str, str]) -> str:
    if name in FIELD_PARAMS and isinstance(value, str):
        return field_label(value, language, labels)
    if isinstance(value, Money):
        return format_money(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return format_decimal(value, locale=LOCALE_DIRS[language])
    if isinstance(value, Sequence) and not isinstance(value, str):
        return LIST_SEPARATORS[language].join(str(item) for item in value)
    return str(value)


def next_step_message(step: str, language: str, *, reference: str, until: object = None) -> str | None:
    """What to do, in words; None for a next step the registry does not know."""
    known = NEXT_STEP_BY_NAME.get(step)
    if known is None:
        return None
    texts = messages(language)
    until_text = format_until(until, language)
    if until_text is not None and known.until_msgid is not None and known.until_msgid in texts:
        return texts[known.until_msgid].format_map({"reference": reference, "until": until_text})
    text = texts.get(known.msgid)
    return None if text is None else text.format_map({"reference": reference})


def format_until(value: object, language: str) -> str | None:
    """A lock's end (RFC 3339 text, a date, or epoch microseconds) as a local date and time, or None."""
    when: datetime | None = None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)
    elif isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        return format_date(value, "long", locale=LOCALE_DIRS[language])
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        if len(value) == len("2026-03-01"):  # a bare date: the lock ends when that day begins
            return format_date(when.date(), "long", locale=LOCALE_DIRS[language])
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    local = when.astimezone(CHINA_TIME)
    locale = LOCALE_DIRS[language]
    shown = format_date(local.date(), "long", locale=locale)
    if (local.hour, local.minute) != (0, 0):
        shown = f"{shown} {format_time(local.time(), 'short', locale=locale)}"
    return shown
