"""`qianbao errors …`: list the error codes, write docs/errors.md, keep the gettext catalogs in step.

The registry (`qianbao.error_codes`) is the source of truth for codes, statuses and next steps; the .po
catalogs hold the text. `docs` renders both into docs/errors.md (a test keeps the committed file equal
to it); `sync-catalogs` adds new msgids to the catalogs (empty, to be translated) and drops retired ones;
`check` reports what a release must not ship: missing, empty or fuzzy entries and broken placeholders.
"""

from __future__ import annotations

import io
import json
import re
import string
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

from qianbao.error_codes import (
    AREAS,
    ERROR_CODES,
    FIELD_LABELS,
    MESSAGE_VARIANTS,
    NEXT_STEPS,
    VARIANT_BY_MSGID,
    all_msgids,
)
from qianbao.error_messages import DOMAIN, LANGUAGES, LOCALE_DIRS, catalog_file, load_catalog, messages

app = typer.Typer(help="Error codes: list them, document them, keep their translations complete.")

# Placeholders a message may use, per kind of msgid (see qianbao.error_messages); a specific message
# (error.<code>.<variant>) may use the parameters its variant declares.
ALLOWED_PLACEHOLDERS = {
    "error": set[str](),
    "next_step": {"reference"},
    "until": {"reference", "until"},
    "field": set[str](),
}
CATALOG_HEADER = (
    "# {language} texts of qianbao's error codes: problem+json `user_message`\n"
    "# (msgid error.<code>, or error.<code>.<variant> for a specific message), `next_step_message`\n"
    "# (msgid next_step.<name>) and the field names messages show (msgid field.<name>).\n"
    "# Edit the msgstr lines. New codes come in with `qianbao errors sync-catalogs`;\n"
    "# the comments come from src/qianbao/error_codes.py."
)
LANGUAGE_NAMES = {"en": "English", "zh-CN": "Simplified Chinese (zh-CN)"}
# A fixed creation date keeps regenerated catalogs byte-identical.
CATALOG_CREATED = datetime(2025, 1, 1, tzinfo=UTC)


@app.callback()
def errors() -> None:
    """The error codes of the API (a group, so that each action stays a subcommand)."""


@app.command("list")
def list_codes(
    language: Annotated[str, typer.Option(help="Language of the messages: en or zh-CN.")] = "en",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of tab-separated lines.")
    ] = False,
) -> None:
    """Print every error code with its HTTP status, default next step and message."""
    if language not in LANGUAGES:
        typer.echo(f"unknown language {language!r}: use one of {', '.join(LANGUAGES)}", err=True)
        raise typer.Exit(2)
    texts = messages(language)
    rows = [
        {
            "code": entry.code,
            "status": entry.status,
            "next_step": entry.next_step,
            "user_message": texts.get(entry.msgid, ""),
        }
        for entry in ERROR_CODES
    ]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['code']}\t{row['status']}\t{row['next_step'] or '-'}\t{row['user_message']}")


@app.command("docs")
def docs(
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
    check: Annotated[bool, typer.Option(help="Exit 1 if OUTPUT differs from the generated text.")] = False,
) -> None:
    """Generate docs/errors.md from the registry and the catalogs."""
    text = errors_markdown()
    if output is None:
        typer.echo(text, nl=False)
        return
    if check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            typer.echo(f"{output} is out of date: run `qianbao errors docs --output {output}`", err=True)
            raise typer.Exit(1)
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {output}")


@app.command("sync-catalogs")
def sync_catalogs(
    locale_dir: Annotated[
        Path | None, typer.Option(help="The locale folder (default: the package's own).")
    ] = None,
) -> None:
    """Add the registry's new msgids to every catalog (empty, to translate) and drop retired ones."""
    for language in LANGUAGES:
        path = _catalog_path(language, locale_dir)
        existing = None
        if path.exists():
            with path.open("rb") as handle:
                existing = read_po(handle, locale=LOCALE_DIRS[language], domain=DOMAIN)
        catalog = synced_catalog(language, existing)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(catalog_bytes(catalog))
        untranslated = [m.id for m in catalog if m.id and not m.string]
        typer.echo(f"{path}: {len(untranslated)} message(s) to translate")


@app.command("check")
def check_catalogs() -> None:
    """Exit 1 if a catalog has missing, empty, fuzzy or stray entries, or broken placeholders."""
    found = [f"{language}: {p}" for language in LANGUAGES for p in catalog_problems(language)]
    for line in found:
        typer.echo(line, err=True)
    if found:
        raise typer.Exit(1)
    typer.echo(f"catalogs complete: {', '.join(LANGUAGES)}")


# -- catalogs ----------------------------------------------------------------------------------------


def _catalog_path(language: str, locale_dir: Path | None) -> Path:
    if locale_dir is None:
        return Path(str(catalog_file(language)))
    return locale_dir / LOCALE_DIRS[language] / "LC_MESSAGES" / f"{DOMAIN}.po"


def synced_catalog(language: str, existing: Catalog | None) -> Catalog:
    """A catalog with exactly the registry's msgids, in registry order, keeping existing translations."""
    catalog = Catalog(
        locale=LOCALE_DIRS[language],
        domain=DOMAIN,
        header_comment=CATALOG_HEADER.format(language=LANGUAGE_NAMES[language]),
        project="qianbao",
        version="1",
        msgid_bugs_address="the qianbao issue tracker",
        creation_date=CATALOG_CREATED,
        revision_date=existing.revision_date if existing is not None else CATALOG_CREATED,
        last_translator="qianbao contributors",
        language_team="qianbao contributors",
        fuzzy=False,
    )
    for msgid, note in all_msgids():
        old = existing.get(msgid) if existing is not None else None
        translated = old.string if old is not None and isinstance(old.string, str) else ""
        flags = sorted(old.flags) if old is not None else []
        catalog.add(msgid, translated, auto_comments=[note], flags=flags)
    return catalog


def catalog_bytes(catalog: Catalog) -> bytes:
    buffer = io.BytesIO()
    write_po(buffer, catalog, width=0)
    return buffer.getvalue()


def catalog_problems(language: str, catalog: Catalog | None = None) -> list[str]:
    """Everything that keeps a catalog (by default the shipped one) from shipping; empty when it is
    complete and compiles."""
    catalog = catalog if catalog is not None else load_catalog(language)
    problems: list[str] = []
    expected = [msgid for msgid, _note in all_msgids()]
    present = {m.id: m for m in catalog if isinstance(m.id, str) and m.id}
    problems += [f"missing msgid {msgid}" for msgid in expected if msgid not in present]
    problems += [f"msgid not in the registry: {msgid}" for msgid in present if msgid not in expected]
    problems += [f"obsolete entry {msgid}" for msgid in catalog.obsolete]
    for msgid, message in present.items():
        text = message.string if isinstance(message.string, str) else ""
        if message.fuzzy:
            problems.append(f"fuzzy entry {msgid}")
        if not text.strip():
            problems.append(f"untranslated {msgid}")
            continue
        kind = "until" if msgid.endswith(".until") else msgid.split(".", 1)[0]
        allowed = allowed_placeholders(msgid)
        used = placeholders(text)
        if used is None:
            problems.append(f"{msgid}: unbalanced braces")
        elif not used <= allowed:
            problems.append(f"{msgid}: unknown placeholder(s) {sorted(used - allowed)}")
        elif kind == "until" and "until" not in used:
            problems.append(f"{msgid}: the .until variant must show {{until}}")
    problems += [
        f"Babel check: {message.id}: {error}" for message, errors in catalog.check() for error in errors
    ]
    try:
        write_mo(io.BytesIO(), catalog)
    except Exception as exc:  # noqa: BLE001 - any failure to compile is a problem to report
        problems.append(f"does not compile: {exc}")
    return problems


def allowed_placeholders(msgid: str) -> set[str]:
    """The `{names}` the renderer fills for a msgid."""
    variant = VARIANT_BY_MSGID.get(msgid)
    if variant is not None:
        return set(variant.params)
    kind = "until" if msgid.endswith(".until") else msgid.split(".", 1)[0]
    return ALLOWED_PLACEHOLDERS.get(kind, set())


def placeholders(text: str) -> set[str] | None:
    """The `{name}` fields of a message, or None when its braces do not parse."""
    try:
        return {name for _literal, name, _spec, _conv in string.Formatter().parse(text) if name is not None}
    except ValueError:
        return None


# -- docs/errors.md ----------------------------------------------------------------------------------

DOCS_INTRO = """\
# Error codes

<!-- Generated by `qianbao errors docs --output docs/errors.md` from src/qianbao/error_codes.py and the
catalogs in src/qianbao/locale/. Do not edit by hand: tests/unit/test_error_catalog.py checks it. -->

Every error the API answers is an `application/problem+json` body (RFC 9457):

| field | meaning |
|---|---|
| `type`, `title`, `status`, `detail` | RFC 9457; `detail` is technical English for integrators |
| `code` | the stable snake_case code listed below: match on this, never on text |
| `user_message` | what went wrong and what to do, for a person, in the negotiated language: the most \
specific message the error has (see [Specific messages](#specific-messages)), else its code's |
| `next_step` | what the user can do about it (a stable name, listed below); absent when nothing helps |
| `next_step_message` | the same, in words, in the negotiated language |
| `support_reference` | what the user quotes to customer service: the transfer or payment id when the \
declined operation has one, else the request's id |

Extra fields (`remaining`, `limit`, `kyc_tier`, `challenge_id`, `methods`, `retry_after`, `transfer_id`,
`locked_until`, `errors`…) are documented with each code. An error may carry a more precise `next_step`
than its code's default (for example `limit_exceeded_single` says `contact_support` when no higher tier
exists).

Every response, error or not, has an `X-Request-Id` header; a problem's `support_reference` is that id
unless the operation has its own.

**Language.** `user_message` and `next_step_message` follow `Accept-Language` with its q-values: any
Chinese tag (`zh`, `zh-CN`, `zh-Hans`, `zh-Hans-CN`…) gives `zh-CN`, `en-*` gives `en`, and anything
else, or no header, gives `en`. Replaying an `Idempotency-Key` returns the first answer as it was,
in its first language.

**Which field, and what is wrong with it.** Bad input (`validation_error`) names the field it concerns:
`field` holds its JSON path (`amount.currency`, `to.wallet_id`) and `user_message` says what is wrong
with it and how to put it right, in both languages ("Did you mean CNY? Currency codes are
upper-case." / "您是想填写 CNY 吗？币种代码须为大写字母。"). A request refused by schema validation
has `errors[]`, one entry per problem found, each with:

| field | meaning |
|---|---|
| `loc`, `msg`, `type` | where pydantic found it (`["body", "amount", "currency"]`), its English \
message and its error type |
| `field` | the JSON path of `loc` without its first part (`amount.currency`, `events[0]`); absent for \
the body as a whole |
| `message` | the same as `user_message` would say about this entry, in the negotiated language |

The problem's `user_message` is the first entry's `message`. A body that is not JSON, or is sent with
another `Content-Type` (a form, `text/plain`), is told to be sent as JSON with
`Content-Type: application/json`.

The texts live in gettext catalogs, `src/qianbao/locale/{en,zh_CN}/LC_MESSAGES/qianbao.po`. To add a
code, a specific message or a field label, see the top of `src/qianbao/error_codes.py`.
"""

SPECIFIC_INTRO = """\
## Specific messages

A code's message (above) is what the user reads when nothing more precise is known. Most errors know
more, and carry one of these messages instead (msgid `error.<code>.<variant>`); the code, status and
next step stay those of the code. Placeholders: `{field}` (and `{other}`) is a field, shown by its label
(see [Field names](#field-names)) or else as its JSON path; `{choices}` and `{names}` a list of values,
`{min}`, `{max}`, `{than}` and `{years}` numbers, `{currency}` and `{suggestion}` currency codes. Bad input
that names a field but has no more precise message gets `validation_error` / `invalid`.
"""

FIELDS_INTRO = """\
## Field names

How `{field}` names a field: the label of the last segment of its JSON path (`amount.currency` →
`currency`); a field without a label is shown as its path, quoted (`"previous_secret_valid_s"`,
`「previous_secret_valid_s」`).
"""


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("|", "\\|")).strip()


def errors_markdown() -> str:
    """docs/errors.md: the next steps, then every code by area, with both languages' messages."""
    en, zh = messages("en"), messages("zh-CN")
    lines = [DOCS_INTRO, "## Next steps", ""]
    lines += ["| `next_step` | meaning | en | zh-CN |", "|---|---|---|---|"]
    for step in NEXT_STEPS:
        lines.append(
            f"| `{step.name}` | {_cell(step.when)} | {_cell(en.get(step.msgid, ''))} "
            f"| {_cell(zh.get(step.msgid, ''))} |"
        )
        if step.until_msgid is not None:
            lines.append(
                f"| `{step.name}` (end known) | the same, when the error carries the lock's end "
                f"| {_cell(en.get(step.until_msgid, ''))} | {_cell(zh.get(step.until_msgid, ''))} |"
            )
    lines += [
        "",
        "`{reference}` stands for the problem's `support_reference`; `{until}` for the lock's end.",
        "",
    ]
    for area in AREAS:
        entries = [entry for entry in ERROR_CODES if entry.area == area]
        if not entries:
            continue
        lines += [f"## {area}", ""]
        lines += ["| code | HTTP | when it happens | en | zh-CN | next step |", "|---|---|---|---|---|---|"]
        for entry in entries:
            next_step = f"`{entry.next_step}`" if entry.next_step else "—"
            lines.append(
                f"| `{entry.code}` | {entry.status} | {_cell(entry.when)} | {_cell(en.get(entry.msgid, ''))} "
                f"| {_cell(zh.get(entry.msgid, ''))} | {next_step} |"
            )
        lines.append("")
    lines += [SPECIFIC_INTRO, "| msgid | when | en | zh-CN |", "|---|---|---|---|"]
    for v in MESSAGE_VARIANTS:
        lines.append(
            f"| `{v.msgid}` | {_cell(v.when)} | {_cell(en.get(v.msgid, ''))} | {_cell(zh.get(v.msgid, ''))} |"
        )
    lines += ["", FIELDS_INTRO, "| field | en | zh-CN |", "|---|---|---|"]
    for label in FIELD_LABELS:
        lines.append(
            f"| `{label.name}` | {_cell(en.get(label.msgid, ''))} | {_cell(zh.get(label.msgid, ''))} |"
        )
    lines.append("")
    return "\n".join(lines)
