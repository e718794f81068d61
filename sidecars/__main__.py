from sidecars.core.cli import main

raise SystemExit(main())
