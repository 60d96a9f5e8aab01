"""The Python client of Journey; `journey_client.pb` holds the journey.v1 messages and stubs."""
