"""The clinic's users and audit trail, for owners."""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from webapp.extensions import limiter
from webapp.owner import bp
from webapp.owner.forms import ClinicSettingsForm, NewUserForm, UserActionForm
from webapp.params import page_number
from webapp.security import current_clinic_id, owner_required
from webapp.services import audit as audit_trail
from webapp.services import clinic_identity, staff
from webapp.templating import clinic_timezone


@bp.get("/users")
@owner_required
def users() -> str:
    """List the clinic's users."""
    return render_template(
        "owner/users.html",
        users=staff.clinic_users(current_clinic_id()),
        form=NewUserForm(),
        action=UserActionForm(),
    )


def _refused(response: Response) -> bool:
    return response.status_code == 422


def _owner_key() -> str:
    return f"add-user:{getattr(current_user, 'id', None)}"


@bp.post("/users")
@owner_required
# A refusal still says the address cannot be used: bound how many addresses an owner can try.
@limiter.limit(
    lambda: current_app.config["ADD_USER_REFUSAL_LIMIT"], key_func=_owner_key, deduct_when=_refused
)
def add_user() -> str | Response | tuple[str, int]:
    """Add a clinician or owner to the clinic."""
    form = NewUserForm()
    if form.validate_on_submit():
        try:
            staff.add_user(current_user, form.email.data, form.name.data, form.role.data, form.password.data)
        except staff.StaffError as error:
            form.email.errors.append(str(error))
        else:
            flash(f"Added {form.email.data}.", "success")
            return redirect(url_for("owner.users"), code=303)
    users = staff.clinic_users(current_clinic_id())
    return render_template("owner/users.html", users=users, form=form, action=UserActionForm()), 422


@bp.post("/users/<int:user_id>/deactivate")
@owner_required
def deactivate_user(user_id: int) -> Response:
    """Stop a user of the clinic from signing in."""
    if UserActionForm().validate_on_submit():
        try:
            if not staff.set_active(current_user, user_id, active=False):
                abort(404)
        except staff.StaffError as error:
            flash(str(error), "error")
    return redirect(url_for("owner.users"), code=303)


@bp.post("/users/<int:user_id>/activate")
@owner_required
def activate_user(user_id: int) -> Response:
    """Let a deactivated user of the clinic sign in again."""
    if UserActionForm().validate_on_submit() and not staff.set_active(current_user, user_id, active=True):
        abort(404)
    return redirect(url_for("owner.users"), code=303)


@bp.get("/audit")
@owner_required
def audit() -> str:
    """Show the clinic's audit trail, newest first."""
    page = page_number()
    pagination = staff.audit_trail(current_clinic_id(), page)
    return render_template(
        "owner/audit.html",
        pagination=pagination,
        label=audit_trail.label,
        about=audit_trail.describe(pagination.items, current_clinic_id(), clinic_timezone() or "UTC"),
    )


@bp.get("/settings")
@owner_required
def settings() -> str:
    """Show the clinic's settings."""
    form = ClinicSettingsForm(formdata=None, obj=current_user.clinic)
    return render_template("owner/settings.html", form=form)


@bp.post("/settings")
@owner_required
def save_settings() -> str | Response | tuple[str, int]:
    """Save the clinic's settings."""
    form = ClinicSettingsForm()
    if form.validate_on_submit():
        try:
            staff.set_timezone(current_user, form.timezone.data)
            clinic_identity.save(current_user, form.identity)
        except staff.StaffError as error:
            form.timezone.errors.append(str(error))
        except clinic_identity.IdentityError as error:
            form[error.field].errors.append(str(error))
        else:
            flash(f"Saved. Times are shown in {form.timezone.data.replace('_', ' ')} time.", "success")
            return redirect(url_for("owner.settings"), code=303)
    return render_template("owner/settings.html", form=form), 422
