"""Staff accounts: creating and changing them, checking a sign-in, and the audit log.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended profile).
A sign-in is refused when the account is locked (too many failures in a row) or when its client
address failed too often within the lockout window, whatever the password: that stops both guessing
one account's password and spraying one password over many accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update

from models import AuditEntry, Database, SignInFailure, StaffUser
from models.staff import ROLES
from models.types import utcnow

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 accepts more; a megabyte "password" is a denial of service
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
LANGUAGES = ("en", "ja")

_hasher = PasswordHasher()
# Verified against when the email is unknown, so a wrong email costs as long as a wrong password.
_UNKNOWN_USER_HASH = _hasher.hash("no such user: this hash only keeps timing equal")


class AccountError(ValueError):
    """A user change that cannot be made; its message is one line for the person who asked."""


@dataclass(frozen=True)
class SignInPolicy:
    max_failures: int = 5
    max_failures_per_address: int = 20
    lockout: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class SignInResult:
    user: StaffUser | None
    refusal: str | None  # None when signed in; else "wrong" | "locked" | "address_limited"


def normalise_staff_email(email: str) -> str:
    value = (email or "").strip().lower()
    if "@" not in value or len(value) > 320 or any(c.isspace() for c in value):
        raise AccountError(f"not an email address: {email!r}")
    return value


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters")


def check_role(role: str) -> str:
    if role not in ROLE_RANK:
        raise AccountError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def has_role(user: StaffUser, needed: str) -> bool:
    return ROLE_RANK.get(user.role, -1) >= ROLE_RANK[needed]


def audit(
    session,
    actor: str,
    action: str,
    target: str | None = None,
    detail: str | None = None,
    address: str | None = None,
) -> None:
    session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail, client_address=address))


def add_user(db: Database, email: str, role: str, password: str, *, actor: str) -> StaffUser:
    email = normalise_staff_email(email)
    check_role(role)
    check_password_rules(password)
    with db.session() as session:
        if session.execute(select(StaffUser.id).where(StaffUser.email == email)).first():
            raise AccountError(f"{email} already has an account; use `users set-password` or `users role`")
        user = StaffUser(email=email, role=role, password_hash=_hasher.hash(password))
        session.add(user)
        audit(session, actor, "user_add", email, f"role {role}")
        session.flush()
        session.expunge(user)
        return user


def list_users(db: Database) -> list[StaffUser]:
    with db.reading() as session:
        users = session.execute(select(StaffUser).order_by(StaffUser.email)).scalars().all()
        for user in users:
            session.expunge(user)
        return list(users)


def _change(db: Database, email: str, actor: str, action: str, detail: str | None, **values) -> StaffUser:
    email = normalise_staff_email(email)
    with db.session() as session:
        user = session.execute(select(StaffUser).where(StaffUser.email == email)).scalar_one_or_none()
        if user is None:
            raise LookupError(f"there is no staff account {email}")
        for name, value in values.items():
            setattr(user, name, value(user) if callable(value) else value)
        audit(session, actor, action, email, detail)
        session.flush()
        session.expunge(user)
        return user


def set_password(db: Database, email: str, password: str, *, actor: str) -> StaffUser:
    """A new password; sessions signed in with the old one end, and a lockout is lifted."""
    check_password_rules(password)
    return _change(
        db,
        email,
        actor,
        "user_set_password",
        None,
        password_hash=_hasher.hash(password),
        session_version=lambda user: user.session_version + 1,
        failed_sign_ins=0,
        locked_until=None,
    )


def disable_user(db: Database, email: str, *, actor: str) -> StaffUser:
    """No more sign-ins, and its open sessions end at their next request."""
    return _change(
        db, email, actor, "user_disable", None, disabled=True, session_version=lambda u: u.session_version + 1
    )


def enable_user(db: Database, email: str, *, actor: str) -> StaffUser:
    return _change(
        db, email, actor, "user_enable", None, disabled=False, failed_sign_ins=0, locked_until=None
    )


def set_role(db: Database, email: str, role: str, *, actor: str) -> StaffUser:
    check_role(role)
    return _change(db, email, actor, "user_role", f"role {role}", role=role)


def set_language(db: Database, user_id: int, language: str | None, *, actor: str) -> None:
    if language is not None and language not in LANGUAGES:
        raise AccountError(f"unknown language {language!r}")
    with db.session() as session:
        session.execute(update(StaffUser).where(StaffUser.id == user_id).values(language=language))
        audit(session, actor, "set_language", actor, language or "browser")


def sign_in(
    db: Database, email: str, password: str, address: str, policy: SignInPolicy, now: datetime | None = None
) -> SignInResult:
    """Check a sign-in and record it (and any refusal) in the audit log."""
    now = now or utcnow()
    try:
        email = normalise_staff_email(email)
    except AccountError:
        email = (email or "")[:320]
    password = (password or "")[:MAX_PASSWORD_LENGTH]
    with db.session() as session:
        since = now - policy.lockout
        session.execute(delete(SignInFailure).where(SignInFailure.at < since))
        address_failures = session.execute(
            select(func.count())
            .select_from(SignInFailure)
            .where(SignInFailure.client_address == address, SignInFailure.at >= since)
        ).scalar_one()
        user = session.execute(select(StaffUser).where(StaffUser.email == email)).scalar_one_or_none()

        def refuse(reason: str) -> SignInResult:
            session.add(SignInFailure(client_address=address, at=now))
            audit(session, email or "?", "sign_in_refused", email, reason, address)
            return SignInResult(None, reason)

        if address_failures >= policy.max_failures_per_address:
            return refuse("address_limited")
        if user is not None and user.locked_until is not None and user.locked_until > now:
            return refuse("locked")
        if not _verify(user.password_hash if user else _UNKNOWN_USER_HASH, password) or (
            user is None or user.disabled
        ):
            if user is not None:
                user.failed_sign_ins += 1
                if user.failed_sign_ins >= policy.max_failures:
                    user.locked_until = now + policy.lockout
                    user.failed_sign_ins = 0
                    return refuse("locked")
            return refuse("wrong")
        user.failed_sign_ins = 0
        user.locked_until = None
        user.last_sign_in_at = now
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
        audit(session, user.email, "sign_in", user.email, None, address)
        session.flush()
        session.expunge(user)
        return SignInResult(user, None)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def get_user(db: Database, user_id: int) -> StaffUser | None:
    """Read on every page view: through the reader, so it never waits for the write lock."""
    with db.reading() as session:
        user = session.get(StaffUser, user_id)
        if user is not None:
            session.expunge(user)
        return user
