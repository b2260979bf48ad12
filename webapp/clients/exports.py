"""Exporting a client's email log: the form, the CSV and the printable page."""

from __future__ import annotations

from flask import abort, render_template, request
from flask_login import current_user
from werkzeug.wrappers import Response

from webapp import timezones
from webapp.clients import bp
from webapp.models import utcnow
from webapp.security import clinic_staff_required, current_clinic_id
from webapp.services import clients, exports
from webapp.templating import clinic_timezone


@bp.get("/clients/<int:client_id>/export")
@clinic_staff_required
def export_form(client_id: int) -> str:
    """Ask which days of the client's email log to export."""
    client = clients.get_client(current_clinic_id(), client_id) or abort(404)
    start, end = exports.parse_range(None, None, timezones.today(utcnow(), clinic_timezone()))
    return render_template("clients/export.html", client=client, start=start, end=end, error="")


@bp.get("/clients/<int:client_id>/export/csv")
@clinic_staff_required
def export_csv(client_id: int) -> Response | tuple[str, int]:
    """Download the client's email log for the days asked, as CSV (audited)."""
    export = _export(client_id)
    if isinstance(export, tuple):
        return export
    exports.record(export, "csv", current_user)
    response = Response(exports.to_csv(export), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{exports.filename(export, "csv")}"'
    return response


@bp.get("/clients/<int:client_id>/export/print")
@clinic_staff_required
def export_print(client_id: int) -> str | tuple[str, int]:
    """Show the client's email log for the days asked as a page made for printing (audited)."""
    export = _export(client_id)
    if isinstance(export, tuple):
        return export
    exports.record(export, "printed page", current_user)
    return render_template("clients/export_print.html", export=export)


def _export(client_id: int) -> exports.Export | tuple[str, int]:
    """Build the export the query string asks for, or the form again with what is wrong (400)."""
    client = clients.get_client(current_clinic_id(), client_id) or abort(404)
    now = utcnow()
    start_text, end_text = request.args.get("from", ""), request.args.get("to", "")
    try:
        # The clinic's today: a clinic ahead of UTC exports its own morning.
        start, end = exports.parse_range(start_text, end_text, timezones.today(now, clinic_timezone()))
    except exports.ExportError as error:
        page = render_template(
            "clients/export.html", client=client, start=start_text, end=end_text, error=str(error)
        )
        return page, 400
    return exports.build(current_clinic_id(), client, start, end, now)
