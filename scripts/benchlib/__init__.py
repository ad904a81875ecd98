"""scripts/bench's parts: config (what and where), proc (running and timing commands, cleanup),
build (the release binaries), fixtures (images and bundles), session (one run and its sampling),
measures (one module a measure), report (statistics, the table, the results file)."""
