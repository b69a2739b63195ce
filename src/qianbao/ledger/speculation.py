"""Speculative batch preparation: decide a batch before taking any lock, then confirm under the lock.

The writer's critical section (rows locked → COMMIT) used to contain the Python work of deciding and
encoding a batch, so Python and the database took turns. Here a preparing thread decides batch N+1
against a cache of account states (their states after the batches already handed to the writer) while
the writer commits batch N. Under its locks the writer then checks, in one statement, that every account
the batch read is exactly as assumed, including `last_seq`, the account's version. If anything differs
(another process or service wrote, a hold was resolved elsewhere, an id was taken) the speculation is
discarded and the batch is decided again the ordinary way, under the locks.

So the cache is a guess, never a source of truth: correctness still comes from the database.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from qianbao.clock import Clock
from qianbao.ledger.model import (
    RESOLUTION_KINDS,
    Account,
    Transfer,
    TransferKind,
    TransferResult,
    TransferSpec,
)
from qianbao.ledger.repository import LedgerRepository
from qianbao.ledger.rules import BatchState, apply_batch
from qianbao.store.database import Database

_CACHE_LIMIT = 500_000  # accounts; past this the cache starts again rather than grow without bound
_RECENT_LIMIT = 200_000  # transfers remembered from recent batches (for replays not yet committed)


@dataclass(slots=True)
class Speculation:
    specs: Sequence[TransferSpec]
    group_ends: frozenset[int]
    generation: int
    results: list[TransferResult]
    expected: Any  # encoded states the batch assumed, checked under lock
    inserts: Any  # encoded new transfers, or None
    updates: Any  # encoded new balances, or None
    seq_range: tuple[int, int] | None  # SQLite: the numbers this batch claims


class Speculator:
    """Owned by one thread. `generation` is bumped by the writer whenever a speculation failed."""

    def __init__(self, db: Database, repo: LedgerRepository, clock: Clock) -> None:
        self.db = db
        self.repo = repo
        self.clock = clock
        self.generation = 0
        self._seen_generation = -1
        self._accounts: dict[str, Account] = {}
        self._recent: dict[str, Transfer] = {}
        self._resolved: dict[str, TransferKind] = {}
        self._next_seq = 0  # SQLite only

    def _reset_if_invalidated(self) -> int:
        generation = self.generation
        if generation != self._seen_generation or len(self._accounts) > _CACHE_LIMIT:
            self._accounts.clear()
            self._recent.clear()
            self._resolved.clear()
            self._next_seq = 0
            self._seen_generation = generation
        elif len(self._recent) > _RECENT_LIMIT:
            self._recent.clear()
            self._resolved.clear()
        return generation

    def prepare(self, specs: Sequence[TransferSpec], group_ends: frozenset[int]) -> Speculation:
        generation = self._reset_if_invalidated()
        repo = self.repo
        cache = self._accounts
        pending_ids = {s.pending_id for s in specs if s.pending_id}
        with self.db.read() as conn:
            pendings = {pid: self._recent[pid] for pid in pending_ids if pid in self._recent}
            pendings.update(repo.transfers_by_id(conn, pending_ids - pendings.keys()))
            resolutions = repo.resolutions(conn, pending_ids)
            for pid in pending_ids:
                if pid in self._resolved:
                    resolutions[pid] = self._resolved[pid]
            wanted: set[str] = set()
            for spec in specs:
                wanted.add(spec.debit_account_id)
                wanted.add(spec.credit_account_id)
            for pending in pendings.values():
                wanted.add(pending.debit_account_id)
                wanted.add(pending.credit_account_id)
            wanted.discard("")
            missing = [a for a in wanted if a not in cache]
            if missing:
                cache.update(repo.lock_balances(conn, missing, lock=False))
            ids = [s.id for s in specs if s.id]
            existing = {i: self._recent[i] for i in ids if i in self._recent}
            existing.update(repo.transfers_by_id(conn, [i for i in ids if i not in existing]))
            seqs = self._reserve_seqs(conn, len(specs))
        involved = [cache[a] for a in wanted if a in cache]
        expected = repo.encode_expected(involved)
        state = BatchState(
            accounts=cache,
            existing=existing,
            pendings=pendings,
            resolutions=resolutions,
            now=self.clock.now_us(),
        )
        outcome = apply_batch(specs, group_ends, state, seqs)
        for transfer in outcome.created:
            self._recent[transfer.id] = transfer
            if transfer.kind in RESOLUTION_KINDS and transfer.pending_id is not None:
                self._resolved[transfer.pending_id] = transfer.kind
        touched = list(outcome.touched.values())
        seq_range = None
        if not self.db.is_postgresql and outcome.created:
            seq_range = (outcome.created[0].seq, outcome.created[-1].seq)
        return Speculation(
            specs=specs,
            group_ends=group_ends,
            generation=generation,
            results=outcome.results,
            expected=expected,
            inserts=repo.encode_transfers(outcome.created) if outcome.created else None,
            updates=repo.encode_balances(touched) if touched else None,
            seq_range=seq_range,
        )

    def _reserve_seqs(self, conn: Any, count: int) -> Iterator[int]:
        if self.db.is_postgresql:
            # Drawn before the writer locks anything; `last_seq` in the expected states makes sure no
            # transfer with a higher number reached these accounts in between.
            return iter(self.repo.reserve_seqs(conn, count))
        if self._next_seq == 0:
            self._next_seq = self.repo.peek_seq(conn) + 1
        first = self._next_seq
        self._next_seq += count
        return itertools.count(first)
