from hermes_container.cli import main

raise SystemExit(main())
