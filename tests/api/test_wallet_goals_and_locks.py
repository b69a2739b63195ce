"""Savings goals and locks through the API.

Goals: progress on the wallet JSON and one `wallet.goal_reached` when the balance first reaches the
target, whatever the credit (top-up, own move, someone's payment). Locks: until `locked_until` no money
leaves the wallet (payments, own moves, closing: `423 wallet_locked`), money still comes in, and the lock
can be extended but not shortened or removed before it ends."""

from __future__ import annotations

from fastapi.testclient import TestClient

from qianbao.clock import FixedClock
from tests.api.test_wallet_settings import (
    clock,
    clocked,
    events,
    fund,
    in_days,
    money,
    open_sub,
    patch,
    pay,
    wallet,
)
from tests.support.api import sign_up

__all__ = ["clock", "clocked"]  # fixtures

GOAL = "wallet.goal_reached"


def test_goal_progress_and_one_event_when_first_reached(clocked: TestClient, clock: FixedClock) -> None:
    alice, bob = sign_up(clocked), sign_up(clocked)
    goal = {"target": money(10_000), "target_date": "2027-06-30"}
    pot = open_sub(clocked, alice, "存钱", purpose="savings", goal=goal)["id"]
    fund(clocked, alice, pot, 6_000)
    shown = wallet(clocked, alice, pot)["goal"]
    assert (shown["balance"], shown["remaining"], shown["percent"], shown["reached"]) == (
        money(6_000),
        money(4_000),
        60,
        False,
    )
    assert events(clocked, GOAL, pot) == []
    fund(clocked, alice, alice.wallet_id, 20_000)
    assert pay(clocked, alice, alice.wallet_id, pot, 4_000).status_code == 201  # an own move reaches it
    assert events(clocked, GOAL, pot) == [
        {
            "user_id": alice.user_id,
            "wallet_id": pot,
            "target": money(10_000),
            "balance": money(10_000),
            "target_date": "2027-06-30",
        }
    ]
    shown = wallet(clocked, alice, pot)["goal"]
    assert (shown["percent"], shown["reached"], shown["reached_at"]) == (100, True, "2026-11-30T15:00:00Z")
    # Falling below and reaching it again is not "first": no second event.
    assert pay(clocked, alice, pot, alice.wallet_id, 5_000).status_code == 201
    fund(clocked, bob, bob.wallet_id, 10_000)
    assert pay(clocked, bob, bob.wallet_id, pot, 6_000).status_code == 201
    assert len(events(clocked, GOAL, pot)) == 1
    assert wallet(clocked, alice, pot)["goal"]["percent"] == 100


def test_a_payment_from_someone_else_can_reach_the_goal(clocked: TestClient) -> None:
    alice, bob = sign_up(clocked), sign_up(clocked)
    pot = open_sub(clocked, alice, "存钱", purpose="savings", goal={"target": money(3_000)})["id"]
    fund(clocked, bob, bob.wallet_id, 10_000)
    assert pay(clocked, bob, bob.wallet_id, pot, 2_999).status_code == 201
    assert events(clocked, GOAL, pot) == []
    assert pay(clocked, bob, bob.wallet_id, pot, 1).status_code == 201
    assert [e["target"] for e in events(clocked, GOAL, pot)] == [money(3_000)]


def test_a_goal_already_met_is_announced_when_set_and_a_new_target_starts_over(clocked: TestClient) -> None:
    alice = sign_up(clocked)
    pot = open_sub(clocked, alice, "存钱", purpose="savings")["id"]
    fund(clocked, alice, pot, 5_000)
    body = patch(clocked, alice, pot, goal={"target": money(5_000)}).json()
    assert body["goal"]["reached"] is True
    assert len(events(clocked, GOAL, pot)) == 1
    body = patch(clocked, alice, pot, goal={"target": money(8_000)}).json()
    assert (body["goal"]["reached"], body["goal"]["percent"]) == (False, 62)
    fund(clocked, alice, pot, 3_000)
    assert [e["target"] for e in events(clocked, GOAL, pot)] == [money(5_000), money(8_000)]
    assert patch(clocked, alice, pot, goal=None).json()["goal"] is None


def test_a_locked_wallet_refuses_money_leaving_and_takes_money_in(
    clocked: TestClient, clock: FixedClock
) -> None:
    alice, bob = sign_up(clocked), sign_up(clocked)
    pot = open_sub(clocked, alice, "存钱", purpose="savings")["id"]
    fund(clocked, alice, pot, 10_000)
    until = in_days(clock, 5)  # sessions end after 7 idle days: the clock stays within them
    locked = patch(clocked, alice, pot, locked_until=until)
    assert locked.status_code == 200, locked.text
    assert (locked.json()["locked_until"], locked.json()["payable"]) == (until, False)
    for target in (bob.wallet_id, alice.wallet_id):  # a payment, then a move to her own main wallet
        refused = pay(clocked, alice, pot, target, 100)
        assert refused.status_code == 423, refused.text
        problem = refused.json()
        assert (problem["code"], problem["locked_until"], problem["next_step"]) == (
            "wallet_locked",
            until,
            "try_after_unlock",
        )
    closed = clocked.post(f"/v1/wallets/{pot}/close", headers=alice.auth)
    assert (closed.status_code, closed.json()["code"]) == (423, "wallet_locked")
    # Money still comes in: a top-up, an own move, someone else's payment.
    fund(clocked, alice, pot, 1_000)
    fund(clocked, alice, alice.wallet_id, 1_000)
    assert pay(clocked, alice, alice.wallet_id, pot, 1_000).status_code == 201
    fund(clocked, bob, bob.wallet_id, 1_000)
    assert pay(clocked, bob, bob.wallet_id, pot, 1_000).status_code == 201
    shown = wallet(clocked, alice, pot)
    assert (shown["balance"], shown["status"]) == (money(13_000), "active")
    # When the lock ends, money may leave again.
    clock.advance(5 * 86_400 + 1)
    assert wallet(clocked, alice, pot)["locked_until"] is None
    assert pay(clocked, alice, pot, alice.wallet_id, 3_000).status_code == 201
    assert clocked.post(f"/v1/wallets/{pot}/close", headers=alice.auth).status_code == 200


def test_a_lock_can_be_extended_but_not_shortened_or_removed(clocked: TestClient, clock: FixedClock) -> None:
    alice = sign_up(clocked)
    pot = open_sub(clocked, alice, "存钱", purpose="savings")["id"]
    first = in_days(clock, 2)
    assert patch(clocked, alice, pot, locked_until=first).status_code == 200
    for attempt in ({"locked_until": in_days(clock, 1.5)}, {"locked_until": None}):
        refused = patch(clocked, alice, pot, **attempt)
        assert (refused.status_code, refused.json()["code"]) == (423, "wallet_locked"), refused.text
        assert refused.json()["locked_until"] == first
    # Refused as a whole: other fields in the same request do not change either.
    refused = patch(clocked, alice, pot, colour="pink", locked_until=in_days(clock, 1))
    assert refused.status_code == 423
    assert wallet(clocked, alice, pot)["colour"] == "green"
    assert patch(clocked, alice, pot, locked_until=first).status_code == 200  # the same end: fine
    later = in_days(clock, 4)
    extended = patch(clocked, alice, pot, locked_until=later.replace("Z", "+00:00"))
    assert (extended.status_code, extended.json()["locked_until"]) == (200, later)
    # Other settings can change while locked.
    assert patch(clocked, alice, pot, colour="pink", name="首付").status_code == 200
    clock.advance(4 * 86_400 + 1)
    assert patch(clocked, alice, pot, locked_until=None).status_code == 200  # ended: may be cleared
    shorter = in_days(clock, 1)
    assert patch(clocked, alice, pot, locked_until=shorter).json()["locked_until"] == shorter


def test_a_lock_is_given_in_any_offset_and_shown_in_utc(clocked: TestClient) -> None:
    alice = sign_up(clocked)
    pot = open_sub(clocked, alice)["id"]
    body = patch(clocked, alice, pot, locked_until="2027-01-01T08:00:00+08:00").json()
    assert body["locked_until"] == "2027-01-01T00:00:00Z"
