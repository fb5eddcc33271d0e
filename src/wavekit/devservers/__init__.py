"""Throwaway servers on loopback for the demo and the tests (never for production)."""
