"""Events, pure rules: who an event is about, subscriptions, webhook URLs, the retry schedule (jitter
bounds and the 24-hour cut-off), and notification rules and texts."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qianbao.events.model import (
    RETRY_CAP_S,
    RETRY_MIN_S,
    RETRY_WINDOW_S,
    event_body,
    filter_is_known,
    next_attempt_at,
    recipients,
    retry_ceiling_s,
    subscribed,
    url_problem,
)
from qianbao.events.notifications import notifications_for, render

S = 1_000_000  # microseconds in a second
T0 = 1_767_225_600 * S


class Fixed:
    """A 'random' source that always draws the same fraction of the range."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


# --- routing --------------------------------------------------------------------------------------------


def test_recipients_are_every_routing_key_once_in_order() -> None:
    payload = {
        "transfer_id": "trf_1",
        "from_user_id": "usr_a",
        "to_user_id": "usr_b",
        "payer_user_id": "usr_a",
        "merchant_user_id": "usr_m",
        "user_id": "usr_u",
        "merchant_id": "mch_1",  # not a person
        "owner_id": "usr_x",  # not a routing key
    }
    assert recipients(payload) == ("usr_u", "usr_a", "usr_b", "usr_m")


def test_recipients_ignore_empty_and_non_string_values() -> None:
    assert (
        recipients({"user_id": "", "from_user_id": None, "to_user_id": 5, "payer_user_id": ["usr_a"]}) == ()
    )


def test_subscriptions_match_exact_types_families_and_everything() -> None:
    assert subscribed(["transfer.succeeded"], "transfer.succeeded")
    assert not subscribed(["transfer.succeeded"], "transfer.failed")
    assert subscribed(["payment_intent.*"], "payment_intent.expired")
    assert not subscribed(["payment.*"], "payment_intent.expired")  # a family is up to the dot
    assert subscribed(["*"], "anything.at_all")
    assert not subscribed([], "transfer.succeeded")


@pytest.mark.parametrize(
    ("value", "known"),
    [
        ("*", True),
        ("transfer.succeeded", True),
        ("payment_intent.*", True),
        ("money_request.*", True),
        ("transfer.exploded", False),
        ("user.phone_changed", False),  # internal events are not in the catalogue
        ("nothing.*", False),
        ("", False),
        ("**", False),
    ],
)
def test_known_filters(value: str, known: bool) -> None:
    assert filter_is_known(value) is known


def test_the_body_is_compact_utf8_json_with_an_rfc3339_time() -> None:
    body = event_body("evt_1", "transfer.succeeded", T0, {"amount": {"amount": 100, "currency": "CNY"}})
    assert body == (
        b'{"id":"evt_1","type":"transfer.succeeded","created_at":"2026-01-01T00:00:00Z",'
        b'"data":{"amount":{"amount":100,"currency":"CNY"}}}'
    )
    assert json.loads(event_body("e", "t", T0, {"note": "钱包"}))["data"]["note"] == "钱包"


# --- URLs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example.com/hooks/qianbao",
        "https://shop.example.com:8443/hooks?account=7",
        "https://8.8.8.8/hooks",  # a literal public address
    ],
)
def test_production_accepts_public_https_urls(url: str) -> None:
    assert url_problem(url, production=True) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://shop.example.com/hooks", "https"),
        ("https://user:pass@shop.example.com/hooks", "credentials"),
        ("https://token@shop.example.com/hooks", "credentials"),
        ("https://127.0.0.1/hooks", "private"),
        ("https://localhost/hooks", "private"),
        ("https://api.localhost/hooks", "private"),
        ("https://10.1.2.3/hooks", "private"),
        ("https://203.0.113.9/hooks", "private"),  # documentation range: not global
        ("https://192.168.1.10/hooks", "private"),
        ("https://169.254.169.254/latest/meta-data", "private"),
        ("https://[::1]/hooks", "private"),
        ("https://[::ffff:127.0.0.1]/hooks", "private"),
        ("https://[fd00::1]/hooks", "private"),
        ("https://intranet/hooks", "private"),
        ("https://db.internal/hooks", "private"),
        ("https://printer.local/hooks", "private"),
        ("https://127.1/hooks", "private"),
        ("https://0x7f.1/hooks", "private"),
        ("https://shop.example.com/hooks#frag", "fragment"),
        ("ftp://shop.example.com/hooks", "https"),
        ("https:///hooks", "host"),
        ("https://shop.example.com:99999/hooks", "valid"),
        ("https://shop.example.com/ho oks", "spaces"),
        ("", "characters"),
        ("https://example.com/" + "a" * 2100, "characters"),
    ],
)
def test_production_refuses(url: str, why: str) -> None:
    problem = url_problem(url, production=True)
    assert problem is not None and why in problem


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hooks",
        "http://localhost:3000/webhooks",
        "http://LOCALHOST.:3000/webhooks",
        "http://[::1]:8080/",
        "https://127.0.0.1/hooks",
        "http://127.0.0.2:9000/hooks",  # all of 127.0.0.0/8 is this machine
    ],
)
def test_sandbox_allows_loopback_receivers_only_when_asked_to(url: str) -> None:
    assert url_problem(url, production=False, allow_loopback=True) is None
    problem = url_problem(url, production=False)
    assert problem is not None and "QIANBAO_WEBHOOKS_ALLOW_LOOPBACK" in problem
    assert url_problem(url, production=True, allow_loopback=True) is not None  # never in production


def test_sandbox_allows_public_https_receivers() -> None:
    assert url_problem("https://shop.example.com/hooks", production=False) is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://shop.example.com/hooks", "only to localhost"),
        ("http://192.168.1.4/hooks", "only to localhost"),
        ("http://user:pw@127.0.0.1/hooks", "credentials"),
        # The private network and metadata services are off limits in sandbox mode too.
        ("https://10.0.0.1/hooks", "private"),
        ("https://10.0.0.5/hooks", "private"),
        ("https://192.168.1.1/hooks", "private"),
        ("https://169.254.169.254/latest/meta-data", "private"),
        ("https://metadata.google.internal/computeMetadata/v1/", "private"),
        ("https://metadata/computeMetadata/v1/", "private"),
        ("https://instance-data/latest/meta-data", "private"),
        ("https://metadata.tencentyun.com/latest/meta-data", "private"),
        ("https://[fd00:ec2::254]/latest/meta-data", "private"),
        ("https://100.100.100.200/latest/meta-data", "private"),
        ("http://2130706433/hooks", "only to localhost"),  # 127.0.0.1, but not spelled as such
        ("https://2130706433/hooks", "private"),
        ("https://0x7f000001/hooks", "private"),
        ("https://017700000001/hooks", "private"),
    ],
)
def test_sandbox_still_refuses(url: str, why: str) -> None:
    for allow_loopback in (False, True):
        problem = url_problem(url, production=False, allow_loopback=allow_loopback)
        assert problem is not None and why in problem


# --- retries --------------------------------------------------------------------------------------------


def test_the_ceiling_doubles_from_ten_seconds_up_to_an_hour() -> None:
    assert [retry_ceiling_s(n) for n in range(1, 12)] == [
        10,
        20,
        40,
        80,
        160,
        320,
        640,
        1280,
        2560,
        3600,
        3600,
    ]
    assert retry_ceiling_s(1000) == RETRY_CAP_S
    with pytest.raises(ValueError):
        retry_ceiling_s(0)


@given(
    failures=st.integers(min_value=1, max_value=200),
    fraction=st.floats(min_value=0, max_value=1),
    age_s=st.integers(min_value=0, max_value=RETRY_WINDOW_S - 1),
)
def test_full_jitter_stays_within_its_bounds_and_the_window(
    failures: int, fraction: float, age_s: int
) -> None:
    now = T0 + age_s * S
    at = next_attempt_at(failures, now_us=now, event_created_us=T0, rng=Fixed(fraction))
    assert at is not None
    delay = at - now
    assert RETRY_MIN_S * S <= delay or at == T0 + RETRY_WINDOW_S * S  # at least a second, or the last try
    assert delay <= retry_ceiling_s(failures) * S
    assert at <= T0 + RETRY_WINDOW_S * S


def test_jitter_spreads_retries_over_the_whole_range() -> None:
    rng = random.Random(7)  # noqa: S311 - deterministic test data
    delays = [next_attempt_at(5, now_us=T0, event_created_us=T0, rng=rng) for _ in range(500)]
    seconds = [(d - T0) / S for d in delays if d is not None]
    assert min(seconds) < 20 and max(seconds) > 140  # the ceiling after 5 failures is 160 s
    assert all(RETRY_MIN_S <= s <= 160 for s in seconds)


def test_the_last_retry_is_at_the_end_of_the_window_then_it_gives_up() -> None:
    almost = T0 + (RETRY_WINDOW_S - 60) * S
    # A draw past the deadline is pulled back onto it: one last attempt at exactly 24 h.
    assert next_attempt_at(30, now_us=almost, event_created_us=T0, rng=Fixed(1.0)) == T0 + RETRY_WINDOW_S * S
    assert next_attempt_at(30, now_us=T0 + RETRY_WINDOW_S * S, event_created_us=T0, rng=Fixed(0.5)) is None
    assert next_attempt_at(1, now_us=T0 + 3 * RETRY_WINDOW_S * S, event_created_us=T0, rng=Fixed(0.0)) is None


def test_a_receiver_down_for_a_day_gets_a_bounded_number_of_attempts() -> None:
    now, failures = T0, 0
    rng = random.Random(1)  # noqa: S311 - deterministic test data
    while True:
        failures += 1
        at = next_attempt_at(failures, now_us=now, event_created_us=T0, rng=rng)
        if at is None:
            break
        assert at > now
        now = at
    assert now == T0 + RETRY_WINDOW_S * S  # the last attempt was at the deadline
    assert 20 <= failures <= 200


# --- notifications --------------------------------------------------------------------------------------

TRANSFER = {
    "transfer_id": "trf_1",
    "from_user_id": "usr_a",
    "to_user_id": "usr_b",
    "amount": {"amount": 123_450, "currency": "CNY"},
}


def test_both_sides_of_a_transfer_are_notified_but_not_a_move_between_own_wallets() -> None:
    assert notifications_for("transfer.succeeded", TRANSFER) == [
        ("usr_a", "transfer_sent"),
        ("usr_b", "transfer_received"),
    ]
    assert notifications_for("transfer.succeeded", {**TRANSFER, "to_user_id": "usr_a"}) == []
    assert notifications_for("transfer.failed", TRANSFER) == []


def test_payment_refund_budget_goal_and_request_rules() -> None:
    payment = {"payer_user_id": "usr_p", "merchant_user_id": "usr_m", "merchant_id": "mch_1"}
    assert notifications_for("payment.succeeded", payment) == [
        ("usr_p", "payment_paid"),
        ("usr_m", "payment_received"),
    ]
    assert notifications_for("refund.succeeded", payment) == [
        ("usr_p", "refund_received"),
        ("usr_m", "refund_sent"),
    ]
    assert notifications_for("wallet.budget_threshold_reached", {"user_id": "usr_u"}) == [
        ("usr_u", "budget_threshold")
    ]
    assert notifications_for("wallet.goal_reached", {"user_id": "usr_u"}) == [("usr_u", "goal_reached")]
    # Money would flow from the person asked (from_user_id) to the requester (to_user_id).
    request = {"from_user_id": "usr_payer", "to_user_id": "usr_asker"}
    assert notifications_for("money_request.created", request) == [("usr_payer", "money_request_received")]
    assert notifications_for("money_request.declined", request) == [("usr_asker", "money_request_declined")]
    assert notifications_for("money_request.canceled", request) == [("usr_payer", "money_request_canceled")]
    assert notifications_for("money_request.paid", request) == []  # its transfer.succeeded tells both
    held = {"payer_user_id": "usr_p", "merchant_user_id": "usr_m"}
    assert notifications_for("payment.confirmation_required", held) == [
        ("usr_p", "payment_confirmation_required")
    ]


def test_texts_in_both_languages_with_formatted_amounts() -> None:
    assert render("transfer_received", TRANSFER, "en") == ("Money received", "You received ¥1,234.50.")
    assert render("transfer_received", TRANSFER, "zh-CN") == ("收到转账", "您收到一笔转账 ¥1,234.50。")
    assert render("transfer_sent", TRANSFER, "en")[1] == "You sent ¥1,234.50."
    assert render("budget_threshold", {"threshold": 80}, "zh-CN") == (
        "预算提醒",
        "该钱包本月预算已使用 80%。",
    )
    goal = {"target": {"amount": 500_000, "currency": "CNY"}}
    assert (
        render("goal_reached", goal, "en")[1] == "Congratulations! Your savings goal of ¥5,000.00 is reached."
    )


def test_names_fill_the_texts_and_a_missing_name_leaves_the_sentence_without_names() -> None:
    assert render("transfer_sent", TRANSFER, "en", {"party": "*四"})[1] == "You sent ¥1,234.50 to *四."
    assert (
        render("transfer_received", TRANSFER, "zh-CN", {"party": "*丽"})[1] == "您收到 *丽 的转账 ¥1,234.50。"
    )
    # The merchant's side needs both its shop and the payer; with one missing, neither is shown.
    assert render("payment_received", TRANSFER, "en", {"party": "*丽"})[1] == (
        "Your shop received a payment of ¥1,234.50."
    )
    assert render("payment_received", TRANSFER, "en", {"party": "*丽", "shop": "李记面馆"})[1] == (
        "李记面馆 received ¥1,234.50 from *丽."
    )
    # A name is text, never a template.
    assert render("payment_paid", TRANSFER, "en", {"party": "{amount} {percent}"})[1] == (
        "You paid {amount} {percent} ¥1,234.50."
    )


def test_missing_amounts_fall_back_to_a_sentence_without_them() -> None:
    assert render("transfer_received", {}, "en") == ("Money received", "Open the app for details.")
    assert (
        render("budget_threshold", {}, "en")[1]
        == "You have reached a budget threshold for this wallet this month."
    )
    bad = {"amount": {"amount": "12", "currency": "CNY"}}
    assert render("payment_paid", bad, "zh-CN") == ("支付成功", "请打开应用查看详情。")
    assert render("unknown_kind", TRANSFER, "fr")[0] == "unknown_kind"
