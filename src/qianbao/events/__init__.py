"""Events: the outbox dispatcher, the per-user event feed, signed webhooks and in-app notifications.

See docs/webhooks.md. `model` and `signing` are pure; `fanout` turns outbox rows into the feed,
deliveries and notifications; `sending` leases, signs, sends and logs deliveries; `dispatcher` runs both
(inline in `serve`, or `qianbao worker`); `webhooks`, `deliveries`, `feed` and `notifications` are the
use cases behind the API.
"""
