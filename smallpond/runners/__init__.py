"""Runners schedule a TaskGraph's tasks: `local` (embedded process pool) or `ray`."""
