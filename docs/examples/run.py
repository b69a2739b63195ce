"""Runs the five Python walkthroughs in order against a sandbox server, with new users every time. From a
checkout of the repository: `python -m docs.examples.run` (the server is $QB, by default
http://127.0.0.1:8000). It prints one line of JSON per walkthrough, and stops with the problem at the first
unexpected answer (exit status 1)."""

from __future__ import annotations

import json
import os
import secrets
import sys
from typing import Any

import httpx2 as httpx

from . import checkout, merchant_qr, p2p, payment_code, webhooks

PASSWORD = "Lantern-Harbour-42"  # noqa: S105 - a sandbox user's password
PIN = "582914"
RECEIVER = "http://127.0.0.1:8765/hooks/qianbao"  # nothing needs to listen there: walkthrough 5 polls


def new_phone() -> str:
    """A number for a new sandbox user: +86 136 and eight random digits. The curl walkthroughs use
    +86 137 and the demo users +86 138, so no run meets a number another one signed up with."""
    return f"+86136{secrets.randbelow(10**8):08d}"


def report(walkthrough: str, **summary: Any) -> None:
    sys.stdout.write(json.dumps({"walkthrough": walkthrough, **summary}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def main(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        # 1. Alice pays Bob ¥520.00 by phone number (and so has ¥480.00 left).
        bob_phone = new_phone()
        story = p2p.walkthrough(client, new_phone(), bob_phone, PASSWORD)
        alice, alice_wallet = story["token"], story["alice"]["main_wallet_id"]
        report("p2p", transfer=story["transfer"]["id"], balance=story["wallet"]["balance"]["amount"])
        bob = p2p.sign_in(client, bob_phone, PASSWORD, device_id="bob-phone")
        p2p.set_payment_pin(client, bob, PIN)
        p2p.fund_in_sandbox(client, alice, alice_wallet, 200_000)  # ¥2,000.00 for walkthroughs 2 to 4

        # 2. Bob's noodle shop: its till key, two QR payments by Alice, a partial refund.
        shop = merchant_qr.walkthrough(
            client,
            owner_token=bob,
            owner_pin=PIN,
            customer_token=alice,
            customer_pin=PIN,
            customer_wallet_id=alice_wallet,
        )
        merchant_id, till_key = shop["merchant"]["id"], shop["key"]
        refund, fee_back = shop["refund"], shop["refund"]["fee_refunded"]["amount"]
        report("merchant_qr", refund=refund["id"], status=refund["status"], fee_refunded=fee_back)

        # 3. Alice's payment codes at Bob's till: one paid at once, one held and confirmed.
        till = payment_code.walkthrough(
            client,
            customer_token=alice,
            customer_pin=PIN,
            customer_wallet_id=alice_wallet,
            till_key=till_key,
            merchant_id=merchant_id,
        )
        held = till["seen_by_till"]
        report("payment_code", payment=held["id"], status=held["status"], fee=held["fee"]["amount"])

        # 4. Bob's web shop: a payment intent that Alice pays.
        order = checkout.walkthrough(
            client,
            server_key=till_key,
            merchant_id=merchant_id,
            customer_token=alice,
            customer_pin=PIN,
            customer_wallet_id=alice_wallet,
        )
        report("checkout", intent=order["intent"]["id"], status=order["final"]["status"])

        # 5. Events: a key for them, a webhook endpoint, and the feed polled until it has walkthrough 2's
        # payment.
        events_key = merchant_qr.create_api_key(client, bob, PIN, "events", ["read", "webhooks:manage"])
        feed = webhooks.walkthrough(
            client, key=events_key, receiver_url=RECEIVER, payment_id=shop["by_dynamic"]["id"]
        )
        report("webhooks", endpoint=feed["endpoint"]["id"], events=[e["id"] for e in feed["events"]])


if __name__ == "__main__":
    main(os.environ.get("QB", "http://127.0.0.1:8000"))
