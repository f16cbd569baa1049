"""Who may use the dashboard once a provider vouched for them.

A login passes when ANY configured rule matches: the verified email is listed, its
domain is listed, the GitHub login is listed, or the user belongs to a listed GitHub
org. Everything is compared case-insensitively. With no rule configured nobody
passes, unless HERMES_DASHBOARD_ALLOW_ANY_USER=1 says every provider user may.

The rule is checked at login AND on every request (auth/gate.py): the session keeps
the identity facts the rules look at, as of login (provider, subject, verified email,
GitHub login, and the allowlisted GitHub orgs the user was in), so a dashboard
restarted with a shorter allowlist ends the sessions it no longer allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Identity:
    provider: str
    subject: str
    email: str | None = None  # only set when the provider says it is verified
    name: str | None = None
    github_login: str | None = None
    github_orgs: frozenset[str] = field(default_factory=frozenset)

    @property
    def display(self) -> str:
        return self.email or (self.github_login and "@" + self.github_login) or self.subject

    def session_user(self, keep_orgs: Iterable[str] = ()) -> dict[str, object]:
        """What the session cookie keeps of this identity.

        Of the GitHub orgs only those in `keep_orgs` (the allowlisted ones) are kept:
        enough to re-check the allowlist, and a user in many orgs cannot overflow the
        4 KB cookie nor have all their memberships copied into it.
        """
        wanted = {org.lower() for org in keep_orgs}
        return {
            "provider": self.provider,
            "sub": self.subject,
            "email": self.email,
            "name": self.name or self.display,
            "login": self.github_login,
            "orgs": sorted(org.lower() for org in self.github_orgs if org.lower() in wanted),
        }


@dataclass(frozen=True)
class Allowlist:
    emails: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    github_users: frozenset[str] = frozenset()
    github_orgs: frozenset[str] = frozenset()
    allow_any: bool = False

    @classmethod
    def build(
        cls,
        *,
        emails: Sequence[str] = (),
        domains: Sequence[str] = (),
        github_users: Sequence[str] = (),
        github_orgs: Sequence[str] = (),
        allow_any: bool = False,
    ) -> Allowlist:
        def norm(values: Sequence[str], strip: str = "") -> frozenset[str]:
            return frozenset(v.strip().lower().lstrip(strip) for v in values if v.strip())

        return cls(
            norm(emails), norm(domains, "@"), norm(github_users, "@"), norm(github_orgs), allow_any
        )

    @property
    def configured(self) -> bool:
        return bool(
            self.emails or self.domains or self.github_users or self.github_orgs or self.allow_any
        )

    @property
    def wants_github_orgs(self) -> bool:
        return bool(self.github_orgs)

    def allows(self, identity: Identity) -> bool:
        return self.allows_facts(identity.email, identity.github_login, identity.github_orgs)

    def allows_facts(
        self, email: str | None, github_login: str | None, github_orgs: Iterable[str]
    ) -> bool:
        """The rule on the bare facts (also run on every request, so: set lookups only)."""
        if self.allow_any:
            return True
        email = (email or "").lower()
        if email and email in self.emails:
            return True
        if email and "@" in email and email.rsplit("@", 1)[1] in self.domains:
            return True
        login = (github_login or "").lower()
        if login and login in self.github_users:
            return True
        return any(org.lower() in self.github_orgs for org in github_orgs)
