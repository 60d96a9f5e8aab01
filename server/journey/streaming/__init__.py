"""Streaming: fan-out of committed system events to live subscribers, and replay from storage."""
