"""Storage: database engines for SQLite and PostgreSQL, units of work, the outbox, migrations."""
