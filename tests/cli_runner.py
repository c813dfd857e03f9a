"""Run `python -m <cli> ...` many times quickly: one preloaded interpreter forks a fresh process per command.

Starting Python and importing torch costs seconds per command; the bad-input matrix runs dozens of commands.
`CliRunner` starts one server process (``python -m tests.cli_runner``) that imports torch, numpy and the
fastmixste library once. For each command it forks; the child sets argv, environment and working directory,
redirects stdout/stderr to files and runs the CLI module as ``__main__`` (runpy, as ``python -m`` does), then
exits with the CLI's exit code. The parent reports that code. Every command therefore runs in its own process,
with its own exit status and real stderr, exactly as a user's ``python -m`` would apart from the shared startup.

FASTMIXSTE_FRESH_CLI=1 (or a platform without fork) runs every command in a fresh interpreter instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Modules the server imports before forking: the heavy, shared part. CLI modules themselves must NOT be here
# (runpy would then run a second copy of them).
PRELOAD = ("numpy", "torch", "fastmixste", "fastmixste.eval.evaluation", "fastmixste.video.keypoints",
           "fastmixste.io.cli", "fastmixste.io.safeload", "fastmixste.data.builtin")  # fmt: skip


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _child(req: dict) -> None:
    """In the forked child: run one CLI module as __main__ and exit with its code (never returns)."""
    import runpy
    import traceback

    code = 1
    try:
        for name, target in (("stdout", 1), ("stderr", 2)):
            fd = os.open(req[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, target)
            os.close(fd)
        os.environ.update(req.get("env") or {})
        os.chdir(req.get("cwd") or REPO)
        sys.argv = [req["module"], *req["argv"]]
        try:
            runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:  # what the interpreter does with it
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # an uncaught exception: the interpreter prints the traceback, exit 1
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """Read one JSON request per line from stdin, run it in a forked child, answer {"returncode": n}."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)


class CliRunner:
    """runner.run("train.evaluate", ["--checkpoint", ...], env={...}) -> Result; close() stops the server."""

    def __init__(self) -> None:
        self.fresh = os.environ.get("FASTMIXSTE_FRESH_CLI") == "1" or not hasattr(os, "fork")
        self.tmp = tempfile.TemporaryDirectory(prefix="cli_runner_")
        self.proc = None
        if not self.fresh:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.cli_runner"], cwd=REPO, text=True,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
            hello = self.proc.stdout.readline()
            if not hello.strip():
                raise RuntimeError("the CLI runner server did not start")

    def run(self, module: str, argv: list[str], env: dict[str, str] | None = None,
            cwd: str | os.PathLike | None = None, timeout: float = 300) -> Result:  # fmt: skip
        if self.fresh:
            p = subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd or REPO, capture_output=True, text=True,
                               env={**os.environ, **(env or {})}, timeout=timeout)  # fmt: skip
            return Result(p.returncode, p.stdout, p.stderr)
        out, err = Path(self.tmp.name) / "stdout", Path(self.tmp.name) / "stderr"
        req = {"module": module, "argv": [str(a) for a in argv], "env": env or {}, "cwd": str(cwd or REPO),
               "stdout": str(out), "stderr": str(err)}  # fmt: skip
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return Result(reply["returncode"], out.read_text(errors="replace"), err.read_text(errors="replace"))

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.tmp.cleanup()


if __name__ == "__main__":
    serve()
