"""`python -m sidecars.adapter [options]` runs the sidecar; `... check --url URL --rules FILE` tests rules once."""

from sidecars.adapter.plugin import Adapter
from sidecars.core.cli import run_main

raise SystemExit(run_main(Adapter))
