"""Bearer keys to tenants: a tenant key acts as its school only; the admin key names a school or acts on all."""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from fastapi import HTTPException

from rag_api.config import DEMO_ADMIN_KEY, DEMO_TENANT_KEYS, Settings

__all__ = ["ALL_SCHOOLS", "KeyRing", "Principal", "school_for_data", "school_in_scope"]

log = logging.getLogger("rag_api")

_MAX_SCHOOL_ID = 2**63 - 1
ALL_SCHOOLS = None  # the scope of an admin operation on every school


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a tenant (`school_id` set) or the admin (`school_id` None)."""

    school_id: int | None
    is_admin: bool


class KeyRing:
    """The configured keys; `identify` compares against every key in constant time."""

    def __init__(self, tenant_keys: dict[str, int], admin_key: str | None) -> None:
        self._entries: list[tuple[bytes, Principal]] = [
            (k.encode(), Principal(school_id=s, is_admin=False)) for k, s in tenant_keys.items()
        ]
        if admin_key:
            self._entries.append((admin_key.encode(), Principal(school_id=None, is_admin=True)))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """The configured keys, or the documented demo keys (with a loud warning) when none are configured."""
        admin = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
        tenants = dict(settings.tenant_api_keys)
        if not tenants and admin is None:
            tenants = {k: int(s) for k, _, s in (p.rpartition(":") for p in DEMO_TENANT_KEYS.split(","))}
            admin = DEMO_ADMIN_KEY
        if admin == DEMO_ADMIN_KEY or any(k.startswith("demo-school-") for k in tenants):
            log.warning(
                "\n%s\nSECURITY WARNING: the public DEMO API keys are in use (%s, admin %s).\n"
                "Set TENANT_API_KEYS and ADMIN_API_KEY before exposing this service.\n%s",
                "!" * 78,
                ", ".join(sorted(k for k in tenants if k.startswith("demo-"))) or "-",
                "demo-admin" if admin == DEMO_ADMIN_KEY else "(own)",
                "!" * 78,
            )
        return cls(tenants, admin)

    @property
    def schools(self) -> set[int]:
        """The schools of the tenant keys."""
        return {p.school_id for _, p in self._entries if p.school_id is not None}

    def identify(self, authorization: str | None) -> Principal:
        """The caller behind an `Authorization: Bearer <key>` header, else 401."""
        if not authorization:
            raise _unauthorized("missing Authorization: Bearer <key> header")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("Authorization header must be 'Bearer <key>'")
        presented = token.encode("utf-8", "surrogateescape")
        found: Principal | None = None
        for key, principal in self._entries:
            # No early exit: the time taken does not tell which key (or how much of one) matched.
            if hmac.compare_digest(key, presented):
                found = principal
        if found is None:
            raise _unauthorized("unknown API key")
        return found


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _parse_school(raw: str | None) -> int | None:
    """The X-School-Id header's school; present but empty, blank or not a positive integer is a 400."""
    if raw is None:
        return None
    value = raw.strip()
    if not value.isascii() or not value.isdigit() or not 0 < int(value) <= _MAX_SCHOOL_ID:
        raise HTTPException(400, detail="X-School-Id must be a positive integer")
    return int(value)


def _own_school(principal: Principal, named: int | None) -> int:
    assert principal.school_id is not None
    if named is not None and named != principal.school_id:
        raise HTTPException(403, detail="this API key may not act for another school")
    return principal.school_id


def school_for_data(principal: Principal, x_school_id: str | None) -> int:
    """The school a data request (embeddings, chat) acts for; the admin must name one."""
    named = _parse_school(x_school_id)
    if principal.is_admin:
        if named is None:
            raise HTTPException(400, detail="the admin key must name a school with the X-School-Id header")
        return named
    return _own_school(principal, named)


def school_in_scope(
    principal: Principal, x_school_id: str | None, school_id: int | None, *, every_school: bool = False
) -> int | None:
    """The school a cache operation (clear, delete) acts on, from an explicit scope: `school_id` (or its alias,
    the X-School-Id header) or, admin only, `every_school` (returns ALL_SCHOOLS). A tenant's scope defaults to
    its own school; the admin must name one. Conflicting or missing scopes are a 400, nothing is guessed."""
    named = _parse_school(x_school_id)
    if named is not None and school_id is not None and named != school_id:
        raise HTTPException(400, detail="X-School-Id and school_id name different schools")
    named = school_id if school_id is not None else named
    if every_school:
        if not principal.is_admin:
            raise HTTPException(403, detail="only the admin key may act on every school")
        if named is not None:
            raise HTTPException(400, detail="give either school_id or all, not both")
        return ALL_SCHOOLS
    if principal.is_admin:
        if named is None:
            raise HTTPException(400, detail='the admin key must name a scope: {"school_id": N} or {"all": true}')
        return named
    return _own_school(principal, named)
