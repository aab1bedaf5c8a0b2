# Two commands on a fresh machine: `make run` starts the bot, `make test` runs the tests.
# Each creates the virtual environment (.venv) on first use and installs the locked deps.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run demo standins test test-pretix lint bench install bot clean

run: $(STAMP)
	$(BIN)/python app.py

# The bot on local stand-ins for Slack, Pretix and SMTP (the test fakes), SQLite in a temporary
# folder: a short scripted story printed as the channel shows it. No settings, no network.
demo: $(STAMP)
	$(BIN)/python -m demo

# The same stand-ins, set up like conferences.example.toml and left running for the command
# line: prints the .env lines that point the bot at them; Ctrl-C (or SIGTERM) stops them.
standins: $(STAMP)
	$(BIN)/python -m demo.standins

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The command line from a fresh clone: `make bot ARGS="status"` runs `.venv/bin/voucher-bot status`
# (installing first when needed). make reports any failure as exit status 2: scripts that look
# at the command's own exit status (0, 1 or 2) call .venv/bin/voucher-bot directly.
bot: $(STAMP)
	@$(BIN)/voucher-bot $(ARGS)

# Contract tests: the same client scenarios against a real pretix (started from ../shared,
# first start ~3 min, then seconds; left running) and against the fake, answers compared.
# up.sh prints the env, tokens included, on stdout: kept out of logs.
PRETIX_SHARED ?= ../shared
PRETIX_HARNESS_DIR ?= /tmp/pretix-harness
PRETIX_UP_TIMEOUT ?= 900
PRETIX_TEST_TIMEOUT ?= 600
export PRETIX_HARNESS_DIR

test-pretix: $(STAMP)
	@test -f $(PRETIX_SHARED)/pretix-server/up.sh || \
		{ echo "no $(PRETIX_SHARED)/pretix-server/up.sh: set PRETIX_SHARED"; exit 1; }
	timeout $(PRETIX_UP_TIMEOUT) bash $(PRETIX_SHARED)/pretix-server/up.sh > /dev/null
	set -a && . $(PRETIX_HARNESS_DIR)/env && set +a && PRETIX_CONTRACT=1 \
		timeout $(PRETIX_TEST_TIMEOUT) $(BIN)/python -m pytest -m contract tests/contract $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11 or newer is needed; try: make PYTHON=python3.11 $(MAKECMDGOALS)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
