# Walkthrough 2 with curl (after walkthrough 1, in the same shell): Bob opens a noodle shop and gives its
# till an API key; Alice pays a static and a dynamic QR code; Bob refunds part of a payment.
set -euo pipefail
source docs/examples/qb.sh

MERCHANT=$(qb_curl "$QB/v1/merchants" -H "Authorization: Bearer $BOB" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: open-shop-1' -d '{"name": "老王面馆", "mcc": "5812", "city": "上海"}' | jq -er .id)

# An API key for the till (creating one always needs step-up). The secret is shown once.
KEY_REQUEST='{"name": "till", "scopes": ["read", "payments:write", "refunds:write"]}'
CHALLENGE=$(qb_problem step_up_required "$QB/v1/api-keys" -H "Authorization: Bearer $BOB" \
  -H 'Content-Type: application/json' -d "$KEY_REQUEST" | jq -er .challenge_id)
qb_curl "$QB/v1/challenges/$CHALLENGE/verify" -H "Authorization: Bearer $BOB" \
  -H 'Content-Type: application/json' -d '{"method": "pin", "pin": "582914"}'
KEY=$(qb_curl "$QB/v1/api-keys" -H "Authorization: Bearer $BOB" -H 'Content-Type: application/json' \
  -H "Step-Up: $CHALLENGE" -d "$KEY_REQUEST")
QB_KEY_ID=$(jq -er .id <<<"$KEY")
QB_KEY_SECRET=$(jq -er .secret <<<"$KEY")

# The till, with the key: the static code for the counter (the customer types the amount), also as an
# image (saved in $QB_TMP, which goes when the shell exits: copy it to keep it) ...
STATIC=$(qb_signed GET "/v1/merchants/$MERCHANT/qr" | jq -er .payload)
qb_signed GET "/v1/merchants/$MERCHANT/qr?format=png" '' -o "$QB_TMP/counter-qr.png"
# ... and a dynamic code for order A-1001, ¥100.00, single use, valid 5 minutes.
CODE=$(qb_signed POST "/v1/merchants/$MERCHANT/qr-codes" \
  '{"amount": {"amount": 10000, "currency": "CNY"}, "order_id": "A-1001"}' -H 'Idempotency-Key: A-1001')
CODE_ID=$(jq -er .id <<<"$CODE")
DYNAMIC=$(jq -er .payload <<<"$CODE")

# Alice scans the static code and types ¥25.00; then she scans the dynamic one (its amount is paid).
qb_curl "$QB/v1/payments" -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: noodles-1' \
  -d "{\"from_wallet_id\": \"$ALICE_WALLET\", \"qr\": \"$STATIC\", \"amount\": {\"amount\": 2500, \"currency\": \"CNY\"}, \"memo\": \"两碗面\"}"
qb_curl "$QB/v1/payments" -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: order-A-1001' -d "{\"from_wallet_id\": \"$ALICE_WALLET\", \"qr\": \"$DYNAMIC\"}"

# The till sees the code paid, with the payment's id; it refunds ¥30.00 of it.
PAYMENT_ID=$(qb_signed GET "/v1/merchants/$MERCHANT/qr-codes/$CODE_ID" | jq -er .payment_id)
qb_signed POST "/v1/payments/$PAYMENT_ID/refunds" \
  '{"amount": {"amount": 3000, "currency": "CNY"}, "reason": "少了一碗"}' -H 'Idempotency-Key: refund-A-1001-1' \
  | jq -ec '{refund: .id, status, amount: .amount.amount, fee_refunded: .fee_refunded.amount}'
