"""Start the bot: `python app.py` (HTTP endpoints, background worker, scheduler)."""

from bot.cli import app

if __name__ == "__main__":
    app(["serve"])
