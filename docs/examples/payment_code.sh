# Walkthrough 3 with curl (after walkthrough 2): Alice shows a payment code at Bob's till. A small charge
# is paid at once; a large one is held until Alice confirms it with step-up.
set -euo pipefail
source docs/examples/qb.sh

# Alice enables payment codes on her phone (the device her session signed in with): step-up first.
CHALLENGE=$(qb_problem step_up_required "$QB/v1/payment-codes/devices" -H "Authorization: Bearer $ALICE" \
  -H 'Content-Type: application/json' -d "{\"wallet_id\": \"$ALICE_WALLET\"}" | jq -er .challenge_id)
qb_curl "$QB/v1/challenges/$CHALLENGE/verify" -H "Authorization: Bearer $ALICE" \
  -H 'Content-Type: application/json' -d '{"method": "pin", "pin": "582914"}'
qb_curl "$QB/v1/payment-codes/devices" -H "Authorization: Bearer $ALICE" -H "Step-Up: $CHALLENGE" \
  -H 'Content-Type: application/json' -H 'Idempotency-Key: codes-on-phone-1' -d "{\"wallet_id\": \"$ALICE_WALLET\"}"

# The app computes codes offline from the secret (see the Python version); without it, ask the server.
PAY_CODE=$(qb_curl "$QB/v1/payment-codes/current" -H "Authorization: Bearer $ALICE" | jq -er .code)

# The till charges ¥25.00: within the password-free allowance, so 201 and succeeded.
qb_signed POST "/v1/merchants/$MERCHANT/charges" \
  "{\"payment_code\": \"$PAY_CODE\", \"amount\": {\"amount\": 2500, \"currency\": \"CNY\"}, \"order_id\": \"POS-1\"}" \
  -H 'Idempotency-Key: POS-1'

# A code pays once: the next charge needs the next code. ¥1,500.00 is above the allowance: 202, pending.
PAY_CODE=$(qb_curl "$QB/v1/payment-codes/current" -H "Authorization: Bearer $ALICE" | jq -er .code)
HELD=$(qb_signed POST "/v1/merchants/$MERCHANT/charges" \
  "{\"payment_code\": \"$PAY_CODE\", \"amount\": {\"amount\": 150000, \"currency\": \"CNY\"}, \"order_id\": \"POS-2\"}" \
  -H 'Idempotency-Key: POS-2' | jq -er .id)

# Alice's app lists it and she confirms within 60 seconds, with step-up.
qb_curl "$QB/v1/payments/pending" -H "Authorization: Bearer $ALICE"
CHALLENGE=$(qb_problem step_up_required -X POST "$QB/v1/payments/$HELD/confirm" -H "Authorization: Bearer $ALICE" \
  | jq -er .challenge_id)
qb_curl "$QB/v1/challenges/$CHALLENGE/verify" -H "Authorization: Bearer $ALICE" \
  -H 'Content-Type: application/json' -d '{"method": "pin", "pin": "582914"}'
qb_curl -X POST "$QB/v1/payments/$HELD/confirm" -H "Authorization: Bearer $ALICE" -H "Step-Up: $CHALLENGE"

# The till polls the payment.
qb_signed GET "/v1/payments/$HELD" | jq -ec '{payment: .id, status, amount: .amount.amount, fee: .fee.amount}'
