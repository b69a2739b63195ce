# Walkthrough 5 with curl (after walkthrough 2): Bob registers a webhook endpoint and polls the event feed.
set -euo pipefail
source docs/examples/qb.sh

# A key for events: scopes webhooks:manage (endpoints) and read (the feed). Step-up, as for every key.
KEY_REQUEST='{"name": "events", "scopes": ["read", "webhooks:manage"]}'
CHALLENGE=$(qb_problem step_up_required "$QB/v1/api-keys" -H "Authorization: Bearer $BOB" \
  -H 'Content-Type: application/json' -d "$KEY_REQUEST" | jq -er .challenge_id)
qb_curl "$QB/v1/challenges/$CHALLENGE/verify" -H "Authorization: Bearer $BOB" \
  -H 'Content-Type: application/json' -d '{"method": "pin", "pin": "582914"}'
KEY=$(qb_curl "$QB/v1/api-keys" -H "Authorization: Bearer $BOB" -H 'Content-Type: application/json' \
  -H "Step-Up: $CHALLENGE" -d "$KEY_REQUEST")
QB_KEY_ID=$(jq -er .id <<<"$KEY")
QB_KEY_SECRET=$(jq -er .secret <<<"$KEY")

# Register the receiver, here on this machine (a sandbox allows 127.0.0.1 and localhost when started
# with QIANBAO_WEBHOOKS_ALLOW_LOOPBACK=true). Keep the secret: it verifies every delivery's signature.
ENDPOINT=$(qb_signed POST /v1/webhook-endpoints \
  '{"url": "http://127.0.0.1:8765/hooks/qianbao", "events": ["payment.*", "refund.*", "payment_intent.*"]}' \
  -H 'Idempotency-Key: hook-1')
WEBHOOK_SECRET=$(jq -er .secret <<<"$ENDPOINT")

# Poll: the events about Bob, newest first. The dispatcher adds them within about a second: poll until
# the feed has the payment of walkthrough 2 ($PAYMENT_ID), for at most 30 seconds.
for attempt in {1..30}; do
  EVENTS=$(qb_signed GET '/v1/events?type=payment.succeeded&limit=10')
  jq -e --arg id "$PAYMENT_ID" 'any(.data[]; .data.payment_id == $id)' <<<"$EVENTS" >/dev/null && break
  [ "$attempt" -lt 30 ] || { echo "payment $PAYMENT_ID is not in the event feed" >&2; false; }
  sleep 1
done
jq -c '[.data[] | {id, type, payment: .data.payment_id}]' <<<"$EVENTS"
