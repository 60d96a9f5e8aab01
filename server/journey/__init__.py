"""Journey: a gRPC service that turns tracked events into customer-journey system events."""
