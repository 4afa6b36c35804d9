"""JWT access tokens: verified on every connect and HTTP call; the user id comes only from `sub`."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from enum import StrEnum

import jwt

from config import Settings
from server.errors import ApiError, Code

SUB_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class Role(StrEnum):
    USER = "user"
    CREATOR = "creator"
    MODERATOR = "moderator"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: Role
    expires_at: float | None = None


class TokenVerifier:
    """Verifies platform-issued JWTs with a shared secret (HS*) or a public key (RS*/ES*)."""

    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        if settings.jwt_public_key:
            # never accept HMAC with a public key: that is the classic key-confusion attack
            self._algorithms = [a for a in self._algorithms if not a.startswith("HS")]
            self._key: str = settings.jwt_public_key
        elif settings.jwt_secret:
            self._key = settings.jwt_secret
        else:  # load_settings always fills one in outside production
            raise ValueError("no JWT key configured")
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience

    def verify(self, token: object) -> Principal:
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise ApiError(Code.UNAUTHORIZED, "a token is required: auth: {token: '<jwt>'}")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["sub", "exp"], "verify_aud": self._audience is not None},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(Code.TOKEN_EXPIRED, "token expired; refresh it and reconnect") from None
        except jwt.PyJWTError as exc:
            raise ApiError(Code.UNAUTHORIZED, f"invalid token: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not SUB_RE.match(sub):
            raise ApiError(
                Code.UNAUTHORIZED,
                "invalid token: sub must be 1-64 of letters, digits, _ . - (it names rooms)",
            )
        try:
            role = Role(claims.get("role", "user"))
        except ValueError:
            raise ApiError(Code.UNAUTHORIZED, "invalid token: unknown role") from None
        return Principal(user_id=sub, role=role, expires_at=float(claims["exp"]))


def issue_token(settings: Settings, user_id: str, role: str = "user", ttl: float = 900) -> str:
    """Sign an access token with the configured secret (a developer aid: `ours token`)."""
    if not settings.jwt_secret:
        raise ApiError(
            Code.BAD_REQUEST,
            "ours token signs with OURS_JWT_SECRET; with a public key the platform issues tokens",
        )
    now = int(time.time())
    claims = {"sub": str(user_id), "role": Role(role).value, "iat": now, "exp": now + int(ttl)}
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    alg = next((a for a in settings.jwt_algorithms if a.startswith("HS")), "HS256")
    return jwt.encode(claims, settings.jwt_secret, algorithm=alg)


def parse_ttl(text: str) -> int:
    """'15m' / '2h' / '30s' / '1d' / '900' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text[-1] in units:
            value = int(text[:-1]) * units[text[-1]]
        else:
            value = int(text)
    except (ValueError, IndexError):
        raise ValueError(f"bad ttl {text!r}: use e.g. 30s, 15m, 2h, 1d") from None
    if value <= 0:
        raise ValueError("ttl must be positive")
    return value
