"""The CRI runtime.v1 gRPC front end: protobufs in, pkg calls, protobufs out."""
