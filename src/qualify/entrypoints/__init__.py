"""Entry points: the command line, the HTTP API and the dashboard. Each opens its workspace through qualify.bootstrap."""
