from sendfleet.monitor.agent import main

raise SystemExit(main())
