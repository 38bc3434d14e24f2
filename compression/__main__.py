from compression.cli import main

raise SystemExit(main())
