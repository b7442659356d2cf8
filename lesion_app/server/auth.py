"""MONAI Label 0.8.5's bearer-token check, made usable.

MONAI Label checks every request's token in ``monailabel.endpoints.user.auth.from_token``. In 0.8.5 that
function calls ``jwt.decode`` without ``algorithms``, which PyJWT 2 (MONAI Label requires >= 2.8) refuses for
every token, so switching auth on made the server answer 401 to everyone. It also answers 500 instead of 401
for a token without the roles or username claim, and for a token whose ``alg`` does not fit the realm's key.

:func:`install` replaces that function (``get_current_user`` looks it up at call time) with one that:

- accepts only the asymmetric algorithms that fit the realm's key (never HMAC: no algorithm confusion);
- requires ``exp``, so a token cannot be valid forever;
- reads username, email, name and roles from the claims MONAI Label's settings name, as 0.8.5 does, and
  answers 401 for a token that carries no usable username;
- answers 503, not 500, when the realm document cannot be fetched (MONAI Label caches it once fetched).

Everything else (settings, the realm document's ``public_key``, RBAC and its roles) is MONAI Label's own.
"""

from __future__ import annotations

import functools
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from monailabel.config import settings
from monailabel.endpoints.user import auth as monailabel_auth

from lesion_app.server import checks

RSA_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
EC_ALGORITHMS = ["ES256", "ES384", "ES512"]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


@functools.lru_cache(maxsize=4)
def realm_key(pem: str) -> tuple[PublicKey, list[str]]:
    """The realm's key and the algorithms a token signed by it may use: chosen by the key, not the token."""
    key = load_pem_public_key(pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        return key, RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, EC_ALGORITHMS
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key, ["EdDSA"]
    raise ValueError(f"unsupported realm key type {type(key).__name__}")


def claim(payload: dict[str, Any], path: str) -> Any:
    """A claim by MONAI Label's ``a#b`` path (``realm_access#roles``); None where any step is missing."""
    value: Any = payload
    for part in path.split("#"):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def from_token(token: str) -> monailabel_auth.User:
    """Drop-in for MONAI Label's ``from_token``: the user a valid token names, or InvalidTokenError (401)."""
    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return monailabel_auth.DEFAULT_USER
    try:
        pem = monailabel_auth.get_public_key(settings.MONAI_LABEL_AUTH_REALM_URI)
    except (requests.RequestException, KeyError, ValueError) as e:
        raise checks.unavailable(f"identity provider unavailable: {e}") from e
    key, algorithms = realm_key(pem)
    try:
        payload = jwt.decode(
            token, key, algorithms=algorithms, options={"verify_aud": False, "require": ["exp"]}, leeway=5
        )
    except jwt.InvalidKeyError as e:  # an alg of another family than the key: a bad token, not a server error
        raise jwt.InvalidTokenError(str(e)) from e

    username = claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_USERNAME)
    if not isinstance(username, str) or not username:
        raise jwt.InvalidTokenError(f"token has no {settings.MONAI_LABEL_AUTH_TOKEN_USERNAME!r} claim")
    roles = claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_ROLES)
    roles = [roles] if isinstance(roles, str) else roles if isinstance(roles, list) else []
    email = claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_EMAIL)
    name = claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_NAME)
    return monailabel_auth.User(
        username=username,
        email=email if isinstance(email, str) else None,
        name=name if isinstance(name, str) else None,
        roles=[r for r in roles if isinstance(r, str)],
    )


def install() -> None:
    """Makes MONAI Label's endpoints check tokens with :func:`from_token`. Idempotent; harmless with auth off."""
    monailabel_auth.from_token = from_token
