"""Entry points run in separate OS processes by the multi-process ledger tests, and what they share."""
