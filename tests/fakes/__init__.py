"""Fakes that stand in for the bot's outside services at their real boundary (HTTP, SMTP)."""
