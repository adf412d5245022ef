from energy_hpc.cli import main

raise SystemExit(main())
