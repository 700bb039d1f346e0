"""Staff who sign in to the dashboard, what they did (the audit log), and failed sign-ins.

Passwords are stored only as argon2 hashes (worker.dashboard.passwords). Failed sign-ins live in the
database, not in a process, so the lockout holds across every web process and restart.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from models.types import UTCDateTime, utcnow

ROLES = ("viewer", "staff", "admin")


class StaffUser(SQLModel, table=True):
    __tablename__ = "staff_users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)  # stored lower-cased
    role: str = Field(max_length=16)  # viewer | staff | admin
    password_hash: str = Field(max_length=200)
    disabled: bool = False
    language: str | None = Field(default=None, max_length=8)  # en | ja; None: from Accept-Language
    # Failed sign-ins in a row, and until when the account refuses every sign-in after too many.
    failed_sign_ins: int = 0
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Raised on a password change or disable: sessions signed with an older value stop working.
    session_version: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_sign_in_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuditEntry(SQLModel, table=True):
    """One staff action: sign-in (or a refused one), acknowledge, resolve, note, replay, user change."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    actor: str = Field(max_length=320)  # a staff email, or "cli:<os user>" for the users command
    action: str = Field(max_length=40)  # sign_in | sign_in_refused | sign_out | acknowledge | ...
    target: str | None = Field(default=None, max_length=320)  # "alert:12", "event:evt_...", an email
    detail: str | None = Field(default=None, sa_column=Column(Text))
    client_address: str | None = Field(default=None, max_length=64)


class SignInFailure(SQLModel, table=True):
    """A refused sign-in from a client address, kept for the per-address limit's window."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (Index("ix_sign_in_failures_address_at", "client_address", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    client_address: str = Field(max_length=64)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
