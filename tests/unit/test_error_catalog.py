"""The error-code registry, its gettext catalogs and docs/errors.md: complete, consistent, never drifting.

Also: every code the source raises is registered (an AST scan of src/ plus the error classes actually
defined), Accept-Language negotiation, and how a problem body is assembled from the registry."""

from __future__ import annotations

import ast
import copy
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from babel.messages.mofile import write_mo
from babel.support import Translations
from starlette.requests import Request
from typer.testing import CliRunner

import qianbao
import qianbao.api.app  # noqa: F401 - imports every route and service, so every error class is defined
from qianbao.api.problems import STATUS_BY_CODE, problem
from qianbao.cli.errors import (
    ALLOWED_PLACEHOLDERS,
    catalog_bytes,
    catalog_problems,
    errors_markdown,
    synced_catalog,
)
from qianbao.cli.errors import app as errors_app
from qianbao.error_codes import (
    AREAS,
    BY_CODE,
    ERROR_CODES,
    NEXT_STEP_BY_NAME,
    NEXT_STEPS,
    VARIANT_BY_MSGID,
    all_msgids,
)
from qianbao.error_messages import (
    LANGUAGES,
    format_until,
    load_catalog,
    messages,
    negotiate_language,
    next_step_message,
)
from qianbao.errors import QianbaoError
from qianbao.payments.engine.rules import LEDGER_DECLINES

SRC = Path(qianbao.__file__).resolve().parent
REPO = SRC.parent.parent
CJK = re.compile(r"[\u4e00-\u9fff]")
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")

# -- the registry ------------------------------------------------------------------------------------


def test_codes_and_next_steps_are_unique_stable_names() -> None:
    codes = [entry.code for entry in ERROR_CODES]
    assert len(codes) == len(set(codes))
    steps = [step.name for step in NEXT_STEPS]
    assert len(steps) == len(set(steps))
    for name in codes + steps:
        assert SNAKE.match(name), name
    for entry in ERROR_CODES:
        assert 200 <= entry.status <= 599, entry
        assert entry.next_step is None or entry.next_step in NEXT_STEP_BY_NAME, entry
        assert entry.area in AREAS and entry.when.strip(), entry


def test_status_by_code_is_derived_from_the_registry() -> None:
    assert {entry.code: entry.status for entry in ERROR_CODES} == STATUS_BY_CODE


@pytest.mark.parametrize(
    ("code", "status", "next_step"),
    [
        # API.md's stable codes keep their statuses.
        ("validation_error", 422, "check_input"),
        ("unauthenticated", 401, "sign_in"),
        ("forbidden", 403, None),
        ("not_found", 404, None),
        ("idempotency_key_reused", 409, None),
        ("insufficient_funds", 422, "top_up"),
        ("currency_mismatch", 422, "check_input"),
        ("same_wallet", 422, "check_input"),
        ("limit_exceeded_single", 422, "verify_identity"),
        ("limit_exceeded_daily", 422, "try_tomorrow"),
        ("balance_cap_exceeded", 422, "lower_amount"),
        ("wallet_frozen", 423, "contact_support"),
        ("step_up_required", 401, "confirm_identity"),
        ("recipient_not_found", 404, "check_input"),
        ("rate_limited", 429, "retry_later"),
        ("risk_declined", 422, "contact_support"),
        # Codes of the payments issue, registered ahead of their code.
        ("merchant_not_found", 404, "check_input"),
        ("qr_code_invalid", 422, "check_input"),
        ("qr_code_expired", 422, "ask_merchant"),
        ("qr_code_used", 409, "ask_merchant"),
        ("amount_mismatch", 422, "check_input"),
        ("payment_code_invalid", 422, "refresh_code"),
        ("payment_confirmation_expired", 422, "retry"),
        ("refund_exceeds_payment", 422, "lower_amount"),
        ("payment_not_refundable", 409, "contact_support"),
        ("intent_state_conflict", 409, None),
        ("intent_expired", 422, "ask_merchant"),
        ("wallet_locked", 423, "try_after_unlock"),
        ("budget_exceeded", 422, "adjust_budget"),
        ("wallet_close_refused", 409, None),
        ("request_not_pending", 409, None),
        ("merchant_inactive", 423, "contact_merchant"),
    ],
)
def test_registered_statuses_and_next_steps(code: str, status: int, next_step: str | None) -> None:
    entry = BY_CODE[code]
    assert (entry.status, entry.next_step) == (status, next_step)


# -- messages in both languages ----------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(BY_CODE))
def test_every_code_has_a_message_in_both_languages(code: str) -> None:
    msgid = BY_CODE[code].msgid
    en, zh = messages("en")[msgid], messages("zh-CN")[msgid]
    assert en.strip() and zh.strip()
    assert CJK.search(zh), zh
    assert not CJK.search(en), en
    assert en != zh


@pytest.mark.parametrize("step", [step.name for step in NEXT_STEPS])
def test_every_next_step_has_a_message_in_both_languages(step: str) -> None:
    en = next_step_message(step, "en", reference="req_x", until=None)
    zh = next_step_message(step, "zh-CN", reference="req_x", until=None)
    assert en and zh and en != zh
    assert CJK.search(zh) and not CJK.search(en)
    assert "{" not in en + zh  # every placeholder was filled


def test_a_few_messages_read_as_written() -> None:
    assert messages("zh-CN")["error.insufficient_funds"] == "余额不足，请充值或降低金额。"
    assert messages("en")["error.not_found"] == "We couldn't find that."
    assert (
        next_step_message("contact_support", "zh-CN", reference="trf_1")
        == "请联系客服，并提供参考编号 trf_1。"
    )
    assert next_step_message("contact_support", "en", reference="trf_1") == (
        "Contact customer service and quote reference trf_1."
    )
    assert next_step_message("no_such_step", "en", reference="x") is None


# -- the catalogs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_catalogs_are_complete_and_compile(language: str) -> None:
    catalog = load_catalog(language)
    assert catalog_problems(language) == []
    assert not [m.id for m in catalog if m.id and (m.fuzzy or not m.string)]
    assert not list(catalog.check())
    # Compiled to .mo by Babel, the catalog answers gettext look-ups with the same texts.
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    translations = Translations(compiled, domain="qianbao")
    for msgid, _note in all_msgids():
        assert translations.gettext(msgid) == messages(language)[msgid]


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_catalog_check_finds_what_must_not_ship(language: str) -> None:
    broken = copy.deepcopy(load_catalog(language))
    broken["error.insufficient_funds"].flags.add("fuzzy")
    broken["error.same_wallet"].string = ""
    broken["next_step.top_up"].string = "Top up {amount}"
    broken["next_step.contact_support"].string = "Quote {reference"
    broken.add("error.retired_code", "Old text")
    del broken["error.wallet_frozen"]
    found = catalog_problems(language, broken)
    assert "fuzzy entry error.insufficient_funds" in found
    assert "untranslated error.same_wallet" in found
    assert "next_step.top_up: unknown placeholder(s) ['amount']" in found
    assert "next_step.contact_support: unbalanced braces" in found
    assert "msgid not in the registry: error.retired_code" in found
    assert "missing msgid error.wallet_frozen" in found


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_committed_catalogs_are_in_sync_with_the_registry(language: str) -> None:
    """`qianbao errors sync-catalogs` would change nothing: same entries, order and translator notes."""
    current = load_catalog(language)
    synced = synced_catalog(language, current)

    def entries(catalog: Any) -> list[tuple[Any, ...]]:
        # Notes are compared as text: written to a .po, a long one comes back as several lines.
        return [(m.id, m.string, " ".join(m.auto_comments), sorted(m.flags)) for m in catalog if m.id]

    assert entries(synced) == entries(current)
    committed = (SRC / "locale" / current.locale_identifier / "LC_MESSAGES" / "qianbao.po").read_bytes()

    def without_generator(po: bytes) -> bytes:  # the Babel version that wrote it does not matter
        return re.sub(rb'"Generated-By: [^"]*"\n', b"", po)

    assert without_generator(catalog_bytes(synced)) == without_generator(committed)


def test_placeholders_are_only_those_the_renderer_fills() -> None:
    """A code's own message has none; a specific message only those its variant declares."""
    assert ALLOWED_PLACEHOLDERS["error"] == set()
    for language in LANGUAGES:
        for msgid, text in messages(language).items():
            if msgid.startswith("error.") and msgid not in VARIANT_BY_MSGID:
                assert "{" not in text and "}" not in text, msgid
            if msgid.startswith("field."):
                assert "{" not in text and "}" not in text, msgid
    broken = copy.deepcopy(load_catalog("en"))
    broken["error.validation_error.too_long"].string = "{field} is longer than {limit}."
    found = catalog_problems("en", broken)
    assert "error.validation_error.too_long: unknown placeholder(s) ['limit']" in found


# -- docs/errors.md ----------------------------------------------------------------------------------


def test_docs_errors_md_is_the_generated_text() -> None:
    committed = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    assert committed == errors_markdown(), "run `qianbao errors docs --output docs/errors.md`"


def test_the_docs_list_every_code_with_both_messages() -> None:
    text = errors_markdown()
    for entry in ERROR_CODES:
        [row] = [line for line in text.splitlines() if line.startswith(f"| `{entry.code}` |")]
        assert f"| {entry.status} |" in row
        assert messages("en")[entry.msgid].replace("|", "\\|") in row
        assert messages("zh-CN")[entry.msgid] in row
        assert (f"`{entry.next_step}`" if entry.next_step else "—") in row


# -- the CLI -----------------------------------------------------------------------------------------


def test_the_qianbao_command_has_the_errors_group() -> None:
    from qianbao.cli.main import app as cli_app

    result = CliRunner().invoke(cli_app, ["errors", "list"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("insufficient_funds\t422\ttop_up\t")


def test_cli_lists_codes_in_both_languages() -> None:
    runner = CliRunner()
    result = runner.invoke(errors_app, ["list", "--json", "--language", "zh-CN"])
    assert result.exit_code == 0, result.output
    rows = {row["code"]: row for row in json.loads(result.output)}
    assert rows.keys() == BY_CODE.keys()
    assert rows["insufficient_funds"] == {
        "code": "insufficient_funds",
        "status": 422,
        "next_step": "top_up",
        "user_message": "余额不足，请充值或降低金额。",
    }
    plain = runner.invoke(errors_app, ["list"])
    assert "wallet_locked\t423\ttry_after_unlock\t" in plain.output
    assert runner.invoke(errors_app, ["list", "--language", "fr"]).exit_code == 2


def test_cli_docs_check_catches_drift(tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "errors.md"
    assert runner.invoke(errors_app, ["docs", "--output", str(target), "--check"]).exit_code == 1
    assert runner.invoke(errors_app, ["docs", "--output", str(target)]).exit_code == 0
    assert target.read_text(encoding="utf-8") == errors_markdown()
    assert runner.invoke(errors_app, ["docs", "--output", str(target), "--check"]).exit_code == 0
    target.write_text(errors_markdown() + "edited by hand\n", encoding="utf-8")
    assert runner.invoke(errors_app, ["docs", "--output", str(target), "--check"]).exit_code == 1
    assert runner.invoke(errors_app, ["docs"]).output == errors_markdown()


def test_cli_check_passes_and_sync_seeds_new_catalogs(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(errors_app, ["check"]).exit_code == 0
    result = runner.invoke(errors_app, ["sync-catalogs", "--locale-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    seeded = (tmp_path / "zh_CN" / "LC_MESSAGES" / "qianbao.po").read_text(encoding="utf-8")
    # A fresh catalog holds every msgid, untranslated, with the registry's note for the translator.
    assert seeded.count('msgstr ""') == len(all_msgids()) + 1  # + the header
    assert "#. insufficient_funds (422): The paying wallet" in seeded


# -- every code in the source is registered ----------------------------------------------------------

# Error constructors and helpers whose argument `code` is an error code (positional index or keyword).
ERROR_FACTORY_NAMES = {"problem": 1}
# A rule's finding (`qianbao.findings.Finding`) carries the code of the error it becomes
# (payments/engine/declines.py); the ledger verifier's own `Finding` is something else.
FINDING_IMPORT = "from qianbao.findings import Finding"


def _error_classes() -> Iterator[type[QianbaoError]]:
    pending: list[type[QianbaoError]] = [QianbaoError]
    while pending:
        cls = pending.pop()
        yield cls
        pending.extend(cls.__subclasses__())


def _code_factories(tree: ast.Module) -> dict[str, int]:
    """Names that take an error code: error classes whose __init__ starts with `code`, and functions
    with a `code: str` parameter that return an error (`-> ...Error`, `-> PaymentDeclined`)."""
    factories = dict(ERROR_FACTORY_NAMES)
    for cls in _error_classes():
        init = cls.__dict__.get("__init__")
        varnames = getattr(getattr(init, "__code__", None), "co_varnames", ())
        if len(varnames) > 1 and varnames[1] == "code":
            factories[cls.__name__] = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.returns is not None:
            returns = ast.unparse(node.returns)
            names = [a.arg for a in node.args.posonlyargs + node.args.args]
            if "code" in names and re.search(r"Error|Declined", returns):
                factories[node.name] = names.index("code")
    return factories


def codes_in_source(sources: dict[str, str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(error codes, next steps) that the given sources use literally, each with where."""
    trees = {name: ast.parse(text, filename=name) for name, text in sources.items()}
    factories: dict[str, int] = {}
    for tree in trees.values():
        factories.update(_code_factories(tree))
    codes: dict[str, set[str]] = {}
    steps: dict[str, set[str]] = {}

    def found(table: dict[str, set[str]], value: ast.AST | None, where: str) -> None:
        for node in ast.walk(value) if value is not None else ():
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                table.setdefault(node.value, set()).add(where)

    for name, tree in trees.items():
        known = {**factories, "Finding": 0} if FINDING_IMPORT in sources[name] else factories
        for node in ast.walk(tree):
            where = f"{name}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.ClassDef) and node.bases:
                for statement in node.body:
                    target = statement.targets[0] if isinstance(statement, ast.Assign) else None
                    if isinstance(statement, ast.AnnAssign):
                        target = statement.target
                    # Only a literal: `code: str = Field(description=...)` in a schema is no error code.
                    value = getattr(statement, "value", None)
                    literal = isinstance(value, ast.Constant)
                    if isinstance(target, ast.Name) and target.id == "code" and literal:
                        found(codes, value, where)
            elif isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                index = known.get(called) if isinstance(called, str) else None
                if index is not None and len(node.args) > index:
                    argument = node.args[index]
                    if isinstance(argument, ast.Constant):  # a literal; computed codes are checked below
                        found(codes, argument, where)
                for keyword in node.keywords:
                    if keyword.arg == "code" and index is not None:
                        found(codes, keyword.value, where)
                    if keyword.arg == "next_step":
                        found(steps, keyword.value, where)
            elif isinstance(node, ast.Assign):  # extra["next_step"] = ...
                for target in node.targets:
                    if (
                        isinstance(target, ast.Subscript)
                        and isinstance(target.slice, ast.Constant)
                        and target.slice.value == "next_step"
                    ):
                        found(steps, node.value, where)
    return codes, steps


def _sources() -> dict[str, str]:
    return {
        str(path.relative_to(SRC.parent)): path.read_text(encoding="utf-8")
        for path in sorted(SRC.rglob("*.py"))
        if "migrations" not in path.parts
    }


def test_every_code_raised_in_src_is_registered() -> None:
    codes, _steps = codes_in_source(_sources())
    assert {"insufficient_funds", "pin_locked", "same_wallet", "limit_exceeded_daily"} <= codes.keys()
    missing = {code: sorted(where) for code, where in codes.items() if code not in BY_CODE}
    assert not missing, f"register these in src/qianbao/error_codes.py: {missing}"


def test_every_error_class_code_is_registered() -> None:
    defined = {cls.__dict__["code"] for cls in _error_classes() if isinstance(cls.__dict__.get("code"), str)}
    assert {"validation_error", "recipient_not_found", "idempotency_key_in_use"} <= defined
    assert defined <= BY_CODE.keys(), defined - BY_CODE.keys()


def test_ledger_declines_map_to_registered_codes() -> None:
    assert set(LEDGER_DECLINES.values()) <= BY_CODE.keys()


def test_every_next_step_used_in_src_is_registered() -> None:
    _codes, steps = codes_in_source(_sources())
    assert {"verify_identity", "lower_amount", "try_tomorrow", "contact_support"} <= steps.keys()
    missing = {step: sorted(where) for step, where in steps.items() if step not in NEXT_STEP_BY_NAME}
    assert not missing, f"add these next steps to NEXT_STEPS: {missing}"


def test_the_source_scan_finds_unregistered_codes() -> None:
    source = """
from qianbao.errors import Conflict, Locked, QianbaoError

class Gone(Conflict):
    code = "brand_new_gone"

class CodeOut(BaseModel):
    code: str = Field(description="a payment code's digits")

def refuse(code: str, detail: str) -> QianbaoError:
    return Locked(code, detail)

def use() -> None:
    raise Locked("brand_new_locked", "locked", next_step="brand_new_step")
    raise refuse("brand_new_refused", "x")
    raise Locked(code="brand_new_keyword", detail="x")
"""
    codes, steps = codes_in_source({"example.py": source})
    assert {"brand_new_gone", "brand_new_locked", "brand_new_refused", "brand_new_keyword"} <= codes.keys()
    assert "brand_new_step" in steps
    assert "a payment code's digits" not in codes


# -- Accept-Language ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("", "en"),
        ("zh-CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans", "zh-CN"),
        ("zh-Hans-CN", "zh-CN"),
        ("ZH-cn", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("en", "en"),
        ("en-US,en;q=0.9", "en"),
        ("fr-FR,fr;q=0.9", "en"),
        ("*", "en"),
        ("fr-FR, zh;q=0.5, en;q=0.4", "zh-CN"),
        ("en;q=0.4, zh-CN;q=0.8", "zh-CN"),
        ("zh-CN;q=0.1, en;q=0.9", "en"),
        ("en;q=0, zh", "zh-CN"),
        ("zh;q=0", "en"),
        ("zh-CN;q=1.0, en;q=1.0", "zh-CN"),  # a tie: the first listed
        ("en;q=0.8, zh;q=abc", "en"),  # a malformed q-value drops its entry
        ("zh;q=2, en;q=0.5", "en"),  # so does one out of range
        ("de;q=0.9, *;q=0.8, zh;q=0.7", "en"),
        ("zh-CN;level=1;q=0.9, en;q=0.5", "zh-CN"),
        (" , ;q=0.5,zh-CN", "zh-CN"),
    ],
)
def test_accept_language_negotiation(header: str | None, language: str) -> None:
    assert negotiate_language(header) == language


# -- assembling a problem ----------------------------------------------------------------------------


def _request(accept_language: str | None = None) -> Request:
    headers = [] if accept_language is None else [(b"accept-language", accept_language.encode())]
    return Request(
        {"type": "http", "method": "POST", "path": "/v1/x", "headers": headers, "query_string": b""}
    )


def _body(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(bytes(response.body))
    return body


def test_a_problem_gets_its_codes_next_step_and_a_reference() -> None:
    request = _request("zh-CN")
    response = problem(request, "insufficient_funds", "the wallet's available balance is too low")
    body = _body(response)
    assert response.status_code == 422
    assert body["user_message"] == "余额不足，请充值或降低金额。"
    assert body["next_step"] == "top_up" and body["next_step_message"] == "请先充值，再重新支付。"
    assert body["support_reference"].startswith("req_")
    assert response.headers["x-request-id"] == body["support_reference"]
    # The same request keeps its id.
    assert _body(problem(request, "not_found", "x"))["support_reference"] == body["support_reference"]


def test_the_errors_own_next_step_wins_and_the_operation_id_is_the_reference() -> None:
    body = _body(
        problem(
            _request("en"),
            "limit_exceeded_daily",
            "over the daily limit",
            next_step="verify_identity",
            transfer_id="trf_0abc",
        )
    )
    assert body["next_step"] == "verify_identity"
    assert body["next_step_message"] == "Complete real-name verification to raise your limits."
    assert body["support_reference"] == "trf_0abc" and body["transfer_id"] == "trf_0abc"
    support = _body(problem(_request("en"), "risk_declined", "declined", payment_id="pay_9"))
    assert support["next_step_message"] == "Contact customer service and quote reference pay_9."


def test_unregistered_codes_and_steps_fall_back() -> None:
    body = _body(problem(_request("zh-CN"), "something_new", "x", next_step="something_else"))
    assert body["status"] == 422 and body["user_message"] == "提交的信息有误。"
    assert body["next_step"] == "something_else" and "next_step_message" not in body
    failed = _body(problem(_request("en"), "something_broken", "x", status=500))
    assert failed["user_message"] == "Something went wrong on our side. Please try again later."
    assert "next_step" not in failed and failed["support_reference"].startswith("req_")
    plain = _body(problem(_request("en"), "forbidden", "x"))
    assert "next_step" not in plain and "next_step_message" not in plain


def test_a_lock_names_its_end_in_the_users_language() -> None:
    # 2026-03-01 06:30 UTC is 14:30 in Beijing.
    until_us = int(datetime(2026, 3, 1, 6, 30, tzinfo=UTC).timestamp()) * 1_000_000
    zh = _body(problem(_request("zh-CN"), "pin_locked", "locked", retry_after=60, locked_until_us=until_us))
    assert zh["next_step"] == "try_after_unlock"
    assert zh["next_step_message"] == "请于北京时间 2026年3月1日 14:30 锁定结束后再试。"
    en = _body(problem(_request("en"), "wallet_locked", "locked", locked_until="2026-03-01"))
    assert en["next_step_message"] == "Try again after March 1, 2026 (Beijing time), when the lock ends."
    unknown = _body(problem(_request("en"), "wallet_locked", "locked", locked_until="soon"))
    assert unknown["next_step_message"] == "Try again after the lock ends."


@pytest.mark.parametrize(
    ("value", "language", "shown"),
    [
        ("2026-03-01", "zh-CN", "2026年3月1日"),
        ("2026-02-28T16:00:00Z", "zh-CN", "2026年3月1日"),  # midnight in Beijing: the date alone
        ("2026-03-01T06:30:00+00:00", "en", "March 1, 2026 2:30 PM"),
        (date(2026, 3, 1), "en", "March 1, 2026"),
        (datetime(2026, 3, 1, 6, 30, tzinfo=UTC), "zh-CN", "2026年3月1日 14:30"),
        ("not a date", "en", None),
        (True, "en", None),
        (None, "en", None),
    ],
)
def test_format_until(value: object, language: str, shown: str | None) -> None:
    formatted = format_until(value, language)
    # CLDR puts a narrow no-break space before AM/PM.
    assert (formatted.replace("\u202f", " ") if formatted else formatted) == shown
