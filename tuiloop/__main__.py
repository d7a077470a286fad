from tuiloop.cli import main

raise SystemExit(main())
