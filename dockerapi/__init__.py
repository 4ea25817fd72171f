"""The Docker Engine REST API as a translation layer over pkg: Docker JSON in, pkg calls, Docker JSON out."""
