"""The double-entry ledger: accounts, transfers, two-phase holds, group commit, verification.

Only this package moves money. See docs/ledger.md for the semantics and every result code.
"""
