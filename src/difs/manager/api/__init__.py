"""The manager's HTTP API: dependencies, the problem handler, and one router per entity."""
