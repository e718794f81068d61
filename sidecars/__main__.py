from sidecars.cli import main

raise SystemExit(main())
