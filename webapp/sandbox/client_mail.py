"""The sandbox's stand-in for a client's own mail system, so the demo can walk the removal flow.

A client asks to come off the spam list by emailing support from their own address. With the
sandbox, that mail is written here: a real MIME message from the client's address to the support
address, DKIM-signed with a key the sandbox owns, whose public half the sandbox's DNS answers
(`sandbox_dns`). It is then posted, as SendGrid's Inbound Parse would, through the real inbound
route, so the check that decides a request runs exactly as in production.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from functools import lru_cache
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from webapp.models import utcnow
from webapp.private_files import write_private_file_once

SELECTOR = "sandbox"
SIGNED_HEADERS = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"]


def client_removal_mail(config: dict[str, Any], address: str, name: str = "", clinic: str = "") -> bytes:
    """Return a raw removal request from `address` to support, signed for the address's domain."""
    domain = address.rpartition("@")[2].lower()
    message = EmailMessage()
    message["From"] = formataddr((name, address)) if name else address
    message["To"] = config["SUPPORT_ADDRESS"]
    message["Subject"] = "Please take me off the spam list"
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(idstring=uuid.uuid4().hex[:12], domain=domain or None)
    whose = f"{clinic}'s" if clinic else "a clinic's"
    message.set_content(
        f"Hello,\n\nI marked one of {whose} emails as spam by mistake. Please take {address} off the "
        f"spam list so that I receive their emails again.\n\n{name or address}\n"
    )
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signature = dkim.sign(
        raw,
        SELECTOR.encode(),
        domain.encode(),
        _private_key_pem(_key_path(config)),
        include_headers=SIGNED_HEADERS,
    )
    return signature + raw


def sandbox_dns(config: dict[str, Any]) -> Callable[..., bytes | None]:
    """Return the sandbox's DNS: it publishes its own key under its selector, for any domain."""
    record = _dns_record(_key_path(config))
    suffix = f"{SELECTOR}._domainkey.".encode()

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name.lower().startswith(suffix) else None

    return lookup


def inbound_post(raw: bytes, **fields: str) -> tuple[bytes, str]:
    """Return a multipart/form-data body and its content type, as Inbound Parse posts a raw mail.

    The raw mail goes in byte for byte: an 8-bit mail in another charset must reach DKIM intact.
    """
    boundary = "xYzZY" + uuid.uuid4().hex
    parts = [(name, value.encode("utf-8")) for name, value in fields.items()] + [("email", raw)]
    body = b"".join(
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (boundary.encode(), name.encode(), value)
        for name, value in parts
    )
    return body + b"--%s--\r\n" % boundary.encode(), f"multipart/form-data; boundary={boundary}"


def _key_path(config: dict[str, Any]) -> Path:
    return Path(config["SANDBOX_STATE_PATH"]).with_suffix(".dkim.pem")


@lru_cache(maxsize=8)
def _private_key_pem(path: Path) -> bytes:
    """Return the sandbox's DKIM key, made once and kept readable by its owner only."""
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private_file_once(path, pem)  # when two processes race, both keep the first key
    return path.read_bytes()


@lru_cache(maxsize=8)
def _dns_record(path: Path) -> bytes:
    key = serialization.load_pem_private_key(_private_key_pem(path), password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
