"""`make demo` / `python -m demo`: the bot on local stand-ins for Slack, Pretix and SMTP.

It lives outside `bot/` because it runs the test fakes (tests/fakes), which the installed
bot never ships or imports; like `benchmarks/`, it runs from a clone of the repository.
"""
