"""The store's tables: fixed ORM models plus the entity columns built from `entity` declarations.

Two kinds of tables live here:

* Fixed tables (users, contacts' core, metric points, events, enrollments,
  opportunities, tasks, outbox, outcomes, decisions, audit log). They are
  SQLAlchemy 2 declarative models on `Base.metadata`, and the Alembic
  migrations in `engine/migrations/versions/` create exactly them (a test
  compares the two with Alembic's autogenerate).
* Declared columns: every `field` of `entity account` (and `entity contact`)
  becomes a typed column of `accounts` (`contacts`). Those depend on the
  user's .play files, so no migration can know them: `engine.store.sync_entities`
  adds them at run time, and `entity_table()` builds a Core `Table` with the
  core and the declared columns for the evaluator and the importers.

Names of tables and columns here are an API: connectors/ and workflows/
write to them. Add, never rename.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from dsl import nodes as n

# Stable constraint names, so migrations on SQLite (batch mode) and
# PostgreSQL can address constraints by name later.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A point in time, always returned as an aware UTC datetime.

    Why: SQLite has no time zone type and hands back naive datetimes while
    PostgreSQL's timestamptz hands back aware ones; callers (workflows that
    compare `sent_at` with a deadline) must see the same thing on both.
    Naive inputs are taken as UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(dt.timezone.utc)
        # SQLite stores text; keep it naive so lexical order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


# JSONB on PostgreSQL (indexable, compact); JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# Autoincrement ids: BIGINT on PostgreSQL, but INTEGER on SQLite, where only
# `INTEGER PRIMARY KEY` aliases the rowid (BIGINT would not autoincrement).
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    # Every model here maps a plain Table (none maps a join or a subquery), so
    # `Model.__table__` has Table's methods (`insert`, `delete`) for the type checker.
    __table__: ClassVar[Table]


# --------------------------------------------------------------------------
# People and accounts


class Account(Base):
    """Core columns only; the declared fields are added by `sync_entities`.

    Use `entity_table(catalog, "account")` to read or write declared fields.
    """

    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)


class User(Base):
    """People on our side who own accounts and tasks: CSMs, AEs."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    email: Mapped[str | None] = mapped_column(Text, unique=True)
    name: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str | None] = mapped_column(Text)  # csm, ae, ... (free text)
    # users.id of who an overdue deal escalates to (pipeline SLAs); no foreign
    # key: users are imported in any order.
    manager: Mapped[str | None] = mapped_column(Text)


class Contact(Base):
    """People at the customer. Declared `entity contact` fields are added like accounts'."""

    __tablename__ = "contacts"
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    email: Mapped[str | None] = mapped_column(Text, index=True)
    name: Mapped[str | None] = mapped_column(Text)
    first_name: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str | None] = mapped_column(Text)  # IANA zone, for send windows
    # Set by the inbound `unsubscribed` event; outbound email must skip the contact.
    unsubscribed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # A mail server refused the address for good (5xx at RCPT): skipped like an unsubscribe.
    bounced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


# --------------------------------------------------------------------------
# Signals: time series and events


class MetricPoint(Base):
    """One value of a declared metric for one account on one day.

    The primary key leads with `metric` on purpose: window functions are
    evaluated set-wise (`WHERE metric = ? AND date > ? GROUP BY account_id`),
    and with (metric, account_id, date) as a clustered key (WITHOUT ROWID on
    SQLite) that scan reads one contiguous, account-ordered, covering range.
    No foreign key to accounts: at a million accounts this table holds tens
    of millions of rows, and SQLite would have to scan it for every deleted
    account; the importers check account ids instead.
    """

    __tablename__ = "metric_points"
    # One account's history (the reference evaluator, `playbook why`) is a
    # primary-key range per metric. The second index finds the accounts with
    # a point on given days (a window's edges, engine/changes.py) without
    # reading every point of the metric.
    __table_args__ = (Index("ix_metric_points_metric_date_account_id", "metric", "date", "account_id"),
                      {"sqlite_with_rowid": False})
    metric: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(Text, primary_key=True)
    date: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    value: Mapped[float | None] = mapped_column(Double)


# Points kept in each `metric_series` row: the latest and the KEPT - 1 before it.
# Enough for the windows rules use on sparse series (weekly points over 90 days
# are 13); a window reaching past them reads `metric_points` (docs/engine.md).
KEPT = 16


def _kept_columns() -> list[sa.Column[Any]]:
    """p<i>_day (days since 1970-01-01) and p<i>_value of the i-th point before the latest."""
    return [c for i in range(1, KEPT)
            for c in (sa.Column(f"p{i}_day", Integer), sa.Column(f"p{i}_value", Double))]


class MetricSeries(Base):
    """A rollup of `metric_points`: each (metric, account)'s latest KEPT points.

    Window functions over metrics start here (engine/sqlfunctions.py): one
    row per account that has the metric, holding `latest`, and every point
    of a window when the window lies within the kept points, so such a
    window is read from this row alone; others seek into `metric_points`.
    `kept` is how many points the row holds (fewer than KEPT: the whole
    series); NULL: only the latest is known (a row written by something
    that predates the kept points), and windows seek. Kept exact by every
    writer of points through engine/rollups.py.
    """

    __table__ = Table(
        "metric_series", Base.metadata,
        sa.Column("metric", Text, primary_key=True),
        sa.Column("account_id", Text, primary_key=True),
        sa.Column("last_date", Date, nullable=False),
        sa.Column("last_value", Double),
        sa.Column("kept", Integer),
        *_kept_columns(),
        sqlite_with_rowid=False,
    )


class Event(Base):
    """A dated occurrence of a declared event (funding, hiring, NPS response, ticket).

    `key` makes re-imports idempotent: the source's event id when it has
    one, else `account_id|event|occurred_at` (see docs/store.md).
    `occurred_on` is the UTC day of `occurred_at`, stored so day windows are
    a plain range test on both databases.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_event_account_id_occurred_on", "event", "account_id", "occurred_on"),
        Index("ix_events_event_occurred_on_account_id", "event", "occurred_on", "account_id"),
        Index("ix_events_account_id_occurred_at", "account_id", "occurred_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(Text, unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    event: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    occurred_on: Mapped[dt.date] = mapped_column(Date)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


# --------------------------------------------------------------------------
# Plays in flight


class Enrollment(Base):
    """One run of a play for an account (a Temporal workflow execution).

    The partial unique index is the store's half of the invariant "one
    account is never in the same play twice at once".
    """

    __tablename__ = "enrollments"
    __table_args__ = (
        Index(
            "uq_enrollments_running_play_account",
            "play", "account_id",
            unique=True,
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        ),
        Index("ix_enrollments_account_id_play", "account_id", "play"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    workflow_id: Mapped[str] = mapped_column(Text, index=True)  # play:<play>:<account>
    run_id: Mapped[str | None] = mapped_column(Text)
    play: Mapped[str] = mapped_column(Text)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    plan_hash: Mapped[str] = mapped_column(Text)
    trigger: Mapped[str | None] = mapped_column(Text)
    route: Mapped[str | None] = mapped_column(Text)
    # running | completed | exited | failed | cancelled
    status: Mapped[str] = mapped_column(Text, default="running")
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Opportunity(Base):
    """An expansion deal in the built-in SQL pipeline (or mirrored from a CRM)."""

    __tablename__ = "opportunities"
    __table_args__ = (Index("ix_opportunities_account_id_play", "account_id", "play"),)
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    play: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(Text)
    amount: Mapped[float | None] = mapped_column(Double)
    owner: Mapped[str | None] = mapped_column(Text)  # users.id
    # `<workflow id>:<step>` when a play created it: a retried step finds it again.
    idempotency_key: Mapped[str | None] = mapped_column(Text, unique=True)
    external_id: Mapped[str | None] = mapped_column(Text)  # the CRM's deal id
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class StageChange(Base):
    """Append-only history of an opportunity's stages (the first row is its creation)."""

    __tablename__ = "stage_history"
    __table_args__ = (Index("ix_stage_history_opportunity_id_at", "opportunity_id", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    opportunity_id: Mapped[str] = mapped_column(ForeignKey("opportunities.id"))
    from_stage: Mapped[str | None] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str | None] = mapped_column(Text)  # user id, "play:<name>", "crm"
    reason: Mapped[str | None] = mapped_column(Text)  # reason code: "budget_approved", "lost:price"


class SlaBreach(Base):
    """A pipeline SLA that ran out (dsl/pipeline.py), one row per level told: the owner, then the manager.

    `key` (opportunity, stage, when it entered the stage, level) is UNIQUE and
    is also the idempotency key of the notification, so a retried or replayed
    timer tells nobody twice. Reports count breaches by stage and owner.
    """

    __tablename__ = "sla_breaches"
    __table_args__ = (Index("ix_sla_breaches_stage_owner", "stage", "owner"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(Text, unique=True)
    opportunity_id: Mapped[str] = mapped_column(ForeignKey("opportunities.id"), index=True)
    account_id: Mapped[str] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(Text)  # owner | manager
    owner: Mapped[str | None] = mapped_column(Text)  # the deal's owner when it breached
    notified: Mapped[str | None] = mapped_column(Text)  # users.id told; None: nobody to tell
    entered_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # when the deal entered the stage
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # the SLA deadline
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)  # when this level was told


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_assignee_status", "assignee", "status"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(Text, unique=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    play: Mapped[str | None] = mapped_column(Text)
    assignee: Mapped[str | None] = mapped_column(Text)  # users.id
    title: Mapped[str] = mapped_column(Text)
    due: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(Text, default="open")  # open | done | cancelled
    external_id: Mapped[str | None] = mapped_column(Text)  # the CRM's task id
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class OutboxMessage(Base):
    """An outbound message, written before it is sent (transactional outbox).

    `idempotency_key` (`<workflow id>:<step>`) is UNIQUE: a retried or
    replayed step inserts nothing new, so a customer is never emailed twice.
    No foreign key on account_id: messages may go to people outside any
    account (a Slack channel, a webhook) and must outlive account deletes.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_created_at", "status", "created_at"),
        Index("ix_outbox_recipient_created_at", "recipient", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(Text, unique=True)
    channel: Mapped[str] = mapped_column(Text)  # email | slack | webhook | ...
    recipient: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, default="")
    # pending | sending | sent | failed | cancelled
    status: Mapped[str] = mapped_column(Text, default="pending")
    account_id: Mapped[str | None] = mapped_column(Text, index=True)
    play: Mapped[str | None] = mapped_column(Text)
    # Email: the Message-ID header, angle brackets included (replies are matched by it).
    provider_message_id: Mapped[str | None] = mapped_column(Text, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class InboundEvent(Base):
    """An event a provider reported (reply, bounce, unsubscribe, stage change), stored before
    any play hears of it.

    `key` (`<source>:<provider's event id>`) is UNIQUE: a redelivered webhook
    or a message read twice records nothing new. `signal_state` is the
    pending-signal marker: `pending` until every running play of the account
    has been signalled (`done`), so an event that arrived while Temporal was
    down is delivered later, not lost; `failed` after repeated refusals.
    """

    __tablename__ = "inbound_events"
    __table_args__ = (Index("ix_inbound_events_signal_state_id", "signal_state", "id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(Text, unique=True)
    source: Mapped[str] = mapped_column(Text)  # standard | hubspot | postmark | unsubscribe | imap
    kind: Mapped[str] = mapped_column(Text)  # an inbound event name: replied, bounced, stage_changed, ...
    account_id: Mapped[str] = mapped_column(Text, index=True)
    contact: Mapped[str | None] = mapped_column(Text)  # the address or contact id it concerns
    play: Mapped[str | None] = mapped_column(Text)  # a reply to this play's message: only it is signalled
    stage: Mapped[str | None] = mapped_column(Text)  # the new stage, for stage_changed
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # at the source
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload: Mapped[Any] = mapped_column(JSONType, nullable=True)
    signal_state: Mapped[str] = mapped_column(Text, default="pending")  # pending | done | failed
    signalled: Mapped[Any] = mapped_column(JSONType, nullable=True)  # the plays that got the signal
    signal_attempts: Mapped[int] = mapped_column(Integer, default=0)
    signal_error: Mapped[str | None] = mapped_column(Text)


class Outcome(Base):
    """What a play achieved: won or lost (an expansion deal), churned or contracted (the
    base shrinking), with its value in ARR. Written only by engine/outcomes.py.

    `key` makes recording idempotent: `opportunity:<id>` when the outcome closes an
    opportunity, else `enrollment:<id>`, else the caller's own (docs/outcomes.md).
    """

    __tablename__ = "outcomes"
    __table_args__ = (
        Index("ix_outcomes_account_id_play", "account_id", "play"),
        Index("uq_outcomes_key", "key", unique=True),
        Index("ix_outcomes_at", "at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    play: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)  # won | lost | churned | contracted
    value: Mapped[float | None] = mapped_column(Double)  # ARR won, lost or churned
    enrollment_id: Mapped[int | None] = mapped_column(ForeignKey("enrollments.id"))
    opportunity_id: Mapped[str | None] = mapped_column(ForeignKey("opportunities.id"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)  # when it closed
    reason: Mapped[str | None] = mapped_column(Text)  # reason code, e.g. price, timing, no_budget
    objection: Mapped[str | None] = mapped_column(Text)
    champion: Mapped[str | None] = mapped_column(Text)
    approver: Mapped[str | None] = mapped_column(Text)
    days_to_close: Mapped[float | None] = mapped_column(Double)  # from the signal to `at`
    source: Mapped[str | None] = mapped_column(Text)  # pipeline | crm | csv | cli | simulation
    key: Mapped[str | None] = mapped_column(Text)


class EnrollmentDecision(Base):
    """Why an account was (not) started in a play at a sweep: gate, cooldown, cap, ..."""

    __tablename__ = "enrollment_decisions"
    __table_args__ = (Index("ix_enrollment_decisions_account_id_play_at", "account_id", "play", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    play: Mapped[str] = mapped_column(Text)
    decision: Mapped[str] = mapped_column(Text)  # enrolled | skipped | ...
    trigger: Mapped[str | None] = mapped_column(Text)
    plan_hash: Mapped[str | None] = mapped_column(Text)
    reasons: Mapped[Any] = mapped_column(JSONType, nullable=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class AccountChange(Base):
    """An account whose rule inputs (fields, metric points, events, enrollments) were written.

    Append-only; the sweep reads the rows above its watermark (`sweep_marks`)
    and deletes those it has evaluated (engine/changes.py).
    """

    __tablename__ = "account_changes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(Text)
    # The account fields written, comma-separated in name order; NULL: anything (points, events,
    # enrollments, new accounts, writers that do not say).
    fields: Mapped[str | None] = mapped_column(Text)


class SweepMark(Base):
    """Where the last recorded sweep left off: its day, the last change it saw, its rules."""

    __tablename__ = "sweep_marks"
    name: Mapped[str] = mapped_column(Text, primary_key=True)  # "sweep"
    day: Mapped[dt.date] = mapped_column(Date)
    change_id: Mapped[int] = mapped_column(BigInteger)
    rules_hash: Mapped[str] = mapped_column(Text)


class SweepRecheck(Base):
    """An account the last sweep skipped for a reason that can lapse on its own (cooldown, cap, priority)."""

    __tablename__ = "sweep_rechecks"
    account_id: Mapped[str] = mapped_column(Text, primary_key=True)


class PlayPause(Base):
    """A pause in force (`playbook pause`): one row per play paused, `*` for every play.

    Read when plays are started, so an enrollment made while its play is
    paused starts paused; the row goes at `playbook resume`. The history
    of pauses is in the audit log.
    """

    __tablename__ = "play_pauses"
    scope: Mapped[str] = mapped_column(Text, primary_key=True)  # a play's name, or "*"
    paused_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    paused_by: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)


class WebhookEndpoint(Base):
    """A webhook URL that answered 410 Gone: disabled, so later calls to it fail at once.

    Standard Webhooks: a 410 means the receiver removed the endpoint. Deleting
    the row (engine/endpoints.py `enable`) sends to it again.
    """

    __tablename__ = "webhook_endpoints"
    url: Mapped[str] = mapped_column(Text, primary_key=True)
    disabled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(Text)  # "HTTP 410 Gone from play usage_limit step s3"


class AuditEntry(Base):
    """Append-only log of who did what (imports, enrollments, manual overrides)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[Any] = mapped_column(JSONType, nullable=True)


class AccountFieldHistory(Base):
    """What an account's fields held before, with when (valid_from..valid_to); see engine/history.py.

    Per account one row `field = "*"` (known since its first import, no
    value), and per replaced value one row holding it, closed by the import
    that replaced it; current values are the account's own columns, so an
    unchanged value costs nothing. Numbers, ints and booleans (1/0) go in
    `value_number`; text, enums, dates (ISO) and datetimes (ISO, UTC) in
    `value_text`. The key leads with the account: one account's past is one
    range, a backtest over all accounts one scan.
    """

    __tablename__ = "account_field_history"
    __table_args__ = ({"sqlite_with_rowid": False},)
    account_id: Mapped[str] = mapped_column(Text, primary_key=True)
    field: Mapped[str] = mapped_column(Text, primary_key=True)
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime, primary_key=True)
    valid_to: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    value_number: Mapped[float | None] = mapped_column(Double)
    value_text: Mapped[str | None] = mapped_column(Text)


class SyncCursor(Base):
    """Where a source's sync stands (`playbook sync`, engine/sync.py): written in the transaction of each batch,
    so a sync that dies resumes after the last batch it wrote. None: start with a full load."""

    __tablename__ = "sync_cursors"
    source: Mapped[str] = mapped_column(Text, primary_key=True)
    cursor: Mapped[Any] = mapped_column(JSONType, nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class SyncRun(Base):
    """One sync of one source: what it read, changed and refused, and how it ended."""

    __tablename__ = "sync_runs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text, index=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(Text)  # running, ok, refused (a batch's data), failed (the source), interrupted
    full: Mapped[bool] = mapped_column(Boolean, default=False)  # read everything, not from the cursor
    batches: Mapped[int] = mapped_column(Integer, default=0)  # batches written
    read: Mapped[int] = mapped_column(Integer, default=0)  # records read (written batches and the refused one)
    created: Mapped[int] = mapped_column(Integer, default=0)  # records that were new rows
    updated: Mapped[int] = mapped_column(Integer, default=0)  # records whose row existed
    changed: Mapped[int] = mapped_column(Integer, default=0)  # field values that changed
    refused: Mapped[int] = mapped_column(Integer, default=0)  # records of the refused batch with a problem
    # Rows of a `named by` source naming an event it does not land, and how many per name.
    skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    skipped_names: Mapped[Any] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)  # why it was refused or failed (no secret)
    cursor: Mapped[Any] = mapped_column(JSONType, nullable=True)  # the cursor it ended at
    # Who runs it ("host pid") and its last sign of life (start, each batch): a
    # run left 'running' by a killed process is told apart from a live one.
    owner: Mapped[str | None] = mapped_column(Text, nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class EntityField(Base):
    """Which declared fields `sync_entities` has added, with the type they were added as.

    Why a table: reflected SQLite types are too coarse to tell `percent`
    from `number` or `enum` from `text`, and a type change in a .play file
    must be reported, not silently applied.
    """

    __tablename__ = "entity_fields"
    entity: Mapped[str] = mapped_column(Text, primary_key=True)
    field: Mapped[str] = mapped_column(Text, primary_key=True)
    type: Mapped[str] = mapped_column(Text)  # TypeName value
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


# --------------------------------------------------------------------------
# Declared (dynamic) columns

# entity name -> table holding it, and that table's fixed columns.
ENTITY_TABLES: dict[str, str] = {"account": "accounts", "contact": "contacts"}
CORE_COLUMNS: dict[str, tuple[str, ...]] = {
    "account": tuple(c.name for c in Account.__table__.columns),
    "contact": tuple(c.name for c in Contact.__table__.columns),
}

# How a declared type is stored. money is a double, not NUMERIC: rule values
# mix money with numbers and percents, and the reference evaluator (Python
# floats) must agree bit for bit with SQL. duration is stored in days.
# user and contact hold an id (users.id / contacts.id) with no foreign key,
# since accounts are usually imported before their people.
TYPE_MAP: dict[n.TypeName, sa.types.TypeEngine[Any]] = {
    n.TypeName.INT: BigInteger(),
    n.TypeName.NUMBER: Double(),
    n.TypeName.PERCENT: Double(),
    n.TypeName.MONEY: Double(),
    n.TypeName.BOOL: Boolean(),
    n.TypeName.TEXT: Text(),
    n.TypeName.ENUM: Text(),
    n.TypeName.DATE: Date(),
    n.TypeName.DATETIME: UTCDateTime(),
    n.TypeName.DURATION: Double(),
    n.TypeName.USER: Text(),
    n.TypeName.CONTACT: Text(),
}

# Declared types a core column may take, when a declaration re-declares it.
CORE_COMPATIBLE: dict[str, set[n.TypeName]] = {
    "name": {n.TypeName.TEXT},
    "email": {n.TypeName.TEXT},
    "first_name": {n.TypeName.TEXT},
    "timezone": {n.TypeName.TEXT},
}


def declared_column(field: n.FieldDecl) -> sa.Column[Any]:
    """The column of one declared field. Always NULLable in the database:
    columns are added to tables that already hold rows, and `field x int`
    (not `int?`) is enforced by the importers instead."""
    return sa.Column(field.name, TYPE_MAP[field.type.name], nullable=True)


def entity_table(entity: n.EntityDecl | None, kind: str = "account", metadata: MetaData | None = None) -> Table:
    """A Core table with the core columns plus the declared ones of `entity`.

    Built in its own MetaData (not `Base.metadata`, whose `accounts` holds
    the core columns only). Fields whose names are core columns keep the
    core column. Pass the catalog's `entities["account"]`; None gives the core.
    """
    core = Base.metadata.tables[ENTITY_TABLES[kind]]
    md = metadata if metadata is not None else MetaData()
    cols: list[sa.Column[Any]] = [sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                                  for c in core.columns]
    core_names = {c.name for c in core.columns}
    for f in entity.fields if entity is not None else []:
        if f.name not in core_names:
            cols.append(declared_column(f))
    return Table(ENTITY_TABLES[kind], md, *cols)


__all__ = [
    "Account", "AccountFieldHistory", "AuditEntry", "Base", "BigId", "CORE_COLUMNS", "Contact", "ENTITY_TABLES", "EntityField",
    "Enrollment", "EnrollmentDecision", "Event", "InboundEvent", "JSONType", "MetricPoint", "Opportunity", "Outcome",
    "OutboxMessage", "PlayPause", "SlaBreach", "StageChange", "TYPE_MAP", "Task", "UTCDateTime", "User",
    "WebhookEndpoint",
    "declared_column",
    "entity_table", "utcnow",
]
