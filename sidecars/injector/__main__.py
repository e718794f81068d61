"""`python -m sidecars.injector [options]` runs the admission webhook (as `sidecars run injector` does)."""

from sidecars.core.cli import run_main
from sidecars.injector.plugin import Injector

raise SystemExit(run_main(Injector))
