"""SendGrid's spam-report list: who reported our email as spam, and lifting one address off it."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from webapp.providers.base import LiftResult, ProviderError
from webapp.providers.http import ProviderApi
from webapp.providers.sendgrid.translate import error_text, unix_time

SPAM_REPORTS_PAGE = 500


def spam_reports(api: ProviderApi, since: datetime | None = None) -> list[tuple[str, datetime]]:
    """Return every address on SendGrid's spam-report list (reported since `since`, if given)."""
    params: dict[str, int] = {"limit": SPAM_REPORTS_PAGE, "offset": 0}
    if since is not None:
        params["start_time"] = int(since.timestamp())
    reports: list[tuple[str, datetime]] = []
    while True:
        page = api.get_json("/v3/suppression/spam_reports", params=params)
        if not isinstance(page, list):
            raise ProviderError("SendGrid's spam-report list was not a JSON array")
        for item in page:
            try:
                created = datetime.fromtimestamp(unix_time(item["created"]), UTC)
                reports.append((item["email"].strip().lower(), created))
            except (KeyError, TypeError, AttributeError, ValueError, OverflowError, OSError):
                unreadable = f"SendGrid's spam-report list has an unreadable entry: {item!r}"
                raise ProviderError(unreadable) from None
        if len(page) < SPAM_REPORTS_PAGE:
            return reports
        params["offset"] += SPAM_REPORTS_PAGE


def remove_spam_report(api: ProviderApi, address: str) -> LiftResult:
    """Delete one address from SendGrid's spam-report list."""
    response = api.request("DELETE", f"/v3/suppression/spam_reports/{quote(address, safe='@')}")
    if response.status_code != 204:
        raise ProviderError(
            f"SendGrid did not remove {address} from the spam-report list "
            f"(HTTP {response.status_code}: {error_text(response)})"
        )
    return LiftResult("lifted")
