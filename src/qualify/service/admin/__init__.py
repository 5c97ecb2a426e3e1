"""Administration: users, API keys, backup and restore."""
