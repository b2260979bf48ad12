"""Who a mail is from and to: its one From address, its recipients, and which signing domains
speak for an address (relaxed alignment by organisational domain, public-suffix list bundled)."""

from __future__ import annotations

import email.errors
import email.policy
import logging
import re
from email.headerregistry import Address
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from webapp.services.inbound.reading import clean

log = logging.getLogger(__name__)

# Reasons that leave no single sender address to check signatures against.
UNREADABLE_SENDER = {"no_from", "multiple_from", "group_syntax", "multiple_mailboxes", "from_defect"}

_DISPLAY_NAME_SEPARATORS = re.compile(r"[\s<>\"'(),;:]+")


def sender_address(written: list[str]) -> tuple[str, list[str]]:
    """Return the From addr-spec, lower-cased, and why it cannot be trusted (empty: it can)."""
    if not written:
        return "", ["no_from"]
    shown = clean(", ".join(" ".join(value.split()) for value in written), 320)
    if len(written) > 1:
        return shown, ["multiple_from"]
    try:
        header = email.policy.default.header_factory("from", written[0])
        if any(group.display_name is not None for group in header.groups):
            return shown, ["group_syntax"]
        if len(header.addresses) != 1:
            return shown, ["multiple_mailboxes" if header.addresses else "no_from"]
        # Obsolete syntax ("Jane Q. Doe <...>") is common in genuine mail; anything else is not.
        if any(not isinstance(defect, email.errors.ObsoleteHeaderDefect) for defect in header.defects):
            return shown, ["from_defect"]
        mailbox = header.addresses[0]
        if not mailbox.username or not mailbox.domain:
            return shown, ["from_defect"]
        address = mailbox.addr_spec.lower()
    except Exception as error:  # a hostile header must not stop the intake
        log.info("unreadable From header: %s", error)
        return shown, ["from_defect"]
    reasons = []
    if _addresses_in_text(mailbox.display_name) - {address}:
        reasons.append("display_name_address")
    if not address.isascii() or any(label.startswith("xn--") for label in mailbox.domain.lower().split(".")):
        reasons.append("idn_address")
    return clean(address, 320), reasons


def aligned(signing_domain: str, from_domain: str) -> bool:
    """Return whether d= and the From domain share an organisational domain (never a public suffix)."""
    signer = organisational_domain(signing_domain)
    return signer is not None and signer == organisational_domain(from_domain)


def organisational_domain(domain: str) -> str | None:
    """Return the registrable domain ("clinic.example" for "mail.clinic.example"), or None."""
    name = domain.lower().rstrip(".")
    if not name or len(name) > 253:
        return None
    return _public_suffixes().privatesuffix(name)


def names_address(values: list[str], wanted: str) -> bool:
    """Return whether any of these To/Cc values names the address (by addr-spec, any case)."""
    target = wanted.strip().lower()
    for value in values:
        try:
            header = email.policy.default.header_factory("to", value)
            mailboxes: tuple[Address, ...] = header.addresses
        except Exception:  # an unreadable recipient list names nobody
            continue
        if any(mailbox.addr_spec.lower() == target for mailbox in mailboxes):
            return True
    return False


def _addresses_in_text(text: str) -> set[str]:
    """Return address-like words of a display name (split first: linear on hostile input)."""
    return {
        word.lower()
        for word in _DISPLAY_NAME_SEPARATORS.split(text)
        if word.count("@") == 1 and not word.startswith("@") and not word.endswith("@")
    }


@lru_cache(maxsize=1)
def _public_suffixes() -> PublicSuffixList:
    """The bundled public-suffix list (no network), loaded once per process."""
    return PublicSuffixList()
