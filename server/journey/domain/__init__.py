"""Pure domain rules for profiles, sessions, visits and system events: no grpc, no SQL."""
