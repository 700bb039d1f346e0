"""The README tells sellers which Stripe events to send: exactly the types the worker handles."""

from __future__ import annotations

import re
from pathlib import Path

from handlers import DISPATCH

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_every_handled_event_type_and_no_other():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- event-types:.*?-->(.*?)<!-- /event-types -->", text, re.S)
    assert block is not None, "README lost its event-types block"
    listed = re.findall(r"`([a-z_.]+)`", block.group(1))
    assert sorted(listed) == sorted(DISPATCH)
    assert len(listed) == len(set(listed))
