"""`python -m gateway`: the gateway, configured from `JOBWIRE_*` variables."""

import sys

from jobwire.cli import main

sys.exit(main(["gateway"]))
