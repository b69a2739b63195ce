"""Named rate limits on the in-memory storage and on a real Redis.

Redis comes from QIANBAO_TEST_REDIS_URL (default redis://127.0.0.1:6379/15). Each test uses its own key
prefix and deletes its keys afterwards. If Redis is not reachable, its tests are skipped, except with
CI=true, where they fail (as PostgreSQL's do in tests/conftest.py).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from qianbao.errors import RateLimited, ServiceUnavailable
from qianbao.security.ratelimit import DEFAULT_RULES, RateLimiter

REDIS_URL = os.environ.get("QIANBAO_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
DOWN_REDIS_URL = "redis://127.0.0.1:6390/15"  # nothing listens there
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PHONE = "+8613800138000"

RULES = {
    "one_per_minute": "1/minute",
    "three_per_minute": "3/minute",
    "minute_then_hour": "1/minute;5/hour",
    "hour_binds_first": "5/minute;2/hour",
    "cost_rule": "4/minute;5/hour",
    "one_per_second": "1/second",
}

MakeLimiter = Callable[..., RateLimiter]


@pytest.fixture(scope="module")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"Redis at {REDIS_URL} is not reachable: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: Redis tests must run)")
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def key_prefix() -> str:
    return f"t{os.getpid()}-{secrets.token_hex(4)}"


def _keys(client: redis.Redis, prefix: str) -> list[str]:
    return [key.decode() for key in client.scan_iter(match=f"*/{prefix}/*", count=1000)]


@pytest.fixture(params=["memory", "redis"])
def storage_uri(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return "memory://"


@pytest.fixture
def make_limiter(storage_uri: str, key_prefix: str) -> Iterator[MakeLimiter]:
    """Builds limiters on this test's storage and prefix; closes them and deletes their Redis keys."""
    made: list[RateLimiter] = []

    def make(rules: dict[str, str] | None = None) -> RateLimiter:
        limiter = RateLimiter(storage_uri, RULES if rules is None else rules, key_prefix=key_prefix)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        limiter.close()
    if storage_uri.startswith("redis"):
        client = redis.Redis.from_url(storage_uri)
        try:
            keys = _keys(client, key_prefix)
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture
def limiter(make_limiter: MakeLimiter) -> RateLimiter:
    return make_limiter()


def test_storage_kind(limiter: RateLimiter, storage_uri: str) -> None:
    assert limiter.storage_kind == storage_uri.split(":", 1)[0]


def test_limit_reached_raises_rate_limited(limiter: RateLimiter) -> None:
    for _ in range(3):
        limiter.hit("three_per_minute", "user-1")
    with pytest.raises(RateLimited) as raised:
        limiter.hit("three_per_minute", "user-1")
    assert 1 <= raised.value.retry_after <= 60
    assert raised.value.code == "rate_limited"
    assert raised.value.extra["retry_after"] == raised.value.retry_after
    assert raised.value.extra["rule"] == "three_per_minute"
    assert PHONE not in raised.value.detail


def test_refused_hits_are_not_counted(limiter: RateLimiter) -> None:
    limiter.hit("cost_rule", "user-1", cost=3)  # minute 3/4, hour 3/5
    with pytest.raises(RateLimited):
        limiter.hit("cost_rule", "user-1", cost=2)  # the minute refuses; the hour alone would have allowed
    # Had the refused hit counted in either window, this would be refused too (minute 6/4, hour 6/5).
    limiter.hit("cost_rule", "user-1", cost=1)
    assert not limiter.check("cost_rule", "user-1")


def test_check_does_not_consume(limiter: RateLimiter) -> None:
    for _ in range(10):
        assert limiter.check("three_per_minute", PHONE)
    assert limiter.retry_after("three_per_minute", PHONE) == 0
    for _ in range(3):
        limiter.hit("three_per_minute", PHONE)
    assert not limiter.check("three_per_minute", PHONE)
    assert 1 <= limiter.retry_after("three_per_minute", PHONE) <= 60


def test_reset_clears(limiter: RateLimiter) -> None:
    limiter.hit("minute_then_hour", PHONE)
    assert not limiter.check("minute_then_hour", PHONE)
    limiter.reset("minute_then_hour", PHONE)
    assert limiter.check("minute_then_hour", PHONE)
    assert limiter.retry_after("minute_then_hour", PHONE) == 0
    limiter.hit("minute_then_hour", PHONE)  # does not raise


def test_identifiers_isolate(limiter: RateLimiter) -> None:
    limiter.hit("one_per_minute", "+8613800000001")
    with pytest.raises(RateLimited):
        limiter.hit("one_per_minute", "+8613800000001")
    limiter.hit("one_per_minute", "+8613800000002")  # phone B is unaffected
    limiter.hit("one_per_minute", "+8613800000001", "203.0.113.7")  # nor is another identifier tuple
    limiter.hit("three_per_minute", "+8613800000001")  # nor another rule


def test_rules_isolate_even_with_equal_limits(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter({"a": "1/minute", "b": "1/minute"})
    limiter.hit("a", PHONE)
    assert not limiter.check("a", PHONE)
    assert limiter.check("b", PHONE)


def test_multi_limit_rule_short_window(limiter: RateLimiter) -> None:
    limiter.hit("minute_then_hour", PHONE)
    with pytest.raises(RateLimited) as raised:
        limiter.hit("minute_then_hour", PHONE)
    assert 1 <= raised.value.retry_after <= 60  # the minute is what blocks


def test_multi_limit_rule_long_window(limiter: RateLimiter) -> None:
    limiter.hit("hour_binds_first", PHONE)
    limiter.hit("hour_binds_first", PHONE)
    with pytest.raises(RateLimited) as raised:
        limiter.hit("hour_binds_first", PHONE)
    assert 60 < raised.value.retry_after <= 3600  # the hour is what blocks, though the minute has room


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a:b",), ("a", "b")),
        (("a", "b:c"), ("a:b", "c")),
        (("a/b",), ("a", "b")),  # `limits` joins its key parts with '/'
        (("a",), ("a", "")),
        (("",), ()),
    ],
)
def test_separators_in_identifiers_cannot_alias(
    limiter: RateLimiter, first: tuple[str, ...], second: tuple[str, ...]
) -> None:
    limiter.hit("one_per_minute", *first)
    assert not limiter.check("one_per_minute", *first)
    assert limiter.check("one_per_minute", *second)


def test_window_expiry(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    limiter.hit("one_per_second", PHONE)
    with pytest.raises(RateLimited) as raised:
        limiter.hit("one_per_second", PHONE)
    assert raised.value.retry_after == 1  # rounded up to whole seconds, never 0
    time.sleep(1.1)
    limiter.hit("one_per_second", PHONE)  # the window has moved on


def test_cost_must_be_able_to_fit(limiter: RateLimiter) -> None:
    with pytest.raises(ValueError, match="cost"):
        limiter.hit("three_per_minute", PHONE, cost=0)
    with pytest.raises(ValueError, match="never fit"):
        limiter.hit("cost_rule", PHONE, cost=5)  # the minute allows 4
    assert limiter.check("cost_rule", PHONE)


def test_unknown_rule_is_a_key_error(limiter: RateLimiter) -> None:
    for call in (limiter.hit, limiter.check, limiter.retry_after, limiter.reset):
        with pytest.raises(KeyError, match="no_such_rule"):
            call("no_such_rule", PHONE)


def test_default_rules_are_merged(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter({"custom": "2/minute", "otp_verify": "3/hour"})
    assert set(limiter.rules) == set(DEFAULT_RULES) | {"custom"}
    assert [str(item) for item in limiter.rules["otp_verify"]] == ["3 per 1 hour"]
    limiter.hit("otp_send_phone", PHONE)  # a default: 1/minute;5/hour;10/day
    with pytest.raises(RateLimited):
        limiter.hit("otp_send_phone", PHONE)


def test_every_default_rule_parses() -> None:
    with RateLimiter() as limiter:
        assert set(limiter.rules) == set(DEFAULT_RULES)
        assert [str(item) for item in limiter.rules["otp_send_phone"]] == [
            "1 per 1 minute",
            "5 per 1 hour",
            "10 per 1 day",
        ]
        assert [str(item) for item in limiter.rules["password_account"]] == ["10 per 15 minute"]


@pytest.mark.parametrize(
    ("rules", "prefix", "message"),
    [
        ({"bad": "often"}, "qianbao", "couldn't parse"),
        ({"bad name": "1/minute"}, "qianbao", "rule name"),
        ({"a/b": "1/minute"}, "qianbao", "rule name"),
        (None, "a/b", "key_prefix"),
        (None, "", "key_prefix"),
    ],
)
def test_bad_configuration_is_refused(rules: dict[str, str] | None, prefix: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter("memory://", rules, key_prefix=prefix)


def test_no_plaintext_identifiers_in_redis_keys(
    redis_url: str, redis_client: redis.Redis, key_prefix: str
) -> None:
    ip = "203.0.113.7"
    with RateLimiter(redis_url, RULES, key_prefix=key_prefix) as limiter:
        limiter.hit("minute_then_hour", PHONE, ip)
        limiter.hit("otp_send_phone", PHONE)
        limiter.hit("password_account", "alice@example.com")
    try:
        keys = _keys(redis_client, key_prefix)
        assert len(keys) == 2 + 3 + 1  # one per limit of each rule hit
        for key in keys:
            for secret in (PHONE, PHONE[1:], PHONE[3:], ip, "alice", "example.com"):
                assert secret not in key
            assert any(len(part) == 64 and set(part) <= set("0123456789abcdef") for part in key.split("/"))
    finally:
        if keys := _keys(redis_client, key_prefix):
            redis_client.delete(*keys)


def test_identifier_key_changes_the_digest(
    redis_url: str, redis_client: redis.Redis, key_prefix: str
) -> None:
    plain = RateLimiter(redis_url, RULES, key_prefix=key_prefix)
    keyed = RateLimiter(redis_url, RULES, key_prefix=key_prefix, identifier_key=b"k" * 32)
    try:
        plain.hit("one_per_minute", PHONE)
        assert not plain.check("one_per_minute", PHONE)
        assert keyed.check("one_per_minute", PHONE)  # a different key: plain SHA-256 is not reused
        keyed.hit("one_per_minute", PHONE)
        assert len(_keys(redis_client, key_prefix)) == 2
    finally:
        plain.close()
        keyed.close()
        if keys := _keys(redis_client, key_prefix):
            redis_client.delete(*keys)


def test_redis_down_is_service_unavailable(key_prefix: str) -> None:
    with RateLimiter(DOWN_REDIS_URL, RULES, key_prefix=key_prefix) as limiter:
        assert limiter.storage_kind == "redis"
        calls: list[Callable[[], object]] = [
            lambda: limiter.hit("one_per_minute", PHONE),
            lambda: limiter.check("one_per_minute", PHONE),
            lambda: limiter.retry_after("one_per_minute", PHONE),
            lambda: limiter.reset("one_per_minute", PHONE),
        ]
        for call in calls:
            with pytest.raises(ServiceUnavailable) as raised:
                call()
            assert raised.value.code == "service_unavailable"
            assert raised.value.__cause__ is not None  # translated with `raise … from exc`
            assert "6390" not in raised.value.detail  # the URI (maybe with a password) is not echoed
            assert PHONE not in raised.value.detail
