"""The Slack edge: slash commands, buttons, the grant status threads and their messages."""
