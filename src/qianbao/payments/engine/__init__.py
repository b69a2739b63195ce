"""The payment engine: one decision core for every money movement (docs/payments.md, "The decision core").

  facts.py     the request and the loaded state, as frozen data
  rules.py     the payments capability's own pure rules (recipient, currency, merchant, allowance…)
  decide.py    `decide` / `decide_batch`: every rule, in one written order → approve, step-up or decline
  declines.py  a finding → the error the API answers (codes, statuses and messages exactly as API.md)
  load.py      the state a decision needs, read from the database (in the caller's transaction)

The rules of the other capabilities live with them: `identity.limit_rules` (account frozen, single and
daily limits, the balance cap), `wallets.spend_rules` (lock, budget) and `ledger.rules` (account status,
balance, ceiling). None of these modules touches SQL, the settings or the clock.
"""
