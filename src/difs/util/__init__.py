"""Small helpers shared by the processes (sizes, addresses)."""
