"""Where launch plans run: `kubernetes` (children in a cluster) and `local` (processes on this machine)."""
