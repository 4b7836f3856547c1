"""`python -m choreo_ingest`."""

import signal
import sys

# SIGTERM interrupts from the very first moment, the CLI's imports included (main() does the same
# for the installed `choreo-ingest` script).
signal.signal(signal.SIGTERM, signal.default_int_handler)
try:
    from choreo_ingest.cli import main
except KeyboardInterrupt:
    sys.exit(130)  # ExitCode.INTERRUPTED: importing it is what was interrupted

main()
