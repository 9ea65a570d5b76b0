"""Thin absl mains: parse flags, call library functions, write results (one file per binary)."""
