from sidecars.ambassador.plugin import Ambassador
from sidecars.core.cli import run_main

raise SystemExit(run_main(Ambassador))
