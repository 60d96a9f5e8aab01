"""Tests of the clients: Python, CLI, Node.js, grpcurl, and the contract itself."""
