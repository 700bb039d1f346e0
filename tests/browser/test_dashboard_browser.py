"""The staff dashboard in a real headless Chromium, against the real web process and the demo's month.

What a person does: sign in, find a customer, read the plan's installments and a refund's note,
acknowledge an alert, replay a dead event as an admin; and what a viewer cannot do. Plus the Japanese
interface (chosen from the browser's Accept-Language) and JPY amounts without decimals.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from tests.browser.stack import (
    DEAD_CHARGE,
    DUPLICATE_CUSTOMER,
    DUPLICATE_REFUND,
    PLAN_CUSTOMER,
    DashboardStack,
    sign_in,
    submit_and_wait,
    wait_for,
)

pytestmark = pytest.mark.browser

JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")  # kana or kanji
YEN = ("¥", "￥", "円")


def _path(driver) -> str:
    return urlparse(driver.current_url).path


def _text(element) -> str:
    return " ".join(element.text.split())


def _lang(driver) -> str:
    return driver.find_element(By.TAG_NAME, "html").get_attribute("lang")


def _alert_id(dashboard: DashboardStack, kind: str, email: str) -> int:
    rows = dashboard.query("SELECT id FROM alerts WHERE kind = ? AND customer_email = ?", (kind, email))
    assert len(rows) == 1, f"the story has one {kind} alert for {email}: {rows}"
    return rows[0]["id"]


def _alert_status(dashboard: DashboardStack, alert_id: int) -> str:
    return dashboard.query("SELECT status FROM alerts WHERE id = ?", (alert_id,))[0]["status"]


def _open_customer(driver, dashboard: DashboardStack, email: str) -> None:
    """Search by email with the search form and open the customer's page."""
    driver.get(dashboard.url("/app/customers"))
    form = wait_for(driver, ec.presence_of_element_located((By.ID, "customer-search")))
    field = form.find_element(By.NAME, "q")
    field.clear()
    field.send_keys(email)
    submit_and_wait(driver, field)  # Enter submits
    if not _path(driver).startswith("/app/customers/"):  # a list of matches, not a redirect
        links = driver.find_elements(By.CSS_SELECTOR, "a.customer-link")
        links = [a for a in links if email in a.text.lower()]
        assert links, f"no a.customer-link for {email} in the search results"
        submit_and_wait(driver, links[0])
    heading = _text(driver.find_element(By.TAG_NAME, "h1"))
    assert email in heading.lower(), f"the customer page's <h1> is {heading!r}"


def _timeline(driver, *kinds: str) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#timeline tr.timeline-row")
    return [_text(row) for row in rows if row.get_attribute("data-kind") in kinds]


# --- signing in ----------------------------------------------------------------------------------------


def test_staff_sign_in_from_the_redirect_and_land_on_the_overview(dashboard, accounts, browser):
    staff = accounts["staff"]
    browser.get(dashboard.url("/app/"))

    assert _path(browser) == "/app/sign-in"
    assert parse_qs(urlparse(browser.current_url).query).get("next") == ["/app/"]
    assert _lang(browser) == "en"

    form = browser.find_element(By.ID, "sign-in-form")
    assert form.find_element(By.NAME, "csrf_token").get_attribute("type") == "hidden"
    form.find_element(By.NAME, "email").send_keys(staff.email)
    form.find_element(By.NAME, "password").send_keys("not the password")
    submit_and_wait(browser, form.find_element(By.ID, "sign-in"))
    assert browser.find_element(By.ID, "sign-in-error").is_displayed()

    form = browser.find_element(By.ID, "sign-in-form")
    form.find_element(By.NAME, "email").clear()
    form.find_element(By.NAME, "email").send_keys(staff.email)
    form.find_element(By.NAME, "password").send_keys(staff.password)
    submit_and_wait(browser, form.find_element(By.ID, "sign-in"))

    assert _path(browser) == "/app/"
    assert _text(browser.find_element(By.TAG_NAME, "h1"))
    nav = browser.find_element(By.ID, "nav")
    for link in ("nav-overview", "nav-sales", "nav-customers", "nav-plans", "nav-alerts"):
        assert nav.find_elements(By.ID, link), f"#{link} missing from the navigation"
    assert not nav.find_elements(By.ID, "nav-events") and not nav.find_elements(By.ID, "nav-audit")
    for section in (
        "open-alerts",
        "period-totals",
        "failed-installments",
        "failing-events",
        "last-run",
        "webhook-freshness",
    ):
        assert browser.find_elements(By.ID, section), f"the overview has no #{section}"
    assert browser.find_elements(By.ID, "sign-out-form")


# --- a customer's record ---------------------------------------------------------------------------------


def test_finding_a_customer_by_email_shows_installment_3_of_3_and_the_refund_note(
    dashboard, accounts, browser
):
    sign_in(browser, dashboard, accounts["staff"])

    _open_customer(browser, dashboard, PLAN_CUSTOMER)
    payments = _timeline(browser, "payment")
    assert any("installment 3 of 3" in row for row in payments), payments
    assert all(any(f"installment {n} of 3" in row for row in payments) for n in (1, 2)), payments
    # JPY has no minor unit: 33,000 yen, never 33,000.00.
    assert any("33,000" in row for row in payments), payments
    assert not any("33,000.00" in row for row in payments), payments
    assert browser.find_elements(By.CSS_SELECTOR, ".before-refund")

    _open_customer(browser, dashboard, DUPLICATE_CUSTOMER)
    [note] = dashboard.query(
        "SELECT text FROM customer_notes WHERE kind = 'refund' AND refund_id = ?", (DUPLICATE_REFUND,)
    )
    note_text = " ".join(note["text"].split())
    refund_rows = _timeline(browser, "refund", "note")
    assert any(note_text in row for row in refund_rows), f"note {note_text!r} not in {refund_rows}"
    assert browser.find_elements(By.CSS_SELECTOR, ".before-refund")
    note_form = browser.find_element(By.CSS_SELECTOR, "form#note-form")
    assert note_form.find_elements(By.CSS_SELECTOR, "textarea[name='text']")


# --- alerts ----------------------------------------------------------------------------------------------


def test_staff_acknowledge_an_alert_and_it_moves_to_acknowledged(dashboard, accounts, browser):
    alert_id = _alert_id(dashboard, "access_revocation", DUPLICATE_CUSTOMER)
    sign_in(browser, dashboard, accounts["staff"])
    browser.get(dashboard.url("/app/alerts"))

    row = browser.find_element(By.CSS_SELECTOR, f"tr.alert-row[data-alert-id='{alert_id}']")
    assert row.get_attribute("data-status") == "open"
    form = browser.find_element(By.CSS_SELECTOR, f"form.alert-action[action$='/app/alerts/{alert_id}']")
    form.find_element(By.CSS_SELECTOR, "textarea[name='note']").send_keys(
        "Mika keeps the course through the first order; told her by email."
    )
    submit_and_wait(browser, form.find_element(By.CSS_SELECTOR, "button[name='action'][value='acknowledge']"))

    assert _path(browser) == "/app/alerts"
    still_open = browser.find_elements(
        By.CSS_SELECTOR, f"tr.alert-row[data-alert-id='{alert_id}'][data-status='open']"
    )
    assert not still_open, "the acknowledged alert is still listed as open"

    browser.get(dashboard.url("/app/alerts?status=acknowledged"))
    row = browser.find_element(By.CSS_SELECTOR, f"tr.alert-row[data-alert-id='{alert_id}']")
    assert row.get_attribute("data-status") == "acknowledged"
    assert _alert_status(dashboard, alert_id) == "acknowledged"


def test_a_viewer_sees_no_acknowledge_button_and_a_forced_post_is_refused(dashboard, accounts, browser):
    # The dispute's alert: open all session (the staff test acknowledges the access alert).
    [alert] = dashboard.query("SELECT id FROM alerts WHERE kind = 'dispute' AND status = 'open' LIMIT 1")
    alert_id = alert["id"]
    sign_in(browser, dashboard, accounts["viewer"])
    browser.get(dashboard.url("/app/alerts"))

    row = browser.find_element(By.CSS_SELECTOR, f"tr.alert-row[data-alert-id='{alert_id}']")
    assert row.get_attribute("data-status") == "open"
    assert not browser.find_elements(By.CSS_SELECTOR, "form.alert-action")
    assert not browser.find_elements(By.CSS_SELECTOR, "button[name='action'][value='acknowledge']")
    nav = browser.find_element(By.ID, "nav")
    assert not nav.find_elements(By.ID, "nav-events") and not nav.find_elements(By.ID, "nav-audit")

    # What a viewer could still try: the POST a staff member's button sends, with a valid CSRF token.
    token = browser.find_element(By.CSS_SELECTOR, "input[name='csrf_token']").get_attribute("value")
    assert token
    status = browser.execute_async_script(
        """
        const [url, token, done] = arguments;
        const body = new URLSearchParams({csrf_token: token, action: 'acknowledge', note: 'forced'});
        fetch(url, {method: 'POST', body, credentials: 'same-origin', redirect: 'manual'})
            .then(r => done(r.status), e => done('error: ' + e));
        """,
        f"/app/alerts/{alert_id}",
        token,
    )
    assert status == 403
    assert _alert_status(dashboard, alert_id) == "open"
    # The token was good (the refusal was the role's): the same session's sign-out form is accepted.
    sign_out = browser.find_element(By.ID, "sign-out-form")
    assert sign_out.find_element(By.NAME, "csrf_token").get_attribute("value") == token
    submit_and_wait(browser, sign_out.find_element(By.CSS_SELECTOR, "button, input[type='submit']"))
    assert _path(browser) == "/app/sign-in"


# --- events (admin) --------------------------------------------------------------------------------------


def test_an_admin_replays_a_dead_event_and_sees_it_done(dashboard, accounts, browser):
    event_id = dashboard.dead_event
    assert dashboard.query("SELECT status FROM events WHERE id = ?", (event_id,))[0]["status"] == "dead"
    sign_in(browser, dashboard, accounts["admin"])
    nav = browser.find_element(By.ID, "nav")
    assert nav.find_elements(By.ID, "nav-events") and nav.find_elements(By.ID, "nav-audit")

    browser.get(dashboard.url("/app/events?status=dead"))
    row = browser.find_element(By.CSS_SELECTOR, f"tr.event-row[data-event-id='{event_id}']")
    assert row.get_attribute("data-status") == "dead"
    submit_and_wait(browser, row.find_element(By.CSS_SELECTOR, f"a[href*='/app/events/{event_id}']"))

    assert _path(browser) == f"/app/events/{event_id}"
    assert _text(browser.find_element(By.ID, "event-status")) == "dead"
    assert DEAD_CHARGE in browser.find_element(By.ID, "event-payload").text
    replay = browser.find_element(By.ID, "replay-form")
    submit_and_wait(browser, replay.find_element(By.CSS_SELECTOR, "button, input[type='submit']"))

    confirm = browser.find_element(By.ID, "replay-confirm")
    assert dashboard.query("SELECT status FROM events WHERE id = ?", (event_id,))[0]["status"] == "dead"
    submit_and_wait(browser, confirm.find_element(By.ID, "confirm-replay"))

    assert _text(browser.find_element(By.ID, "status-before")) == "dead"
    assert _text(browser.find_element(By.ID, "status-after")) == "done"
    assert dashboard.query("SELECT status FROM events WHERE id = ?", (event_id,))[0]["status"] == "done"
    # The replay is in the audit log, under the admin's name.
    browser.get(dashboard.url("/app/audit"))
    entries = [_text(row) for row in browser.find_elements(By.CSS_SELECTOR, "table tr")]
    assert any(event_id in row and accounts["admin"].email in row for row in entries), entries


# --- language and money ----------------------------------------------------------------------------------


def test_a_japanese_browser_gets_the_japanese_interface_and_yen_without_decimals(
    dashboard, accounts, make_browser
):
    browser = make_browser("ja")
    browser.get(dashboard.url("/app/sign-in"))
    assert _lang(browser) == "ja"
    heading = _text(browser.find_element(By.TAG_NAME, "h1"))
    assert JAPANESE.search(heading), f"the sign-in heading is not Japanese: {heading!r}"

    sign_in(browser, dashboard, accounts["viewer"])
    browser.get(dashboard.customer_url(PLAN_CUSTOMER))
    assert _lang(browser) == "ja"
    payments = _timeline(browser, "payment")
    assert len(payments) == 3, payments
    assert all(JAPANESE.search(row) for row in payments), payments
    assert not any("installment" in row for row in payments), payments
    assert all("33,000" in row and any(mark in row for mark in YEN) for row in payments), payments
    assert "33,000.00" not in browser.find_element(By.TAG_NAME, "body").text
