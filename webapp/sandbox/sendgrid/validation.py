"""SendGrid v3 request validation, as SendGrid answers it: Mail Send bodies (400 with the
documented error entries) and the Email Activity query subset the adapter sends."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from werkzeug.wrappers import Request

HELP_BASE = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_EMAIL = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>.]+")


class QuerySyntaxError(ValueError):
    """An Email Activity query the sandbox does not understand."""


def mail_send_errors(payload: Any) -> list[dict[str, Any]]:
    """Return every problem SendGrid would report for a Mail Send body (empty when it is valid)."""
    if not isinstance(payload, dict):
        return [_problem("The request body must be a JSON object.", None, "#-Request-Body-Parameters")]
    problems: list[dict[str, Any]] = []
    personalizations = payload.get("personalizations")
    if not isinstance(personalizations, list) or not 1 <= len(personalizations) <= 1000:
        problems.append(
            _problem(
                "The personalizations field is required and must have between 1 and 1000 personalizations.",
                "personalizations",
                "#message.personalizations",
            )
        )
        personalizations = []
    subject_missing = False
    for i, personalization in enumerate(personalizations):
        recipients = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(recipients, list) or not recipients:
            problems.append(
                _problem(
                    "The to array is required for all personalization objects, and must have at least one"
                    " email object with a valid email address.",
                    f"personalizations.{i}.to",
                    "#message.personalizations.to",
                )
            )
            continue
        for j, recipient in enumerate(recipients):
            if not isinstance(recipient, dict) or not valid_email(recipient.get("email")):
                problems.append(
                    _problem(
                        "Does not contain a valid address.",
                        f"personalizations.{i}.to.{j}.email",
                        "#message.personalizations.to",
                    )
                )
        subject_missing |= not _non_empty(personalization.get("subject"))
    if subject_missing and not _non_empty(payload.get("subject")):
        problems.append(
            _problem(
                "The subject is required. You can get around this requirement if you use a template with a"
                " subject defined or if every personalization has a subject defined.",
                "subject",
                "#message.subject",
            )
        )
    sender = payload.get("from")
    if not isinstance(sender, dict):
        problems.append(
            _problem(
                "The from object must be provided for every email send. It is an object that requires the"
                " email parameter, but may also contain a name parameter.",
                "from",
                "#message.from",
            )
        )
    elif not valid_email(sender.get("email")):
        problems.append(
            _problem("The from email does not contain a valid address.", "from.email", "#message.from")
        )
    reply_to = payload.get("reply_to")
    if reply_to is not None and (not isinstance(reply_to, dict) or not valid_email(reply_to.get("email"))):
        problems.append(
            _problem(
                "The reply_to email does not contain a valid address.", "reply_to.email", "#message.reply_to"
            )
        )
    problems.extend(_content_errors(payload.get("content")))
    problems.extend(_attachment_errors(payload.get("attachments")))
    return problems


# SendGrid's own words (captured in its client libraries' issues, e.g. sendgrid/sendgrid-php#814).
CONTENT_ORDER = (
    "Following RFC 1341, section 7.2, if either text/html or text/plain are to be sent in your email: "
    "text/plain needs to be first, followed by text/html, followed by any other content."
)
CONTENT_ONCE = "If present, text/plain and text/html may only be provided once."


def _content_order_errors(content: list[Any]) -> list[dict[str, Any]]:
    """text/plain first, then text/html, then anything else; each of the two at most once."""
    types = [block.get("type") if isinstance(block, dict) else None for block in content]
    if types.count("text/plain") > 1 or types.count("text/html") > 1:
        return [_problem(CONTENT_ONCE, "content", "#message.content")]
    rank = {"text/plain": 0, "text/html": 1}
    ranks = [rank.get(kind, 2) for kind in types]
    if ranks != sorted(ranks):
        return [_problem(CONTENT_ORDER, "content", "#message.content")]
    return []


def _attachment_errors(attachments: Any) -> list[dict[str, Any]]:
    """Each attachment: base64 content and a filename; a disposition, if given, SendGrid's."""
    if attachments is None:
        return []
    if not isinstance(attachments, list):
        return [_problem("The attachments field must be an array.", "attachments", "#message.attachments")]
    problems = []
    for k, attachment in enumerate(attachments):
        attachment = attachment if isinstance(attachment, dict) else {}
        if not _base64(attachment.get("content")):
            problems.append(
                _problem(
                    "The attachment content must be base64 encoded.",
                    f"attachments.{k}.content",
                    "#message.attachments.content",
                )
            )
        if not _non_empty(attachment.get("filename")):
            problems.append(
                _problem(
                    "The attachment filename parameter is required.",
                    f"attachments.{k}.filename",
                    "#message.attachments.filename",
                )
            )
        if attachment.get("disposition", "attachment") not in ("attachment", "inline"):
            problems.append(
                _problem(
                    "The disposition of your attachment can be either 'inline' or 'attachment'.",
                    f"attachments.{k}.disposition",
                    "#message.attachments.disposition",
                )
            )
    return problems


def _base64(value: Any) -> bool:
    """Whether a value is non-empty, well-formed base64."""
    if not _non_empty(value):
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _content_errors(content: Any) -> list[dict[str, Any]]:
    """Return the problems of a Mail Send content array."""
    if not isinstance(content, list) or not content:
        return [
            _problem(
                "Unless a valid template_id is provided, the content parameter is required. There must be at"
                " least one defined content block.",
                "content",
                "#message.content",
            )
        ]
    problems = _content_order_errors(content)
    for k, block in enumerate(content):
        block = block if isinstance(block, dict) else {}
        if not _non_empty(block.get("type")):
            problems.append(
                _problem(
                    "The content type must be a string at least one character in length.",
                    f"content.{k}.type",
                    "#message.content.type",
                )
            )
        if not _non_empty(block.get("value")):
            problems.append(
                _problem(
                    "The content value must be a string at least one character in length.",
                    f"content.{k}.value",
                    "#message.content.value",
                )
            )
    return problems


def _problem(message: str, field: str | None, help_anchor: str) -> dict[str, Any]:
    """One entry of a 400 answer, with the documentation link SendGrid adds."""
    return {"message": message, "field": field, "help": HELP_BASE + help_anchor}


def valid_email(value: Any) -> bool:
    """Check an address the way a provider does before accepting it: roughly."""
    return isinstance(value, str) and _EMAIL.fullmatch(value.strip()) is not None


def json_object(value: Any) -> dict[str, Any]:
    """Return a JSON object, or {} for anything else (custom args of the wrong type are ignored)."""
    return value if isinstance(value, dict) else {}


def strings(value: Any) -> list[str]:
    """Return the strings of a JSON array (categories), or [] for anything else."""
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _non_empty(value: Any) -> bool:
    """Return whether a value is a string with something in it."""
    return isinstance(value, str) and value.strip() != ""


# Email Activity queries

_QUERY_TOKEN = re.compile(
    r"""\s*(?:
        (?P<open>\() | (?P<close>\)) | (?P<or>OR\b)
      | unique_args\['(?P<arg>[^'"\\]+)'\]\s*=\s*"(?P<arg_value>(?:[^"\\]|\\.)*)"
      | to_email\s*=\s*"(?P<to_email>(?:[^"\\]|\\.)*)"
      | msg_id\s+LIKE\s+'(?P<msg_prefix>[^'%]*)%'
    )""",
    re.VERBOSE | re.IGNORECASE,
)


def parse_query(text: str) -> list[tuple[str, str, str]]:
    """Parse the query subset the adapter sends: terms joined by OR, optionally parenthesised.

    Returns (field, key, value) terms: ("unique_args", name, value), ("to_email", "", address)
    or ("msg_id_prefix", "", prefix). Raises QuerySyntaxError for anything else.
    """
    terms: list[tuple[str, str, str]] = []
    depth, want_term, position = 0, True, 0
    while text[position:].strip():
        match = _QUERY_TOKEN.match(text, position)
        if match is None:
            raise QuerySyntaxError(f"cannot read {text[position:].strip()[:40]!r}")
        position = match.end()
        if match["open"] is not None and want_term:
            depth += 1
        elif match["close"] is not None and not want_term and depth > 0:
            depth -= 1
        elif match["or"] is not None and not want_term:
            want_term = True
        elif want_term and match["arg"] is not None:
            terms.append(("unique_args", match["arg"], _unescape(match["arg_value"])))
            want_term = False
        elif want_term and match["to_email"] is not None:
            terms.append(("to_email", "", _unescape(match["to_email"]).lower()))
            want_term = False
        elif want_term and match["msg_prefix"] is not None:
            terms.append(("msg_id_prefix", "", match["msg_prefix"]))
            want_term = False
        else:
            raise QuerySyntaxError(f"unexpected {match.group().strip()!r}")
    if want_term or depth:
        raise QuerySyntaxError("the query is incomplete")
    return terms


def _unescape(value: str) -> str:
    """Undo backslash escapes inside a quoted query value."""
    return re.sub(r"\\(.)", r"\1", value)


def where(terms: list[tuple[str, str, str]]) -> tuple[str, list[Any]]:
    """Turn OR-ed query terms into an SQL condition on the messages table."""
    conditions, params = [], []
    for field, key, value in terms:
        if field == "unique_args":
            conditions.append("json_extract(custom_args, ?) = ?")
            params += [f'$."{key}"', value]
        elif field == "to_email":
            conditions.append("to_email = ?")
            params.append(value)
        else:
            conditions.append("substr(msg_id, 1, ?) = ?")
            params += [len(value), value]
    return " OR ".join(conditions), params


def int_arg(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    """Read an integer query parameter within bounds; ValueError names the problem."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):
        raise ValueError(f"{name} must be a number") from None
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be between {low} and {high}" if high else f"{name} must be >= {low}")
    return value
