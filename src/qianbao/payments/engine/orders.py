"""What the payment pipeline takes and gives back: orders (one payment asked for), the way each kind of
payment is staged and written (a `Flow`), and the outcomes.

An order is parsed and validated input only: everything read from the database for it (the
Idempotency-Key's record, the wallets, the recipient, the books) is read inside its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection

from qianbao.errors import QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.ledger.model import TransferSpec
from qianbao.payments.engine.decide import Approve
from qianbao.payments.engine.facts import Books, PaidPayment, PaymentRequest, TargetWallet
from qianbao.store.idempotency import KeyClaim
from qianbao.store.outbox import OutboxEvent

# A record's HTTP answer (status, body); inside the batch it is given the batch's connection and what
# the batch read for the record already (`Flow.seen`: a merchant payment's merchant), else None.
Render = Callable[[Any, Connection | None, Any], tuple[int, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class HttpKey:
    """An HTTP request's Idempotency-Key: claimed in the batch, and its answer stored before the same
    COMMIT. `render` makes the success answer of a record, `render_error` the problem of a decline."""

    claim: KeyClaim
    sealed: bool
    render: Render
    render_error: Callable[[QianbaoError], tuple[int, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Order:
    """One payment asked for. `key` binds the record (and derives `ledger_id`); `http` is set when the
    HTTP layer's Idempotency-Key record is the pipeline's to claim and answer."""

    flow: Flow
    principal: Principal
    payload: Any  # the flow's own parsed input
    ledger_id: str
    key: str | None = None
    step_up: str | None = None  # the Step-Up header: a proved challenge to spend
    http: HttpKey | None = None
    hook: Callable[[Connection, Any], None] | None = None  # runs after the record is written
    refusal: QianbaoError | None = None  # input refused: answered after the key is claimed


@dataclass(frozen=True, slots=True)
class Staged:
    """An order with its state resolved: the engine's request, its recipient (None: not found), the
    other accounts its chain touches, and what the flow needs to write it."""

    order: Order
    request: PaymentRequest
    target: TargetWallet | None
    also_lock: tuple[str, ...] = ()
    refusal: QianbaoError | None = None  # the recipient's own refusal (a receive code), if not found
    extra: Mapping[str, Any] = field(default_factory=dict)
    paid: PaidPayment | None = None  # a refund: the payment it gives back, as staged


class OneByOne(Exception):  # noqa: N818 - control flow: the batch's orders run one by one
    """Orders of one batch act on the same thing (two closings of one wallet, two accepts of one money
    request): deciding them together would answer the second from running books, not from what the
    first did. Each then runs alone, in order, and the second is answered as it would be after the
    first (closed already; not pending)."""


class Stale(Exception):  # noqa: N818 - control flow: the batch is rolled back and tried again
    """A write found the state changed since the batch read it (a conditional update that matched
    nothing): the batch is rolled back and retried, or its orders run one by one."""


@dataclass(frozen=True, slots=True)
class Replay:
    """An order whose record exists already (same ledger id): answered from the record."""

    record: Any


@dataclass(frozen=True, slots=True)
class Done:
    """A payment written, or an earlier one replayed: the record, and the HTTP answer stored with it."""

    record: Any
    answer: tuple[int, dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class Answered:
    """An HTTP answer replayed from the Idempotency-Key record (`problem`: a bound refusal)."""

    status: int
    payload: Any

    @property
    def problem(self) -> bool:
        return self.status >= 400


@dataclass(frozen=True, slots=True)
class NeedsStepUp:
    """Approved, but fresh proof is needed first: the caller creates the challenge (`401`)."""

    reasons: tuple[str, ...]
    params: Mapping[str, Any]


Outcome = Done | Answered | NeedsStepUp


class Flow(Protocol):
    """One kind of payment: how its orders are staged and how its records are written."""

    what: str  # "transfer", "payment": the object a reused key is told about
    ids_name_their_subject: bool  # ledger ids derive from what they act on: replayed without a key

    def stage(
        self, ctx: IdentityContext, conn: Connection, orders: Sequence[Order], now: int
    ) -> list[Staged | Replay | QianbaoError]: ...

    def existing(self, ctx: IdentityContext, conn: Connection, ledger_ids: Sequence[str]) -> dict[str, Any]:
        """The records already bound to these ledger ids (by ledger id): an earlier attempt's outcome."""
        ...

    def step_up_params(self, staged: Staged) -> dict[str, Any]: ...

    def seen(self, staged: Staged) -> Any:
        """What the batch read that the record's answer shows (None: nothing)."""
        ...

    def chain(self, staged: Staged, decision: Approve) -> list[TransferSpec]: ...

    def record(self, staged: Staged, decision: Approve, now: int, failure: QianbaoError | None) -> Any: ...

    def declined(self, staged: Staged, error: QianbaoError, record: Any, books: Books) -> QianbaoError:
        """The decline's error as answered: with the failed record's id (and what else it may tell)."""
        ...

    def refused(
        self, ctx: IdentityContext, conn: Connection, staged: Staged, error: QianbaoError
    ) -> tuple[QianbaoError, list[OutboxEvent]]:
        """A decline of the decision (before the ledger): the error answered, and what the flow writes
        for it in the batch (most write nothing: the check before step-up records nothing)."""
        ...

    def replay(self, record: Any, order: Order) -> Any:
        """A record found again: itself, or (a recorded decline) the error raised again."""
        ...

    def write(
        self, ctx: IdentityContext, conn: Connection, written: Sequence[tuple[Staged, Any]]
    ) -> list[OutboxEvent]: ...


class FlowDefaults:
    """What most flows do alike (a `Flow` overrides what it does differently): nothing shown from the
    batch, no step-up binding, a decline answered with its record's id (`reference`), nothing recorded
    for the decision's declines, a record found again answered as it is."""

    what = "payment"
    ids_name_their_subject = False
    reference: str | None = None  # the problem field naming a declined record ("payment_id", …)

    def seen(self, staged: Staged) -> Any:  # noqa: ARG002 - the flow's signature
        return None

    def step_up_params(self, staged: Staged) -> dict[str, Any]:  # noqa: ARG002 - the flow's signature
        return {}

    def declined(
        self,
        staged: Staged,  # noqa: ARG002 - the flow's signature
        error: QianbaoError,
        record: Any,
        books: Books,  # noqa: ARG002
    ) -> QianbaoError:
        if self.reference is not None:
            error.extra[self.reference] = record.id
        return error

    def refused(
        self,
        ctx: IdentityContext,  # noqa: ARG002 - the flow's signature
        conn: Connection,  # noqa: ARG002
        staged: Staged,  # noqa: ARG002
        error: QianbaoError,
    ) -> tuple[QianbaoError, list[OutboxEvent]]:
        return error, []  # the check before step-up records nothing

    def replay(self, record: Any, order: Order) -> Any:  # noqa: ARG002 - the flow's signature
        return record
