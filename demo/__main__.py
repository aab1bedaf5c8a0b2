"""Run the demo: `python -m demo` from the repository root."""

from demo.scenario import main

main()
