"""How the dashboard shows amounts and times: per currency, and in DISPLAY_TIMEZONE."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from handlers.money import decimals

# Symbols for the currencies funnel sellers most often charge in; any other shows its ISO code.
_SYMBOLS = {"jpy": "¥", "usd": "$", "eur": "€", "gbp": "£", "aud": "A$", "cad": "CA$", "krw": "₩", "inr": "₹"}


def money(minor: int | None, currency: str | None) -> str:
    """`¥1,000`, `$12.50`, `1.234 KWD`: the amount in the currency's own decimals (JPY has none)."""
    if minor is None or not currency:
        return ""
    code = currency.lower()
    places = decimals(code)
    sign = "-" if minor < 0 else ""
    units = abs(minor) / (10**places) if places else abs(minor)
    number = f"{units:,.{places}f}"
    symbol = _SYMBOLS.get(code)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {code.upper()}"


def local_time(moment: datetime | None, tz: ZoneInfo, with_zone: bool = True) -> str:
    if moment is None:
        return ""
    shown = moment.astimezone(tz)
    text = shown.strftime("%Y-%m-%d %H:%M")
    return f"{text} {shown.tzname()}" if with_zone else text


def local_day(moment: datetime | None, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d") if moment else ""


def age(seconds: float | None) -> str:
    """A short duration: 45s, 12m, 3h 5m, 2d 4h."""
    if seconds is None:
        return ""
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
