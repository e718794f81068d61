from sidecars.core.cli import run_main
from sidecars.tailer.plugin import Tailer

raise SystemExit(run_main(Tailer))
