"""The sandbox's stand-in for a client's own mail system, so the demo can walk the removal flow.

A client asks to come off the spam list by emailing support from their own address. With the
sandbox, that mail is written here: a real MIME message from the client's address to the support
address, DKIM-signed with a key the sandbox owns, whose public half the sandbox's DNS answers
(`sandbox_dns`). It is then posted, as the inbound webhook of the sandbox's wire format would
(SendGrid's Inbound Parse, or Postmark's inbound JSON with the raw message), through the real
inbound route, so the check that decides a request runs exactly as in production.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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
from webapp.providers import get_sandbox

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


def postmark_inbound_post(raw: bytes) -> tuple[bytes, str]:
    """Return a JSON body and its content type, as Postmark's inbound webhook posts a mail with
    "Include raw email content in JSON payload" on: its own parse, and RawEmail with LF line ends.

    Like Postmark, the sandbox prepends its spam check's headers to the raw message (unsigned).
    """
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    sender = _mailboxes(message, "From")[:1] or [{"Email": "", "Name": "", "MailboxHash": ""}]
    recipients = _mailboxes(message, "To")
    added = [
        (
            "Received-SPF",
            f"pass (sandbox: {sender[0]['Email']} is allowed) envelope-from={sender[0]['Email']}",
        ),
        ("X-Spam-Status", "No"),
        ("X-Spam-Score", "-0.1"),
        ("X-Spam-Tests", "DKIM_SIGNED,DKIM_VALID,DKIM_VALID_AU,SPF_PASS"),
    ]
    prepended = "".join(f"{name}: {value}\n" for name, value in added)
    body = message.get_body(preferencelist=("plain",))
    payload = {
        "FromName": sender[0]["Name"],
        "MessageStream": "inbound",
        "From": sender[0]["Email"],
        "FromFull": sender[0],
        "To": str(message.get("To", "")),
        "ToFull": recipients,
        "Cc": "",
        "CcFull": [],
        "Bcc": "",
        "BccFull": [],
        "OriginalRecipient": recipients[0]["Email"] if recipients else "",
        "Subject": str(message.get("Subject", "")),
        "MessageID": str(uuid.uuid4()),  # Postmark's own id, not the mail's Message-ID
        "ReplyTo": "",
        "MailboxHash": "",
        "Date": str(message.get("Date", "")),
        "TextBody": body.get_content() if body is not None else "",
        "HtmlBody": "",
        "StrippedTextReply": "",
        "Tag": "",
        "Headers": [{"Name": name, "Value": value} for name, value in added]
        + [{"Name": name, "Value": str(value)} for name, value in message.items()],
        "Attachments": [],
        # Bytes that are not UTF-8 travel as lone surrogates (JSON escapes them as \udcXX).
        "RawEmail": prepended + raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n"),
    }
    return json.dumps(payload).encode(), "application/json"


@dataclass(frozen=True)
class InboundPost:
    """A post to one of our inbound routes, as the sandbox's wire format makes it."""

    endpoint: str
    body: bytes
    content_type: str
    auth: tuple[str, str] | None


def inbound_request(config: dict[str, Any], raw: bytes) -> InboundPost:
    """Return the post the inbound webhook of the sandbox's wire format makes of a raw mail."""
    if config["SANDBOX_WIRE_FORMAT"] == "postmark":
        simulator = get_sandbox(config)  # it posts with its own webhook credentials
        body, content_type = postmark_inbound_post(raw)
        credentials = (getattr(simulator, "webhook_username", ""), getattr(simulator, "webhook_password", ""))
        return InboundPost("webhooks.postmark_inbound", body, content_type, credentials)
    body, content_type = inbound_post(raw, dkim="none", SPF="pass", to=config["SUPPORT_ADDRESS"])
    secret = config["INBOUND_WEBHOOK_SECRET"]
    return InboundPost(
        "webhooks.sendgrid_inbound", body, content_type, ("sendgrid", secret) if secret else None
    )


def _mailboxes(message: EmailMessage, name: str) -> list[dict[str, str]]:
    """Return a header's mailboxes as Postmark's *Full arrays hold them."""
    header = message.get(name)
    addresses = getattr(header, "addresses", ()) if header is not None else ()
    return [{"Email": item.addr_spec, "Name": item.display_name, "MailboxHash": ""} for item in addresses]


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
