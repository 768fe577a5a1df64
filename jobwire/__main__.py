"""`python -m jobwire`: the `jobwire` command."""

import sys

from jobwire.cli import main

sys.exit(main())
