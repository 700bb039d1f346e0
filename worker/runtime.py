"""Per-process singletons built from the settings: the database and the Stripe client.

Built lazily so that importing a module never opens a connection; tests reset them with `reset()`.
"""

from __future__ import annotations

from functools import lru_cache

import stripe

from models import Database
from worker import stripe_api
from worker.settings import get_settings


@lru_cache(maxsize=1)
def database() -> Database:
    settings = get_settings()
    return Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)


@lru_cache(maxsize=1)
def stripe_client() -> stripe.StripeClient:
    return stripe_api.make_client(get_settings())


def stripe_reader() -> stripe_api.StripeReader | None:
    """A reader for handlers that must fetch from Stripe; None when no API key is configured."""
    if get_settings().stripe_api_key is None:
        return None
    return stripe_api.StripeReader(get_settings(), stripe_client())


def configure_domain() -> None:
    """Hand the domain rules their configured values (handlers read no settings themselves)."""
    from datetime import timedelta

    from handlers import customers, sales_view

    customers.DUPLICATE_WINDOW = timedelta(days=get_settings().duplicate_window_days)
    sales_view.MERGE_CUSTOMERS_ACROSS_ACCOUNTS = get_settings().merge_customers_across_accounts


def reset() -> None:
    """Forget the cached settings, database and client (after the environment changed)."""
    if database.cache_info().currsize:
        database().dispose()
    database.cache_clear()
    stripe_client.cache_clear()
    get_settings.cache_clear()
