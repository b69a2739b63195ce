"""How many SMS messages each purpose may send: per number and per IP, every purpose counted on its own.

The quotas are kept apart on purpose. Anyone may ask for a sign-up code (or a recovery code, or a
password-reset code) for any number, without signing in. If those requests counted against the same
per-number quota as the step-up codes a signed-in user asks for, a stranger could spend the owner's
quota with ten anonymous requests and block their step-up (and so their payments and security
changes) for a day. So each purpose has its own rules (`security/ratelimit.py`, `DEFAULT_RULES`), and
asking for one kind of code never uses up another kind's.

SMS pumping stays bounded: every purpose is limited per number, and the purposes a caller reaches
without signing in are also limited per IP. The step-up code goes only to the account's own number,
to a signed-in user with an open challenge (itself limited per user), so it is limited per number only:
a per-IP limit there would let one user behind a shared address block everyone else's step-up.

The rules are hit before anything is looked up, whether the number is registered or not, so a refusal
(`429 rate_limited`) says nothing about who has an account.
"""

from __future__ import annotations

from qianbao.security.ratelimit import RateLimiter

# purpose → (rule per number, rule per IP or None). The purposes are those of `signup.PURPOSES` that a
# caller chooses a number for, plus "step_up". "phone_change_old" has no entry: those codes go to the
# account's own number and each pair needs a fresh step-up, which bounds them.
SMS_RULES: dict[str, tuple[str, str | None]] = {
    "signup": ("otp_send_phone", "otp_send_ip"),
    "password_reset": ("password_reset_send_phone", "password_reset_send_ip"),
    "recovery_new_phone": ("recovery_send_phone", "recovery_send_ip"),
    "phone_change_new": ("phone_change_send_phone", "phone_change_send_ip"),
    "step_up": ("step_up_sms_phone", None),
}


def count_sms(limiter: RateLimiter, purpose: str, phone: str, ip: str | None = None) -> None:
    """Count one SMS for `purpose` to `phone` (E.164), from `ip` if known; `RateLimited` when over."""
    phone_rule, ip_rule = SMS_RULES[purpose]
    limiter.hit(phone_rule, phone)
    if ip and ip_rule is not None:
        limiter.hit(ip_rule, ip)
