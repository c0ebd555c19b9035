from mtlsc.cli import main

raise SystemExit(main())
