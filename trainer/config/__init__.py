"""Typed configs of the workloads. Imports no torch, so the operator can depend on it."""
