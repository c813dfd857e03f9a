"""A streaming CLI that receives a real SIGINT after 30 frames (for the Ctrl-C test).

    python -m tests.deploy.stream_interrupt_probe OUT.npz
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

from fastmixste.deploy.stream import Frame2D, run_stream
from fastmixste.io.cli import run_cli
from tests.deploy.conftest import FrameMean


def frames():
    for t in range(10_000):
        if t == 30:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in a terminal sends to the process
        x = np.full((17, 2), t / 1e4, np.float32)
        yield Frame2D(t / 25, 0.0, x, x, np.ones(17, np.float32), np.zeros(17, bool))


def main(argv: list[str]) -> int:
    run_stream(FrameMean(9), frames(), argv[0], lookahead=4, chunk=8)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
