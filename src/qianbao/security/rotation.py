"""Data-key rotation: a new active key, then every encrypted value re-encrypted under it, online.

`rotate_data_keys` (behind `qianbao keys rotate`) runs while the service keeps serving:

1. `KeyRing.start_rotation()` makes a new data key active and retires the others.
2. It waits until every running process has picked the new key up (each `KeyRing` looks again every
   `REFRESH_INTERVAL_US`), so nothing new is written under an old key afterwards.
3. For every column of `security.fields.ENCRYPTED` it reads, in batches, the values whose token does not
   name the new key, decrypts and re-encrypts them outside any transaction, and writes each batch in its
   own short write transaction with an optimistic ``UPDATE … WHERE <key> = :key AND <col> = :old``: a value
   the service changed meanwhile is left alone (the service's new value wins) and looked at again.
4. It repeats whole passes until one finds no value under an old key.

Retired keys are *kept* in `data_keys`: database backups taken before the rotation hold values under them,
and restoring such a backup must still decrypt. Deleting a retired key is therefore a deliberate operator
decision once no backup needs it, and not something this module does.

Values that cannot be decrypted at all (a corrupt token) are reported, not rewritten, and do not stop the
rotation; their column names and row keys are in the report (never their content).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, and_, func, or_, select, update

from qianbao.security.crypto import CryptoError, token_key_id
from qianbao.security.fields import ENCRYPTED, EncryptedTable, context
from qianbao.security.keyring import REFRESH_INTERVAL_US, KeyRing
from qianbao.security.tables import data_keys
from qianbao.store.database import Database
from qianbao.store.schema import metadata

# How long to wait after the new key is made active: one refresh interval of the other processes' key
# rings plus a margin for requests that encrypted a value just before their refresh and commit just after.
DEFAULT_WAIT_S = REFRESH_INTERVAL_US / 1_000_000 + 2.0
DEFAULT_BATCH_SIZE = 500
MAX_PASSES = 50

Progress = Callable[[int, int], None]


class RotationError(Exception):
    """The rotation could not finish (another rotation started, or values keep appearing under old keys)."""


@dataclass
class ColumnReport:
    reencrypted: int = 0
    conflicts: int = 0  # values changed by someone else between our read and our write (re-read later)
    unreadable: list[str] = field(default_factory=list)  # row keys of values that do not decrypt


@dataclass
class RotationReport:
    new_key_id: str
    retired_key_ids: list[str]
    columns: dict[str, ColumnReport]
    passes: int

    @property
    def reencrypted(self) -> int:
        return sum(c.reencrypted for c in self.columns.values())

    @property
    def conflicts(self) -> int:
        return sum(c.conflicts for c in self.columns.values())

    @property
    def unreadable(self) -> int:
        return sum(len(c.unreadable) for c in self.columns.values())


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    state: str
    created_at: int
    retired_at: int | None
    values: int  # encrypted values currently under this key, over every ENCRYPTED column


def _token_prefix(key_id: str) -> str:
    return f"v1.{key_id}."


def _columns(spec: EncryptedTable) -> tuple[Table, list[Column[Any]]]:
    table = metadata.tables[spec.table]
    return table, [table.c[name] for name in spec.key_columns]


def _not_under(col: Column[Any], key_id: str) -> ColumnElement[bool]:
    prefix = _token_prefix(key_id)
    # substr rather than LIKE: key ids contain "_", which LIKE would treat as a wildcard.
    return and_(col.is_not(None), func.substr(col, 1, len(prefix)) != prefix)


def _after(keys: Sequence[Column[Any]], last: tuple[Any, ...] | None) -> ColumnElement[bool] | None:
    """Keyset pagination over (possibly composite) key columns: rows strictly after `last`."""
    if last is None:
        return None
    clauses: list[ColumnElement[bool]] = []
    for i, col in enumerate(keys):
        equal = [keys[j] == last[j] for j in range(i)]
        clauses.append(and_(*equal, col > last[i]))
    return or_(*clauses)


def count_old_values(db: Database, key_id: str) -> dict[str, int]:
    """How many values of each encrypted column are not under `key_id` ("table.column" → count)."""
    counts: dict[str, int] = {}
    with db.read() as conn:
        for spec in ENCRYPTED:
            table, _ = _columns(spec)
            for name in spec.columns:
                col = table.c[name]
                counts[f"{spec.table}.{name}"] = int(
                    conn.execute(
                        select(func.count()).select_from(table).where(_not_under(col, key_id))
                    ).scalar_one()
                )
    return counts


def key_status(db: Database) -> list[KeyInfo]:
    """Every data key with its state and how many values it encrypts (never any key material)."""
    with db.read() as conn:
        keys = conn.execute(
            select(
                data_keys.c.id, data_keys.c.state, data_keys.c.created_at, data_keys.c.retired_at
            ).order_by(data_keys.c.created_at, data_keys.c.id)
        ).all()
        infos: list[KeyInfo] = []
        for key in keys:
            prefix = _token_prefix(key.id)
            values = 0
            for spec in ENCRYPTED:
                table, _ = _columns(spec)
                for name in spec.columns:
                    col = table.c[name]
                    values += int(
                        conn.execute(
                            select(func.count())
                            .select_from(table)
                            .where(func.substr(col, 1, len(prefix)) == prefix)
                        ).scalar_one()
                    )
            infos.append(KeyInfo(key.id, key.state, key.created_at, key.retired_at, values))
    return infos


def rotate_data_keys(
    db: Database,
    keyring: KeyRing,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    wait_s: float = DEFAULT_WAIT_S,
    max_passes: int = MAX_PASSES,
) -> RotationReport:
    """Make a new data key active and re-encrypt every value under it (see the module docstring).

    `progress(done, total)` is called after every batch; `total` grows if the service writes values under
    an old key during the rotation. `wait_s` is how long running processes get to load the new key (tests
    with a single key ring pass 0)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    new_key, retired = keyring.start_rotation()
    if wait_s > 0:
        time.sleep(wait_s)
    rotation = _Rotation(db, keyring, new_key, batch_size, progress)
    report = RotationReport(new_key, retired, rotation.columns, 0)
    rotation.total = sum(count_old_values(db, new_key).values())
    rotation.report_progress()
    while True:
        if report.passes >= max_passes:
            raise RotationError(
                f"values under old keys keep appearing after {max_passes} passes: is a process running "
                "with a stale key ring, or another rotation?"
            )
        report.passes += 1
        found = sum(rotation.column(spec, name) for spec in ENCRYPTED for name in spec.columns)
        if found == 0:
            break
        remaining = sum(count_old_values(db, new_key).values()) - len(rotation.unreadable)
        rotation.total = max(rotation.total, rotation.done + remaining)
    rotation.total = rotation.done
    rotation.report_progress()
    return report


class _Rotation:
    """The state of one rotation: the target key, counters, and values known not to decrypt."""

    def __init__(
        self, db: Database, keyring: KeyRing, new_key: str, batch_size: int, progress: Progress | None
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.new_key = new_key
        self.batch_size = batch_size
        self.progress = progress
        self.columns = {f"{s.table}.{c}": ColumnReport() for s in ENCRYPTED for c in s.columns}
        self.unreadable: set[tuple[str, tuple[Any, ...]]] = set()
        self.done = 0
        self.total = 0

    def report_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.done, max(self.total, self.done))

    def column(self, spec: EncryptedTable, name: str) -> int:
        """One pass over one column; returns how many readable values under an old key it met."""
        table, keys = _columns(spec)
        col = table.c[name]
        found = 0
        last: tuple[Any, ...] | None = None
        while True:
            query = select(*keys, col).where(_not_under(col, self.new_key))
            after = _after(keys, last)
            if after is not None:
                query = query.where(after)
            with self.db.read() as conn:
                rows = conn.execute(query.order_by(*keys).limit(self.batch_size)).all()
            if not rows:
                return found
            last = tuple(rows[-1][: len(keys)])
            changes = self._reencrypt(spec, name, [(tuple(r[: len(keys)]), r[len(keys)]) for r in rows])
            found += len(changes)
            written = 0
            if changes:
                with self.db.write() as conn:
                    for key_values, old_token, new_token in changes:
                        match = and_(
                            *(k == v for k, v in zip(keys, key_values, strict=True)), col == old_token
                        )
                        result = conn.execute(update(table).where(match).values({name: new_token}))
                        written += int(result.rowcount)
            report = self.columns[f"{spec.table}.{name}"]
            report.reencrypted += written
            report.conflicts += len(changes) - written
            self.done += written
            self.report_progress()

    def _reencrypt(
        self, spec: EncryptedTable, name: str, values: list[tuple[tuple[Any, ...], str]]
    ) -> list[tuple[tuple[Any, ...], str, str]]:
        """(row key, old token, new token) for each value, outside any transaction."""
        label = f"{spec.table}.{name}"
        where = context(spec.table, name)
        changes: list[tuple[tuple[Any, ...], str, str]] = []
        for key_values, old_token in values:
            if (label, key_values) in self.unreadable:
                continue
            try:
                plain = self.keyring.decrypt(old_token, context=where)
            except CryptoError:
                self.unreadable.add((label, key_values))
                self.columns[label].unreadable.append("/".join(str(v) for v in key_values))
                continue
            new_token = self.keyring.encrypt(plain, context=where)
            if token_key_id(new_token) != self.new_key:
                raise RotationError(
                    f"the active data key is no longer {self.new_key}: another rotation started"
                )
            changes.append((key_values, old_token, new_token))
        return changes
