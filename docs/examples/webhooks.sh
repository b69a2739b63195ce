# Walkthrough 5 with curl (after walkthrough 2): Bob registers a webhook endpoint and polls the event feed.
set -euo pipefail
source docs/examples/qb.sh

# A key for events: scopes webhooks:manage (endpoints) and read (the feed). Step-up, as for every key.
KEY_REQUEST='{"name": "events", "scopes": ["read", "webhooks:manage"]}'
CHALLENGE=$(curl -s "$QB/v1/api-keys" -H "Authorization: Bearer $BOB" -H 'Content-Type: application/json' \
  -d "$KEY_REQUEST" | jq -r .challenge_id)
curl -s "$QB/v1/challenges/$CHALLENGE/verify" -H "Authorization: Bearer $BOB" \
  -H 'Content-Type: application/json' -d '{"method": "pin", "pin": "582914"}'
KEY=$(curl -s "$QB/v1/api-keys" -H "Authorization: Bearer $BOB" -H 'Content-Type: application/json' \
  -H "Step-Up: $CHALLENGE" -d "$KEY_REQUEST")
QB_KEY_ID=$(jq -r .id <<<"$KEY")
QB_KEY_SECRET=$(jq -r .secret <<<"$KEY")

# Register the receiver (sandbox allows http://127.0.0.1 and localhost). Keep the secret: it verifies
# every delivery's Qianbao-Signature.
ENDPOINT=$(qb_signed POST /v1/webhook-endpoints \
  '{"url": "http://127.0.0.1:8765/hooks/qianbao", "events": ["payment.*", "refund.*", "payment_intent.*"]}' \
  -H 'Idempotency-Key: hook-1')
WEBHOOK_SECRET=$(jq -r .secret <<<"$ENDPOINT")

# Poll: the events about Bob, newest first (the dispatcher adds them within about a second).
sleep 2
qb_signed GET '/v1/events?type=payment.succeeded&limit=10' | jq -c '[.data[] | {id, type, payment: .data.payment_id}]'
