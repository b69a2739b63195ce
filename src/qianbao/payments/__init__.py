"""Payments: P2P transfers between wallets (by wallet id or phone number) and sandbox funding."""
