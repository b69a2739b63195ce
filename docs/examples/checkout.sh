# Walkthrough 4 with curl (after walkthrough 2): Bob's web shop creates a payment intent; Alice pays it.
set -euo pipefail
source docs/examples/qb.sh

# Bob's server, with the API key (payments:write). One Idempotency-Key per order.
INTENT=$(qb_signed POST /v1/payment-intents \
  "{\"merchant_id\": \"$MERCHANT\", \"amount\": {\"amount\": 3800, \"currency\": \"CNY\"}, \"order_id\": \"WEB-77\", \"description\": \"龙井 250g\", \"return_url\": \"https://tea.example/orders/WEB-77\"}" \
  -H 'Idempotency-Key: order-WEB-77' | jq -er .id)

# Alice, on the checkout page, sees what she pays and confirms from her wallet.
qb_curl "$QB/v1/payment-intents/$INTENT" -H "Authorization: Bearer $ALICE"
qb_curl "$QB/v1/payment-intents/$INTENT/confirm" -H "Authorization: Bearer $ALICE" \
  -H 'Content-Type: application/json' -H 'Idempotency-Key: pay-WEB-77' -d "{\"from_wallet_id\": \"$ALICE_WALLET\"}"

# Bob's server sees it paid (or waits for the payment_intent.succeeded webhook).
qb_signed GET "/v1/payment-intents/$INTENT" | jq -ec '{intent: .id, status, payment: .payment_id}'
