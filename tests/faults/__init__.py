"""Fault tests: crashes, expiry across a crash, slow readers, churn, shutdown, bad input."""
