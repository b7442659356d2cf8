"""A stand-in for a Keycloak realm on loopback, to test and try MONAI Label's authentication without Keycloak.

MONAI Label (``MONAI_LABEL_AUTH_REALM_URI``) fetches the realm document once and verifies tokens with its
``public_key`` (base64 DER, as Keycloak serves it). This serves that document, the OpenID configuration and
the JWKS from a key you hold, and mints tokens with Keycloak's claims (``preferred_username``,
``realm_access.roles``). It checks no passwords and has no token endpoint: anyone holding the key file can
mint an admin token, so it is for tests and local trials only, never for guarding real data.

    python -m apps.research.realm serve --key realm.pem            # http://127.0.0.1:8080/realms/monailabel
    python -m apps.research.realm token --key realm.pem --user alice --roles monailabel-user,monailabel-annotator
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_REALM = "monailabel"


class Realm:
    """An RSA signing key and what a Keycloak realm publishes about it."""

    def __init__(self, name: str = DEFAULT_REALM, key: rsa.RSAPrivateKey | None = None) -> None:
        self.name = name
        self.key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid5(uuid.NAMESPACE_OID, self.public_key_b64).hex
        self.issuer = ""  # set by serving_realm: a token's iss is the realm URI, as Keycloak's

    @classmethod
    def from_file(cls, path: Path, name: str = DEFAULT_REALM) -> Realm:
        """The realm whose PEM key is at ``path``; a new key is written there (mode 600) if there is none."""
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError(f"{path}: not an RSA private key")
            return cls(name, key)
        realm = cls(name)
        pem = realm.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return realm

    @property
    def public_key_b64(self) -> str:
        """The public key as Keycloak's realm document gives it: base64 DER, no PEM armour."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def document(self, uri: str) -> dict[str, Any]:
        """``GET /realms/<name>``: what MONAI Label reads ``public_key`` from."""
        return {
            "realm": self.name,
            "public_key": self.public_key_b64,
            "token-service": f"{uri}/protocol/openid-connect",
            "account-service": f"{uri}/account",
            "tokens-not-before": 0,
        }

    def openid_configuration(self, uri: str) -> dict[str, Any]:
        """``GET /realms/<name>/.well-known/openid-configuration`` (no token endpoint: no passwords here)."""
        return {
            "issuer": uri,
            "jwks_uri": f"{uri}/protocol/openid-connect/certs",
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def jwks(self) -> dict[str, Any]:
        """``GET /realms/<name>/protocol/openid-connect/certs``: the same key as a JWK set."""
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(
        self,
        username: str,
        roles: Sequence[str],
        lifetime: float = 300.0,
        key: rsa.RSAPrivateKey | None = None,
        **claims: Any,
    ) -> str:
        """An access token shaped like Keycloak's; ``key`` signs it with another key (a forgery, for tests)."""
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "sub": str(uuid.uuid5(uuid.NAMESPACE_OID, username)),
            "iat": now,
            "exp": now + int(lifetime),
            "typ": "Bearer",
            "azp": "monailabel-app",
            "preferred_username": username,
            "realm_access": {"roles": list(roles)},
            **claims,
        }
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": self.kid})


def handler_for(realm: Realm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            uri = f"http://{self.headers.get('Host', '127.0.0.1')}/realms/{realm.name}"
            path = self.path.split("?", 1)[0].rstrip("/")
            routes = {
                f"/realms/{realm.name}": lambda: realm.document(uri),
                f"/realms/{realm.name}/.well-known/openid-configuration": lambda: realm.openid_configuration(uri),
                f"/realms/{realm.name}/protocol/openid-connect/certs": realm.jwks,
            }
            if path not in routes:
                self.send_error(404)
                return
            body = json.dumps(routes[path]()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and servers log enough
            pass

    return Handler


@contextmanager
def serving_realm(realm: Realm, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serves ``realm`` from a thread, yields its URI (``MONAI_LABEL_AUTH_REALM_URI``), then stops."""
    server = ThreadingHTTPServer((host, port), handler_for(realm))
    uri = f"http://{host}:{server.server_address[1]}/realms/{realm.name}"
    realm.issuer = uri
    thread = threading.Thread(target=server.serve_forever, name="realm", daemon=True)
    thread.start()
    try:
        yield uri
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m apps.research.realm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the realm document, OpenID configuration and JWKS")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    token = sub.add_parser("token", help="print a token signed with the realm's key")
    token.add_argument("--user", required=True)
    token.add_argument("--roles", default="monailabel-user", help="comma-separated realm roles")
    token.add_argument("--minutes", type=float, default=60.0)
    token.add_argument("--issuer", default="", help="the realm URI (the token's iss; MONAI Label ignores it)")
    for p in (serve, token):
        p.add_argument("--key", type=Path, required=True, help="PEM RSA private key (created if missing)")
        p.add_argument("--realm", default=DEFAULT_REALM)
    args = parser.parse_args(argv)
    realm = Realm.from_file(args.key, args.realm)
    if args.command == "token":
        realm.issuer = args.issuer
        roles = [r for r in args.roles.split(",") if r]
        print(realm.token(args.user, roles, lifetime=args.minutes * 60))
        return
    with serving_realm(realm, args.host, args.port) as uri:
        print(f"realm at {uri}  (MONAI_LABEL_AUTH_REALM_URI={uri}); Ctrl-C stops", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
