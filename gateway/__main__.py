"""`python -m gateway`: the gateway, configured from `JOBWIRE_*` variables (what
`jobwire gateway` runs)."""

import sys

from gateway.processes.run import main

sys.exit(main())
