"""The CRI side of the core: what only the CRI front end uses (stats and metrics, verbose info, the
streaming backend), above pkg.runtime and beside pkg.docker."""
