"""The runtime: sandboxes, containers, specs, exec — built on containerd."""
