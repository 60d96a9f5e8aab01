"""The gRPC edge: thin servicers, interceptors, the error map and protobuf converters."""
