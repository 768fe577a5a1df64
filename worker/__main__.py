"""`python -m worker`: one worker, configured from `JOBWIRE_*` variables."""

from __future__ import annotations

from shared.logs import configure_logging
from shared.settings import Settings
from worker.main import run


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings)
    run(settings)


if __name__ == "__main__":
    main()
