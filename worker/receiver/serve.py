"""Serving the receiver: uvicorn with the options the `web` process runs it with."""

from __future__ import annotations

from worker.settings import Settings


def run_web(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve `worker.receiver.web` until stopped (SIGINT/SIGTERM), on the settings' host and port."""
    import uvicorn

    uvicorn.run(
        "worker.receiver.web:app_from_settings",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
