"""`python -m services.gateway`: serve the API with uvicorn on SERVER_HOST:SERVER_PORT."""

from __future__ import annotations

import sys

import uvicorn

from shared.logsetup import configure_logging
from shared.settings import Settings, SettingsError


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(str(exc))
    configure_logging(settings, "gateway")
    from services.gateway.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.server_host,
        port=settings.server_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
