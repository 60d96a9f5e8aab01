"""The benchmark: Journey beside a storage-free gRPC baseline, driven by the same load generator."""
