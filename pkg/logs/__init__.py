"""Container logs in the CRI format: the shim-side logger, the line codec and a following reader."""
