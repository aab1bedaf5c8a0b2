"""Business rules: every edge (webhook, Slack, CLI, reconciler) calls these services."""
