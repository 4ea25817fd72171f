"""containerd: the supervisor that owns a private containerd, and a typed gRPC client."""
