"""``python -m token_service``: serve the token app with waitress (see token_service/config.py)."""

from __future__ import annotations

import logging
import sys

import waitress

from token_service.config import SERVER_OPTIONS, Config, ConfigError, build_app


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"token_service: {exc}", file=sys.stderr)
        return 2
    waitress.serve(build_app(config), host=config.host, port=config.port, threads=config.threads,
                   ident="token", max_request_body_size=65536, **SERVER_OPTIONS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
