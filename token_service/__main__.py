"""``python -m token_service``: serve the token app with waitress (see token_service/config.py).

SIGTERM ends the server at once, as SIGINT does (waitress finishes the requests in progress):
as a container's PID 1 the process would otherwise ignore it, and ``docker stop`` or a Swarm
update would wait out the grace period while the old process went on issuing tokens."""

from __future__ import annotations

import logging
import signal
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
    signal.signal(signal.SIGTERM, _exit)
    waitress.serve(build_app(config), host=config.host, port=config.port, threads=config.threads,
                   ident="token", max_request_body_size=65536, **SERVER_OPTIONS)
    return 0


def _exit(signum: int, _frame: object) -> None:
    logging.getLogger("token_service").info("signal %d: stopping", signum)
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
