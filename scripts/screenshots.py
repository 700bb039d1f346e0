"""Screenshots of every dashboard page for the README, taken from the same seeded stack the browser tests use.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]

Starts the stack of tests/browser/stack.py on 127.0.0.1 (the Stripe stand-in, redis-server, the web
process and a worker, seeded with the demo's month), signs in as an admin in Debian's headless chromium
(scripts/browser.sh installs it) and saves a 1280x800 PNG of each page: sign-in, overview, sales, two
customers (the plan's installments; the duplicate purchase's refund note and alert), plans, alerts,
events, the dead event's detail, the nightly runs and the audit log. Everything it starts is stopped
before it exits; nothing is left behind but the PNGs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT = 1280, 800


def _pages(stack) -> list[tuple[str, str]]:
    from tests.browser.stack import DUPLICATE_CUSTOMER, PLAN_CUSTOMER

    return [
        ("overview", stack.url("/app/")),
        ("sales", stack.url("/app/sales")),
        ("customer", stack.customer_url(PLAN_CUSTOMER)),
        ("customer-refund", stack.customer_url(DUPLICATE_CUSTOMER)),
        ("plans", stack.url("/app/plans")),
        ("alerts", stack.url("/app/alerts")),
        ("events", stack.url("/app/events")),
        ("event-detail", stack.url(f"/app/events/{stack.dead_event}")),
        ("runs", stack.url("/app/runs")),
        ("audit", stack.url("/app/audit")),
        ("users", stack.url("/app/users")),
    ]


def _save(driver, path: Path) -> None:
    driver.execute_script("window.scrollTo(0, 0)")
    path.write_bytes(driver.get_screenshot_as_png())
    print(f"{path}  {path.stat().st_size // 1024} KB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="where the PNGs go")
    parser.add_argument("--lang", default="en-US", help="the browser's language (Accept-Language)")
    options = parser.parse_args(argv)

    # As under pytest (tests/conftest.py): this process only posts to the stack, it never enqueues.
    os.environ["BROKER"] = "stub"
    from tests.browser.stack import DashboardStack, browser_missing, new_driver, sign_in

    missing = browser_missing()
    if missing:
        print(f"screenshots: {missing}", file=sys.stderr)
        return 1
    options.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dashboard-screenshots-") as root:
        stack = DashboardStack(Path(root))
        driver = None
        try:
            stack.start()
            if stack.users_missing:
                print(f"screenshots: {stack.users_missing}", file=sys.stderr)
                return 1
            driver = new_driver(options.lang)
            # The page area exactly WIDTHxHEIGHT, whatever the window's frame takes.
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
            )
            driver.get(stack.url("/app/sign-in"))
            _save(driver, options.out / "sign-in.png")
            sign_in(driver, stack, stack.accounts["admin"])
            for name, url in _pages(stack):
                driver.get(url)
                _save(driver, options.out / f"{name}.png")
        finally:
            if driver is not None:
                driver.quit()
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
