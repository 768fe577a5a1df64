"""`python -m worker`: one worker, configured from `JOBWIRE_*` variables."""

from __future__ import annotations

import logging

from shared.settings import Settings
from worker.main import run


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(settings)


if __name__ == "__main__":
    main()
