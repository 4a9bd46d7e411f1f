"""python -m genprop_cli.weights hash FOLDER_OR_FILE...: registry lines (sha256) for weights.toml."""

from genprop_cli.weights.integrity import main

raise SystemExit(main())
