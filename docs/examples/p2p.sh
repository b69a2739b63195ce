# Walkthrough 1 with curl: Alice and Bob sign up, Alice gets sandbox money and pays Bob by phone number.
set -euo pipefail
source docs/examples/qb.sh
ALICE_PHONE=$(qb_new_phone) # new users on every run
BOB_PHONE=$(qb_new_phone)
PASSWORD='Lantern-Harbour-42'

# Sign up: a code goes to the phone by SMS (in the sandbox, read it from /v1/sandbox/messages), then
# the account is created with it. The answer has the main wallet's id.
qb_curl "$QB/v1/verifications" -H 'Content-Type: application/json' -d "{\"phone\": \"$ALICE_PHONE\"}"
CODE=$(qb_curl -G "$QB/v1/sandbox/messages" --data-urlencode "to=$ALICE_PHONE" | jq -er '.data[0].code')
ALICE_WALLET=$(qb_curl "$QB/v1/users" -H 'Content-Type: application/json' \
  -d "{\"phone\": \"$ALICE_PHONE\", \"code\": \"$CODE\", \"password\": \"$PASSWORD\", \"name\": \"王丽\", \"device_id\": \"alice-phone\"}" \
  | jq -er .main_wallet_id)
qb_curl "$QB/v1/verifications" -H 'Content-Type: application/json' -d "{\"phone\": \"$BOB_PHONE\"}"
CODE=$(qb_curl -G "$QB/v1/sandbox/messages" --data-urlencode "to=$BOB_PHONE" | jq -er '.data[0].code')
BOB_WALLET=$(qb_curl "$QB/v1/users" -H 'Content-Type: application/json' \
  -d "{\"phone\": \"$BOB_PHONE\", \"code\": \"$CODE\", \"password\": \"$PASSWORD\", \"name\": \"李四\", \"device_id\": \"bob-phone\"}" \
  | jq -er .main_wallet_id)

# Sign in (from the device signed up with): a bearer token each. Both set a 6-digit payment PIN.
ALICE=$(qb_curl "$QB/v1/sessions" -H 'Content-Type: application/json' \
  -d "{\"phone\": \"$ALICE_PHONE\", \"password\": \"$PASSWORD\", \"device_id\": \"alice-phone\"}" | jq -er .token)
BOB=$(qb_curl "$QB/v1/sessions" -H 'Content-Type: application/json' \
  -d "{\"phone\": \"$BOB_PHONE\", \"password\": \"$PASSWORD\", \"device_id\": \"bob-phone\"}" | jq -er .token)
qb_curl -X PUT "$QB/v1/me/pin" -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
  -d '{"pin": "582914"}'
qb_curl -X PUT "$QB/v1/me/pin" -H "Authorization: Bearer $BOB" -H 'Content-Type: application/json' \
  -d '{"pin": "582914"}'

# Sandbox money: ¥3,000.00 into Alice's main wallet.
qb_curl "$QB/v1/sandbox/fund" -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: fund-1' -d "{\"wallet_id\": \"$ALICE_WALLET\", \"amount\": {\"amount\": 300000, \"currency\": \"CNY\"}}"

# Who would a payment to Bob's number reach? Show the masked name ("*四") and let Alice confirm.
qb_curl -G "$QB/v1/recipients" -H "Authorization: Bearer $ALICE" --data-urlencode "phone=$BOB_PHONE"

# Pay ¥520.00. Above ¥500 to someone new the first answer is 401 step_up_required: prove the challenge
# with the PIN, then send the same request (same body, same Idempotency-Key) with Step-Up.
PAYMENT="{\"from_wallet_id\": \"$ALICE_WALLET\", \"to\": {\"phone\": \"$BOB_PHONE\"}, \"amount\": {\"amount\": 52000, \"currency\": \"CNY\"}, \"memo\": \"电影票\"}"
CHALLENGE=$(qb_problem step_up_required "$QB/v1/transfers" -H "Authorization: Bearer $ALICE" \
  -H 'Content-Type: application/json' -H 'Idempotency-Key: movie-tickets-1' -d "$PAYMENT" | jq -er .challenge_id)
qb_curl "$QB/v1/challenges/$CHALLENGE/verify" -H "Authorization: Bearer $ALICE" \
  -H 'Content-Type: application/json' -d '{"method": "pin", "pin": "582914"}'
qb_curl "$QB/v1/transfers" -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
  -H 'Idempotency-Key: movie-tickets-1' -H "Step-Up: $CHALLENGE" -d "$PAYMENT"

# The history: Alice's payments out, newest first (more pages: follow next_cursor, see Pagination).
qb_curl -G "$QB/v1/wallets/$ALICE_WALLET/transactions" -H "Authorization: Bearer $ALICE" \
  --data-urlencode 'type=p2p' --data-urlencode 'direction=debit' \
  | jq -ec '{transfer: .data[0].transfer_id, to: .data[0].counterparty.name_masked, balance_after: .data[0].balance_after.amount}'
