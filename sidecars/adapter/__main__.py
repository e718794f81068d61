"""`python -m sidecars.adapter [options]` runs the sidecar; `... check --url URL --rules FILE` tests rules once."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "check":
    from sidecars.adapter.check import main

    raise SystemExit(main(sys.argv[2:]))

from sidecars.adapter.plugin import Adapter
from sidecars.core.cli import run_main

raise SystemExit(run_main(Adapter))
