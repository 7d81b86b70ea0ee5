from sendfleet.cli import main

raise SystemExit(main())
