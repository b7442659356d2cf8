"""MONAI Label's own authentication switched on: a real server, a realm served over loopback, signed tokens.

The realm (apps/realm.py) stands in for Keycloak: MONAI Label fetches its document once for the public key.
Roles are MONAI Label's defaults and are not hierarchical: an endpoint needs its own role in the token, so a
realm gives annotators ``monailabel-user`` too, and admins every role (in Keycloak: composite roles).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi import HTTPException
from PIL import Image

import apps.research.local_server
from apps.research.local_server import free_port, running_server
from apps.research.realm import Realm, serving_realm

USER, REVIEWER, ANNOTATOR, ADMIN = "monailabel-user", "monailabel-reviewer", "monailabel-annotator", "monailabel-admin"
ANNOTATOR_ROLES = [USER, ANNOTATOR]
ADMIN_ROLES = [USER, REVIEWER, ANNOTATOR, ADMIN]
UNLABELLED = "lesion_004"  # a 512x384 JPEG in sample-data without a final label


@pytest.fixture(scope="module")
def realm() -> Realm:
    return Realm()


@pytest.fixture(scope="module")
def realm_uri(realm: Realm) -> Iterator[str]:
    with serving_realm(realm) as uri:
        yield uri


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth")


@pytest.fixture(scope="module")
def url(workdir: Path, realm: Realm, realm_uri: str) -> Iterator[str]:
    """The server with auth on; MONAI Label reads its settings from the environment the server inherits."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MONAI_LABEL_AUTH_ENABLE", "true")
        mp.setenv("MONAI_LABEL_AUTH_REALM_URI", realm_uri)
        mp.setenv("MONAI_LABEL_AUTH_TIMEOUT", "5")
        mp.setenv("MONAI_LABEL_AUTO_UPDATE_SCORING", "false")  # start-up scoring would only compete for the CPU
        # running_server waits for GET /info/ to answer 200, which with auth on needs a token
        probe = bearer(realm.token("probe", [USER]))
        mp.setattr(
            apps.research.local_server, "httpx", SimpleNamespace(HTTPError=httpx.HTTPError, get=with_headers(probe))
        )
        with running_server(workdir, {"models": "unet"}) as base:
            mp.undo()
            yield base


@pytest.fixture(scope="module")
def dicomweb_url(
    orthanc: Any, dicom_studies: dict, realm: Realm, realm_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A server with auth on over Orthanc (DICOMweb studies): OHIF's data path and the worklist."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MONAI_LABEL_AUTH_ENABLE", "true")
        mp.setenv("MONAI_LABEL_AUTH_REALM_URI", realm_uri)
        mp.setenv("MONAI_LABEL_AUTH_TIMEOUT", "5")
        mp.setenv("MONAI_LABEL_AUTO_UPDATE_SCORING", "false")
        probe = bearer(realm.token("probe", [USER]))
        mp.setattr(
            apps.research.local_server, "httpx", SimpleNamespace(HTTPError=httpx.HTTPError, get=with_headers(probe))
        )
        workdir = tmp_path_factory.mktemp("auth_dicomweb")
        with running_server(workdir, {"models": "unet", "threads": "1"}, studies_url=orthanc.dicomweb) as base:
            mp.undo()
            yield base


def with_headers(headers: dict[str, str]) -> Any:
    """``httpx.get`` with a token, for the start-up probe; a 401 to a valid token fails at once, not in 90 s."""

    def get(*args: Any, **kwargs: Any) -> httpx.Response:
        r = httpx.get(*args, headers=headers, **kwargs)
        if r.status_code == 401:
            raise AssertionError(
                "the server refuses a valid token: MONAI Label 0.8.5 cannot check tokens under PyJWT 2 "
                "unless lesion_app.server.auth.install() runs in the server (lesion_app/main.py)"
            )
        return r

    return get


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unsigned(payload: dict[str, Any], header: dict[str, Any], secret: bytes | None = None) -> str:
    """A JWT assembled by hand: ``alg: none`` or HMAC with any secret (what PyJWT refuses to make)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if secret else b""
    return f"{signing_input}.{b64(signature)}"


def bad_tokens(realm: Realm) -> dict[str, str]:
    """Tokens that must all be refused, each for one reason."""
    claims = {"exp": int(time.time()) + 300, "preferred_username": "mallory", "realm_access": {"roles": ADMIN_ROLES}}
    pem = realm.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return {
        "another key": realm.token("mallory", ADMIN_ROLES, key=rsa.generate_private_key(65537, 2048)),
        "expired": realm.token("alice", ADMIN_ROLES, lifetime=-60),
        "no expiry": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, realm.key, algorithm="RS256"),
        "not a JWT": "not-a-jwt",
        "alg none": unsigned(claims, {"alg": "none", "typ": "JWT"}),
        "HS256 keyed with the public key": unsigned(claims, {"alg": "HS256", "typ": "JWT"}, secret=pem),
        "ES256 (another key family)": jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"),
        "no username": realm.token("alice", ADMIN_ROLES, preferred_username=None),
    }


def label_png(image: Path) -> bytes:
    """A 0/1 mask of the image's size, as a viewer saves it."""
    with Image.open(image) as img:
        mask = np.zeros((img.height, img.width), np.uint8)
    mask[100:250, 150:380] = 1
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    return buf.getvalue()


def save_label(url: str, workdir: Path, token: str, image: str = UNLABELLED) -> httpx.Response:
    png = label_png(next((workdir / "studies").glob(f"{image}.*")))
    files = {"label": ("label.png", png, "image/png")}
    params = {"image": image, "tag": "final"}
    return httpx.put(f"{url}/datastore/label", params=params, files=files, headers=bearer(token), timeout=30)


@pytest.mark.server
def test_auth_endpoint_tells_clients_it_is_on(url: str, realm_uri: str) -> None:
    """Slicer and OHIF ask ``/auth/`` (no token needed) whether to log in, and where."""
    r = httpx.get(f"{url}/auth/")
    assert r.status_code == 200
    assert r.json() == {"enabled": True, "client_id": "monailabel-app", "realm": realm_uri}


@pytest.mark.server
def test_no_token_is_refused(url: str, workdir: Path) -> None:
    r = httpx.get(f"{url}/info/")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    assert httpx.post(f"{url}/infer/unet", params={"image": UNLABELLED}).status_code == 401
    assert httpx.post(f"{url}/train/unet", json={"max_epochs": 1}).status_code == 401
    assert httpx.delete(f"{url}/datastore/image", params={"id": "lesion_000"}).status_code == 401
    assert (workdir / "studies" / "lesion_000.jpg").exists()


@pytest.mark.server
def test_bad_tokens_are_refused(url: str, realm: Realm, workdir: Path) -> None:
    for reason, token in bad_tokens(realm).items():
        assert httpx.get(f"{url}/info/", headers=bearer(token)).status_code == 401, reason
        r = httpx.delete(f"{url}/datastore/label", params={"id": "lesion_000", "tag": "final"}, headers=bearer(token))
        assert r.status_code == 401, reason
    assert (workdir / "studies" / "labels" / "final" / "lesion_000.png").exists()


@pytest.mark.server
def test_roles_are_not_hierarchical(url: str, realm: Realm) -> None:
    """MONAI Label checks each endpoint's one role: an annotator or admin role alone does not read ``/info``."""
    for roles in ([ANNOTATOR], [ADMIN], []):
        r = httpx.get(f"{url}/info/", headers=bearer(realm.token("alice", roles)))
        assert r.status_code == 403, roles


@pytest.mark.server
def test_annotator_reads_infers_and_saves_a_label(url: str, realm: Realm, workdir: Path) -> None:
    token = realm.token("anna", ANNOTATOR_ROLES, email="anna@example.org")
    before = httpx.get(f"{url}/info/", headers=bearer(token)).json()["datastore"]["completed"]
    assert httpx.get(f"{url}/auth/token/valid", headers=bearer(token)).json() == {
        "username": "anna",
        "email": "anna@example.org",
        "name": None,
        "roles": ANNOTATOR_ROLES,
    }
    r = httpx.post(
        f"{url}/infer/unet", params={"image": UNLABELLED, "output": "json"}, headers=bearer(token), timeout=60
    )
    assert r.status_code == 200, r.text
    r = save_label(url, workdir, token)
    assert r.status_code == 200, r.text
    stored = workdir / "studies" / "labels" / "final" / f"{UNLABELLED}.png"
    with Image.open(stored) as img:
        assert img.size == (512, 384) and set(np.unique(np.asarray(img))) == {0, 1}
    assert httpx.get(f"{url}/info/", headers=bearer(token)).json()["datastore"]["completed"] == before + 1


@pytest.mark.server
def test_a_picks_annotator_is_the_tokens_user_whatever_the_body_says(url: str, realm: Realm) -> None:
    """Issue 26's picks per annotator with auth on: the token's username is the annotator, so one user cannot take
    or release another's reservation by naming them."""
    ana, ben = bearer(realm.token("ana", [USER])), bearer(realm.token("ben", [USER]))
    first = httpx.post(f"{url}/activelearning/first", json={"annotator": "ben"}, headers=ana, timeout=60).json()
    assert first["reserved_for"] == "ana"
    other = httpx.post(f"{url}/activelearning/first", json={"annotator": "ana"}, headers=ben, timeout=60).json()
    assert other["reserved_for"] == "ben" and other["id"] != first["id"]
    again = httpx.post(f"{url}/activelearning/first", json={}, headers=ana, timeout=60).json()
    assert again["id"] == first["id"]


def test_annotator_cannot_train_or_delete(url: str, realm: Realm, workdir: Path) -> None:
    headers = bearer(realm.token("anna", ANNOTATOR_ROLES))
    assert httpx.post(f"{url}/train/unet", json={"max_epochs": 1}, headers=headers).status_code == 403
    assert httpx.delete(f"{url}/train/", headers=headers).status_code == 403
    r = httpx.delete(f"{url}/datastore/label", params={"id": "lesion_000", "tag": "final"}, headers=headers)
    assert r.status_code == 403
    assert httpx.delete(f"{url}/datastore/image", params={"id": "lesion_000"}, headers=headers).status_code == 403
    assert (workdir / "studies" / "lesion_000.jpg").exists()
    assert (workdir / "studies" / "labels" / "final" / "lesion_000.png").exists()


@pytest.mark.server
def test_admin_trains_and_deletes(url: str, realm: Realm, workdir: Path) -> None:
    headers = bearer(realm.token("root", ADMIN_ROLES))
    r = httpx.post(f"{url}/train/unet", json={"max_epochs": 1}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("SUBMITTED", "RUNNING")
    deadline = time.monotonic() + 30
    while True:  # stopping needs the training process, which starts a moment after the request
        stopped = httpx.delete(f"{url}/train/", headers=headers)
        assert stopped.status_code == 200
        if stopped.json():
            break
        assert time.monotonic() < deadline, "the training process never started"
        time.sleep(0.5)
    assert stopped.json()["status"] == "STOPPED"

    # what it deletes it made first, so the other tests of this module find sample-data as it is
    photo = (workdir / "studies" / "lesion_009.jpg").read_bytes()
    upload = {"file": ("to_delete.jpg", photo, "image/jpeg")}
    r = httpx.put(f"{url}/datastore/", params={"image": "to_delete"}, files=upload, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert save_label(url, workdir, headers["Authorization"].split()[1], image="to_delete").status_code == 200
    r = httpx.delete(f"{url}/datastore/label", params={"id": "to_delete", "tag": "final"}, headers=headers)
    assert r.status_code == 200, r.text
    assert not (workdir / "studies" / "labels" / "final" / "to_delete.png").exists()
    r = httpx.delete(f"{url}/datastore/image", params={"id": "to_delete"}, headers=headers)
    assert r.status_code == 200, r.text
    assert not (workdir / "studies" / "to_delete.jpg").exists()


@pytest.mark.server
def test_ohifs_dicomweb_path_and_the_worklist_need_a_token(
    dicomweb_url: str, realm: Realm, dicom_studies: dict
) -> None:
    """No token, no pixels: OHIF's same-origin DICOMweb path follows MONAI Label's access rules (reading needs
    monailabel-user, storing a SEG monailabel-annotator); the viewer's own files carry no data and need none."""
    row = dicom_studies["lesion_000.jpg"]
    frames = f"/ohif/dicom-web/studies/{row['study_uid']}/series/{row['series_uid']}/instances/{row['instance_uid']}"
    frames += "/frames/1"
    accept = {"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
    reads = [frames, f"/ohif/dicom-web/studies/{row['study_uid']}/series", "/worklist", "/worklist.json"]
    for path in reads:
        r = httpx.get(f"{dicomweb_url}{path}", headers=accept, timeout=60)
        assert r.status_code == 401 and len(r.content) < 200, path
        assert httpx.get(f"{dicomweb_url}{path}", headers={**accept, **bearer("not-a-jwt")}).status_code == 401
    stow = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=x'}
    assert httpx.post(f"{dicomweb_url}/ohif/dicom-web/studies", content=b"--x--", headers=stow).status_code == 401
    assert httpx.post(f"{dicomweb_url}/proposal/{row['series_uid']}").status_code == 401

    reader = bearer(realm.token("rita", [USER]))
    pixels = httpx.get(f"{dicomweb_url}{frames}", headers={**accept, **reader}, timeout=60)
    assert pixels.status_code == 200 and len(pixels.content) > 500_000  # 512 x 384 x 3
    stored = httpx.post(f"{dicomweb_url}/ohif/dicom-web/studies", content=b"--x--", headers={**stow, **reader})
    assert stored.status_code == 403  # reading is not annotating
    assert httpx.get(f"{dicomweb_url}/worklist.json", headers=reader, timeout=300).status_code == 200
    assert httpx.get(f"{dicomweb_url}/ohif/").status_code == 200  # the viewer itself: no data, no token


def test_realm_jwks_verifies_its_tokens(realm: Realm, realm_uri: str) -> None:
    """The JWKS (for clients that use OpenID discovery) holds the same key as the realm document."""
    config = httpx.get(f"{realm_uri}/.well-known/openid-configuration").json()
    keys = httpx.get(config["jwks_uri"]).json()["keys"]
    token = realm.token("anna", ANNOTATOR_ROLES)
    claims = jwt.decode(token, jwt.PyJWK(keys[0]), algorithms=["RS256"])
    assert claims["realm_access"]["roles"] == ANNOTATOR_ROLES and claims["iss"] == realm_uri


def test_an_unreachable_realm_answers_503_not_500(monkeypatch: pytest.MonkeyPatch, realm: Realm) -> None:
    from monailabel.config import settings

    from lesion_app.server import auth

    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_ENABLE", True)
    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_TIMEOUT", 2)
    monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_REALM_URI", f"http://127.0.0.1:{free_port()}/realms/gone")
    with pytest.raises(HTTPException) as e:
        auth.from_token(realm.token("anna", ANNOTATOR_ROLES))
    assert e.value.status_code == 503


def test_the_lesion_modes_save_needs_annotator_rights_and_names_the_tokens_user(
    dicomweb_url: str, realm: Realm, dicom_studies: dict
) -> None:
    """``POST /lesion/label``: 401 without a token, 403 for a reader, and the token's user is the annotator (not
    the name the browser sends)."""
    row = dicom_studies["lesion_008.jpg"]
    data = io.BytesIO()
    Image.fromarray(np.zeros((int(row["rows"]), int(row["columns"])), np.uint8)).save(data, "PNG")

    def save(headers: dict[str, str]) -> httpx.Response:
        files = {"label": ("label.png", data.getvalue(), "image/png")}
        query = {"image": row["series_uid"]}
        form = {"params": '{"annotator": "someone else"}'}
        return httpx.post(f"{dicomweb_url}/lesion/label", params=query, files=files, data=form, headers=headers,
                          timeout=120)  # fmt: skip

    assert save({}).status_code == 401
    refused = save(bearer(realm.token("reader", [USER])))
    assert refused.status_code == 403, refused.text
    saved = save(bearer(realm.token("carol", ANNOTATOR_ROLES)))
    assert saved.status_code == 200 and saved.json()["annotator"] == "carol", saved.text
