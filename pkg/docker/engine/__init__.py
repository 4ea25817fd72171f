"""The Docker container engine: Docker containers (names, restart policies, Docker config) on the core."""
