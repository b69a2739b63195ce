"""What a payment answers again: replays of a stored answer, and a Step-Up header that is not needed.
Through the payment pipeline these are answered in the batch, after the Idempotency-Key is claimed."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from qianbao.ledger.model import AccountStatus
from tests.api.test_wallets_and_transfers import balance, funded, pay, prove_with_pin, set_pin
from tests.support.api import SignedUp
from tests.support.ledger import shown_open


def test_replays_of_a_payment_by_phone_spend_no_recipient_look_ups(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    """API.md: the same key and body answer the original status and body; a replay looks nobody up,
    so it never meets the look-up rate limit (30 an hour)."""
    funded(client, alice, 100_000)
    first = pay(client, alice, 100, to={"phone": bob.phone}, key="by-phone-1")
    assert first.status_code == 201, first.text
    replays = [pay(client, alice, 100, to={"phone": bob.phone}, key="by-phone-1") for _ in range(35)]
    assert {r.status_code for r in replays} == {201}
    assert {r.json()["id"] for r in replays} == {first.json()["id"]}
    assert balance(client, bob) == 100


def test_a_step_up_header_on_a_payment_that_needs_none_is_ignored(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    set_pin(client, alice)
    funded(client, alice, 200_000)
    first = pay(client, alice, 60_000, to={"phone": bob.phone})
    assert first.status_code == 401 and first.json()["code"] == "step_up_required"
    challenge = first.json()["challenge_id"]
    prove_with_pin(client, alice, challenge)
    assert pay(client, alice, 60_000, to={"phone": bob.phone}, step_up=challenge).status_code == 201
    # Bob is a known payee now and ¥10 needs no proof: the spent challenge sent along changes nothing.
    again = pay(client, alice, 1_000, to={"wallet_id": bob.wallet_id}, step_up=challenge)
    assert again.status_code == 201, again.text
    assert balance(client, bob) == 61_000


def test_a_reused_key_is_refused_as_reused_even_with_an_invalid_body(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    funded(client, alice, 10_000)
    assert pay(client, alice, 100, to={"wallet_id": bob.wallet_id}, key="k-1").status_code == 201
    bad_memo = "\u0007 ring"  # a control character: refused by the payment's own input checks
    reused = pay(client, alice, 100, to={"wallet_id": bob.wallet_id}, key="k-1", memo=bad_memo)
    assert reused.status_code == 409 and reused.json()["code"] == "idempotency_key_reused"
    # With a fresh key the same body is a validation error, and the key stays free for a retry.
    invalid = pay(client, alice, 100, to={"wallet_id": bob.wallet_id}, key="k-2", memo=bad_memo)
    assert invalid.status_code == 422 and invalid.json()["code"] == "validation_error"
    assert pay(client, alice, 100, to={"wallet_id": bob.wallet_id}, key="k-2").status_code == 201


def test_a_ledger_refusal_leaves_the_step_up_proof_unspent(
    client: TestClient, alice: SignedUp, bob: SignedUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger refuses a proved payment the decision approved (the recipient's wallet frozen): the
    decline is recorded, and the proof was not spent on it, as when a unit of work rolled back."""
    set_pin(client, alice)
    funded(client, alice, 200_000)
    first = pay(client, alice, 60_000, to={"wallet_id": bob.wallet_id}, key="proved-1")
    assert first.status_code == 401
    challenge = first.json()["challenge_id"]
    prove_with_pin(client, alice, challenge)
    ledger = client.app.state.container.ledger  # type: ignore[attr-defined]
    shown_open(monkeypatch, ledger, bob.wallet_id)
    refused = pay(client, alice, 60_000, to={"wallet_id": bob.wallet_id}, key="proved-1", step_up=challenge)
    assert refused.status_code == 423 and refused.json()["code"] == "wallet_frozen", refused.text
    assert refused.json()["transfer_id"].startswith("trf_")
    monkeypatch.undo()
    ledger.set_account_status(bob.wallet_id, AccountStatus.OPEN)
    again = pay(client, alice, 60_000, to={"wallet_id": bob.wallet_id}, key="proved-2", step_up=challenge)
    assert again.status_code == 201, again.text
    assert balance(client, bob) == 60_000
