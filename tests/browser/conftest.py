"""Fixtures for the browser tests: one seeded dashboard for the package, a fresh headless Chromium per test.

On a failed test the browser's screenshot (and the page's HTML) is saved in the test's `tmp_path`; the
paths are printed at the end of the run ("browser screenshots of failed tests").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.browser.stack import DashboardStack, StaffAccount, browser_missing, new_driver

_SCREENSHOTS = pytest.StashKey[list[str]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep each phase's report on the item (`rep_setup`, `rep_call`), for the fixtures' teardown."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    saved = config.stash.get(_SCREENSHOTS, [])
    if saved:
        terminalreporter.section("browser screenshots of failed tests")
        for line in saved:
            terminalreporter.write_line(line)


@pytest.fixture(scope="package")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardStack]:
    """The web process with its dashboard, on a database migrated to head and holding the demo's month."""
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    stack = DashboardStack(tmp_path_factory.mktemp("dashboard"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="package")
def accounts(dashboard: DashboardStack) -> dict[str, StaffAccount]:
    """role -> a staff account of that role, made with `python -m worker users add`."""
    if dashboard.users_missing:
        pytest.skip(dashboard.users_missing)
    return dashboard.accounts


@pytest.fixture
def make_browser(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[..., object]]:
    """Start headless Chromium with a given language (`make_browser("ja")`); each is quit afterwards,
    after saving a screenshot of it to tmp_path when the test failed."""
    drivers: list[tuple[str, object]] = []

    def start(lang: str = "en-US"):
        driver = new_driver(lang)
        drivers.append((lang, driver))
        return driver

    yield start

    report = getattr(request.node, "rep_call", None)
    failed = report is not None and report.failed
    for index, (lang, driver) in enumerate(drivers):
        try:
            if failed:
                suffix = "" if index == 0 else f"-{index + 1}-{lang}"
                shot = tmp_path / f"failure{suffix}.png"
                driver.save_screenshot(str(shot))
                (tmp_path / f"failure{suffix}.html").write_text(driver.page_source)
                line = f"{request.node.nodeid}: {shot} (at {driver.current_url})"
                request.config.stash.setdefault(_SCREENSHOTS, []).append(line)
                print(f"screenshot saved: {line}")
        finally:
            driver.quit()


@pytest.fixture
def browser(make_browser):
    """Headless Chromium in English (Accept-Language: en-US), 1280x900."""
    return make_browser("en-US")
