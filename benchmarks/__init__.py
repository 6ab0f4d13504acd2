"""Benchmarks of the kit against the plain OpenTelemetry SDK, and of the collector (see README.md)."""
