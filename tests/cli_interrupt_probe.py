"""A tiny CLI for the Ctrl-C test: registers a save hook, then receives a real SIGINT while working.

    python -m tests.cli_interrupt_probe SAVED_FILE
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from fastmixste.io.cli import interrupt_hook, run_cli


def main(argv: list[str]) -> int:
    saved = Path(argv[0])

    def save() -> str:
        saved.write_text("checkpoint")
        return f"saved a resumable checkpoint to {saved}"

    with interrupt_hook(save):
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in a terminal sends to the process
        time.sleep(60)  # interrupted long before this ends
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
