from reinforcepp.cli import main

raise SystemExit(main())
