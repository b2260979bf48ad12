"""The owner's deliverability view and the per-client export in a real browser: a clean console
under the strict CSP, and no accessibility violations axe-core can find."""

from __future__ import annotations

from tests.e2e.helpers import axe_violations, seed_clinic, sign_in
from tests.helpers import PASSWORD

OWNER = "owner@harbour.example"


def add_owner(live) -> None:
    from webapp.extensions import db
    from webapp.models import Clinic
    from webapp.services import accounts

    def work() -> None:
        clinic = db.session.query(Clinic).filter_by(name="Harbour Physio").one()
        accounts.create_user(OWNER, "Olive Owner", "owner", PASSWORD, clinic)
        db.session.commit()

    live.run(work)


def test_the_owners_view_draws_its_chart_cleanly_and_accessibly(live_server, page, problems):
    seed_clinic(live_server)
    add_owner(live_server)
    sign_in(page, live_server.url, OWNER)
    with page.expect_navigation():
        page.get_by_role("link", name="Deliverability").click()
    assert page.url.endswith("/clinic/deliverability"), page.url
    chart = page.get_by_role("img", name="Emails per day by status, last 30 days")
    assert chart.is_visible()
    assert page.locator("svg.chart rect.bar").count() > 0
    # The CSS reached the SVG: a delivered bar is filled green, not the default black.
    fill = page.locator("svg.chart rect.bar-delivered").first.evaluate("el => getComputedStyle(el).fill")
    assert fill == "rgb(46, 139, 87)"
    assert page.get_by_role("table", name="Emails per day by status (days in UTC time)").is_visible()
    problems.assert_clean(page)
    assert axe_violations(page) == ""


def test_the_export_form_and_printable_page_are_clean_and_accessible(live_server, page, problems):
    seeded = seed_clinic(live_server)
    sign_in(page, live_server.url)
    page.goto(f"{live_server.url}/clients/{seeded.client_id}")
    page.get_by_role("link", name="Export log").click()
    page.wait_for_url(f"**/clients/{seeded.client_id}/export")
    assert axe_violations(page) == ""
    with page.expect_download() as download:
        page.get_by_role("button", name="Download CSV").click()
    assert download.value.suggested_filename.startswith(f"email-log-client-{seeded.client_id}-")
    page.get_by_role("button", name="Printable page").click()
    page.wait_for_url("**/export/print?**")
    assert page.get_by_role("heading", name="Email log: Jane Doe").is_visible()
    assert page.get_by_text("every date and time on this page is UTC").is_visible()
    assert page.locator(".export-email").count() >= 1
    page.emulate_media(media="print")
    assert not page.locator(".topbar").is_visible()
    assert not page.get_by_role("button", name="Print").is_visible()
    page.emulate_media(media="screen")
    problems.assert_clean(page)
    assert axe_violations(page) == ""


# Where each label of the chart (SVG text or HTML) is drawn, how tall it is on the screen, and
# whether the page scrolls sideways.
CHART_LABELS = """
() => {
  const box = document.querySelector(".chart-box").getBoundingClientRect();
  const found = document.querySelectorAll(".chart-box text, .chart-box span:not(.swatch)");
  const labels = [...found].filter((el) => !el.closest(".chart-legend")).map((el) => {
    const r = el.getBoundingClientRect();
    return {text: el.textContent, left: r.left, right: r.right, height: r.height};
  });
  return {box: {left: box.left, right: box.right, top: box.top, bottom: box.bottom}, labels,
          scrolls: document.documentElement.scrollWidth > window.innerWidth};
}
"""


def test_the_charts_labels_are_readable_on_a_phone_and_inside_the_box_on_a_wide_screen(
    live_server, page, problems
):
    seed_clinic(live_server)
    add_owner(live_server)
    sign_in(page, live_server.url, OWNER)
    for width in (375, 1280):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server.url}/clinic/deliverability")
        drawn = page.evaluate(CHART_LABELS)
        box, labels = drawn["box"], drawn["labels"]
        assert not drawn["scrolls"], width
        dates = [label for label in labels if " " in label["text"]]
        assert len(dates) == 5 and len(labels) == 7, labels  # every seventh day, and the scale's two ends
        for label in labels:
            assert label["height"] >= 11, (width, label)  # as drawn: not shrunk with the chart
            assert box["left"] <= label["left"] and label["right"] <= box["right"], (width, label)
        # The newest day's date is the last, right-aligned with the plot: not past the box's edge.
        assert dates[-1]["right"] == max(label["right"] for label in labels)
        for first, second in zip(dates, dates[1:], strict=False):
            assert first["right"] < second["left"], (width, first, second)  # no two overlap
    problems.assert_clean(page)
    assert axe_violations(page) == ""
