"""The seeded dashboard the browser tests (and scripts/screenshots.py) drive, and the browser itself.

`DashboardStack` runs the real thing, all on 127.0.0.1: the local Stripe stand-in (`stripe_standin`), an
alert sink, redis-server, `python -m worker web` (the receiver and the dashboard under /app/) and a
Dramatiq worker, through the integration tests' harness (tests/integration/stack.py). It tells the
demo's month (worker/ops/demo_data.py) by posting its funnel webhooks and signed Stripe events to the
receiver and letting the worker's real handlers process them, then runs the real nightly reconcile so
it finds the payment whose webhooks never arrived. On top of the demo it adds one event left `dead`
because Stripe answered 503 while its handler ran: replaying it succeeds now that the stand-in answers.
Staff accounts are made with `python -m worker users add`.

`new_driver` starts Debian's chromium through Debian's chromium-driver (scripts/browser.sh installs
them). Selenium Manager is never used: both paths are given, and it is disabled outright here.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote

import httpx

from models import Database
from models.migrate import upgrade
from tests.integration import stack as integration
from tests.integration.faults_helpers import AlertSink
from tests.integration.stack import PYTHON, REDIS_SERVER, Stack, stack_database_url, wait_until

# Debian's packages put them here; override for another layout (never a downloaded browser).
CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BINARY", "/usr/bin/chromedriver")
# Selenium Manager stays offline even if something did reach it (it is also patched out below).
os.environ["SE_OFFLINE"] = "true"
os.environ["SE_AVOID_STATS"] = "true"

WINDOW = (1280, 900)
DISPLAY_TIMEZONE = "Asia/Tokyo"
ROLES = ("viewer", "staff", "admin")

# The story's people and objects, named here so the tests say what they look for.
PLAN_CUSTOMER = "aiko@example.jp"  # a 3-installment plan in JPY; installment 3 only the nightly run finds
DUPLICATE_CUSTOMER = "mika@example.com"  # bought twice; the second refunded (note + access alert)
DUPLICATE_REFUND = "re_demo_duplicate"
DISPUTED_CUSTOMER = "ben@example.com"  # a chargeback awaiting a response (its alert stays open)
DEAD_CUSTOMER = "noor@example.com"
DEAD_CHARGE = "ch_demo_noor1"
DEAD_EVENT = "evt_demo_dead_noor1"


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: run scripts/browser.sh (installs Debian's {package})"
    if REDIS_SERVER is None:
        return "redis-server is not installed: run scripts/bootstrap.sh"
    return None


def _no_selenium_manager(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError(
        "Selenium Manager was asked for a browser or driver: the browser tests use only Debian's chromium "
        f"({CHROMIUM}) and chromium-driver ({CHROMEDRIVER}); nothing may be downloaded"
    )


def new_driver(lang: str = "en-US", window: tuple[int, int] = WINDOW):
    """Headless Chromium whose Accept-Language (and navigator.language) is `lang`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common import selenium_manager

    selenium_manager.SeleniumManager.binary_paths = _no_selenium_manager  # type: ignore[method-assign]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={window[0]},{window[1]}",
        f"--lang={lang}",
    ):
        options.add_argument(argument)
    accept = lang if lang.split("-")[0] == lang else f"{lang},{lang.split('-')[0]}"
    options.add_experimental_option("prefs", {"intl.accept_languages": accept})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


# --- the database ----------------------------------------------------------------------------------


def browser_database_url(root: Path) -> str:
    """SQLite in `root`; on the PostgreSQL leg (TEST_DATABASE_URL) a database of its own, emptied.

    Its own name: the integration stack's `<db>_stack` may be alive in the same pytest session.
    """
    return stack_database_url(root / "dashboard.db", suffix="browser")


# --- the story ---------------------------------------------------------------------------------------


def _story():
    """The demo's month; and, for after the nightly run, a charge (with its customer) and the event
    whose handler will find Stripe down."""
    from worker.ops import demo_data

    scenario = demo_data.build()
    created = int(time.time()) - 5 * 3600
    customer = {"id": "cus_demo_noor", "object": "customer", "email": DEAD_CUSTOMER, "created": created}
    charge = {
        "id": DEAD_CHARGE,
        "object": "charge",
        "amount": 9_800,
        "amount_captured": 9_800,
        "amount_refunded": 0,
        "currency": "jpy",
        "customer": customer["id"],
        # No email on the charge: whose it is comes from the customer, which takes a call to Stripe.
        "billing_details": {"email": None, "name": None},
        "description": "Workbook (PDF)",
        "paid": True,
        "refunded": False,
        "status": "succeeded",
        "captured": True,
        "payment_intent": "pi_demo_noor1",
        "created": created,
        "livemode": False,
    }
    dead = {
        "id": DEAD_EVENT,
        "object": "event",
        "api_version": demo_data.API_VERSION,
        "created": created,
        "livemode": False,
        "pending_webhooks": 1,
        "type": "charge.succeeded",
        "data": {"object": copy.deepcopy(charge)},
    }
    return scenario, [customer, charge], dead


@dataclass(frozen=True)
class StaffAccount:
    email: str
    password: str
    role: str


class DashboardStack:
    """The web process with its dashboard, on a database holding the demo's month."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.secret_key = secrets.token_urlsafe(48)
        self.funnel_token = secrets.token_hex(16)
        self.api_key = "sk_test_" + secrets.token_hex(12) + "Browser"
        self.accounts: dict[str, StaffAccount] = {}
        self.users_missing: str | None = None
        self.standin = None
        self.sink: AlertSink | None = None
        self.stack: Stack | None = None
        self.dead_event = DEAD_EVENT

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> DashboardStack:
        from stripe_standin import StandinServer, Store

        scenario, later, dead = _story()
        store = Store()
        store.add_many(scenario.objects)
        self.standin = StandinServer(store, api_key=self.api_key).start()
        self.sink = AlertSink()
        database_url = browser_database_url(self.root)
        # The harness picks its own database (and on PostgreSQL recreates a shared one): give it ours.
        with mock.patch.object(integration, "stack_database_url", lambda _path: database_url):
            self.stack = Stack(self.root, api_key=self.api_key, stripe_api_base=self.standin.url)
        self.stack.env.update(
            DEV_MODE="1",
            HOST="127.0.0.1",
            PORT=str(self.stack.web_port),
            DASHBOARD_SECRET_KEY=self.secret_key,
            DISPLAY_TIMEZONE=DISPLAY_TIMEZONE,
            FUNNEL_WEBHOOK_TOKEN=self.funnel_token,
            ALERT_WEBHOOK_URL=self.sink.url,
            ALERT_TIMEOUT_SECONDS="2",
        )
        database = Database(database_url)
        try:
            upgrade(database)
        finally:
            database.dispose()
        self.stack.start_redis()
        self.stack.start_web()
        self.stack.start_worker()
        self._seed(scenario, later, dead)
        self._add_users()
        return self

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop_all()
            self.stack.close_database()
        if self.sink is not None:
            self.sink.close()
        if self.standin is not None:
            self.standin.stop()

    # --- seeding through the real receiver, worker and nightly run ----------------------------------

    def _seed(self, scenario, later: list[dict[str, Any]], dead: dict[str, Any]) -> None:
        stack = self.stack
        assert stack is not None and self.standin is not None
        for purchase in scenario.funnel_webhooks:
            answer = stack.http.post(f"/webhooks/funnel/{self.funnel_token}", json=purchase)
            assert answer.status_code == 200, answer.text
        for document in scenario.events:
            answer = stack.post_event(document)
            assert answer.status_code == 200, answer.text
        self._wait_settled()

        nightly = stack.cli("reconcile")
        assert nightly.returncode in (0, 1), f"the nightly run failed:\n{nightly}"
        assert "ch_demo_plan3" in nightly.stdout, f"the nightly run did not find ch_demo_plan3:\n{nightly}"
        self._wait_settled()

        # After the nightly run (which would otherwise find its charge): a sale whose handler meets
        # Stripe answering 503 for its customer on every attempt, so its event ends dead.
        self.standin.store.add_many(later)
        self.standin.faults.add(kind="unavailable", path="/v1/customers/cus_demo_noor", count=1000)
        answer = stack.post_event(dead)
        assert answer.status_code == 200, answer.text
        stack.wait_for_events([dead["id"]], statuses=("dead",))
        self.standin.faults.clear()

    def _wait_settled(self) -> None:
        stack = self.stack
        assert stack is not None

        def settled() -> bool:
            rows = stack.query(
                "SELECT count(*) AS n FROM events WHERE status NOT IN ('done', 'ignored', 'dead')"
            )
            return rows[0]["n"] == 0

        wait_until(settled, "every seeded event to be processed", timeout=60, watch=stack.running())

    # --- staff accounts through `python -m worker users add` ----------------------------------------

    def _add_users(self) -> None:
        for role in ROLES:
            account = StaffAccount(f"{role}@dashboard.example", "pw-" + secrets.token_urlsafe(18), role)
            done = self.cli("users", "add", account.email, "--role", role, input=account.password + "\n")
            if done.returncode != 0:
                said = (done.stdout + done.stderr).strip()
                if re.search(r"no such command|unknown command", said, re.IGNORECASE):
                    self.users_missing = (
                        "`python -m worker users add` does not exist yet (worker/ops/cli/users.py): "
                        "no staff account to sign in with"
                    )
                    return
                raise AssertionError(f"`users add {account.email} --role {role}` failed:\n{done}")
            self.accounts[role] = account

    def cli(self, *args: str, input: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """`python -m worker ARGS` with the stack's settings, `input` on its stdin (not a TTY)."""
        assert self.stack is not None
        return subprocess.run(
            [PYTHON, "-m", "worker", *args],
            env=self.stack.env,
            cwd=self.root,
            input=input or "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # --- for the tests ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self.stack is not None
        return f"http://127.0.0.1:{self.stack.web_port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def customer_url(self, email: str) -> str:
        return self.url("/app/customers/" + quote(email, safe=""))

    def query(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        assert self.stack is not None
        return self.stack.query(sql, params)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10.0, follow_redirects=False)


# --- what a person does in the browser ---------------------------------------------------------------


def wait_for(driver, condition, timeout: float = 10.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def sign_in(driver, stack: DashboardStack, account: StaffAccount, next_path: str | None = None) -> None:
    """Open the sign-in page (via `next_path` when given), fill the form and wait to leave it."""
    from selenium.webdriver.common.by import By

    driver.get(stack.url(next_path or "/app/sign-in"))
    wait_for(driver, lambda d: d.find_elements(By.ID, "sign-in-form"))
    form = driver.find_element(By.ID, "sign-in-form")
    form.find_element(By.NAME, "email").send_keys(account.email)
    form.find_element(By.NAME, "password").send_keys(account.password)
    form.find_element(By.ID, "sign-in").click()
    wait_for(
        driver,
        lambda d: "/app/sign-in" not in d.current_url or d.find_elements(By.ID, "sign-in-error"),
    )
    errors = driver.find_elements(By.ID, "sign-in-error")
    if errors:
        raise AssertionError(f"sign-in as {account.email} refused: {errors[0].text}")


def submit_and_wait(driver, element) -> None:
    """Click `element` (a submit button or a link), or press Enter in it (a text field), and wait for
    the next page to replace this one."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.keys import Keys

    html = driver.find_element("tag name", "html")
    if element.tag_name == "input" and (element.get_attribute("type") or "text") not in ("submit", "button"):
        element.send_keys(Keys.ENTER)
    else:
        element.click()

    def replaced(_driver) -> bool:
        try:
            html.tag_name  # noqa: B018  (asks the browser whether the old page's node still exists)
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            # Mid-navigation chromedriver may say so instead of "stale"; anything else: ask again.
            return "does not belong to the document" in str(exc)
        return False

    wait_for(driver, replaced)
    wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete")
