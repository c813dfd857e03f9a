"""One error boundary for every command-line tool: messages instead of tracebacks, and fixed exit codes.

    if __name__ == "__main__":
        sys.exit(run_cli(main))          # or decorate main with @cli_entry

What the user sees (stderr) and the exit code:

==================================================  =====  ==============================================
raised by ``main``                                  exit   printed
==================================================  =====  ==============================================
returns normally (None or an int)                   0/int  whatever main printed
bad input: ``UserInputError`` / ``ValueError``,      2      ``error: <message>`` (one or two lines)
``OSError`` (missing file, permission denied on an
output, ...), ``CheckpointError``,
``BackendUnavailableError``
``RunFailed`` (the run started and failed, e.g.      1      ``error: <message>``
the loss became NaN)
``KeyboardInterrupt`` (Ctrl-C)                      130    ``interrupted (Ctrl-C)``, plus what each
                                                           registered interrupt hook reports (e.g. where
                                                           it saved a resumable checkpoint)
SIGTERM (``timeout``, SLURM, Kubernetes): raised    143    ``terminated (SIGTERM)``, plus the hooks' notes
as ``Terminated``, a KeyboardInterrupt
``MemoryError`` or an allocator's out-of-memory     2      ``error: out of memory: <what and how much>``
error (input too large for this machine)
anything else: a bug                                1      the traceback, then a line saying it is a bug
==================================================  =====  ==============================================

``--debug`` on the command line (removed before ``main`` sees it) or ``FASTMIXSTE_DEBUG=1`` adds the traceback
to the first three cases. Messages should say what was expected and what came, naming the file or option.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

__all__ = [
    "DEBUG_ENV", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_TERMINATED", "EXIT_USAGE", "RunFailed", "Terminated",
    "UserInputError", "add_debug_argument", "cli_entry", "defer_interrupts", "interrupt_hook", "on_interrupt",
    "out_of_memory", "run_cli",
]  # fmt: skip

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
DEBUG_ENV = "FASTMIXSTE_DEBUG"
_MAX_LINE_CHARS = 1000


class UserFacingError(Exception):
    """Base for errors raised by the library layers whose message is written for the user (a CLI prints it, exit 2):
    a checkpoint that does not fit, a backend that cannot run. Mixed into their own base classes."""


class UserInputError(ValueError):
    """Input that cannot work: a bad option value, an unusable file, a folder that cannot be written (exit 2)."""


class RunFailed(RuntimeError):
    """A run that started and failed for a reason the user should act on, e.g. a NaN loss (exit 1)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout``, SLURM and Kubernetes send), delivered like Ctrl-C so the same hooks save the run."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


_interrupt_hooks: list[Callable[[], str | None]] = []


def on_interrupt(hook: Callable[[], str | None]) -> Callable[[], None]:
    """Register ``hook`` to run when a CLI is stopped with Ctrl-C (newest first); returns a function removing it.

    A hook saves what can be saved and returns a short note for the user ("saved a resumable checkpoint to X"),
    or None. A hook that raises is reported and does not stop the others.
    """
    _interrupt_hooks.append(hook)

    def remove() -> None:
        if hook in _interrupt_hooks:
            _interrupt_hooks.remove(hook)

    return remove


@contextmanager
def interrupt_hook(hook: Callable[[], str | None]) -> Iterator[None]:
    """``with interrupt_hook(save): ...`` — ``save`` runs on Ctrl-C only while the block runs."""
    remove = on_interrupt(hook)
    try:
        yield
    except KeyboardInterrupt:
        raise  # keep the hook registered: run_cli runs it while handling this interrupt
    except BaseException:
        remove()
        raise
    else:
        remove()


@contextmanager
def defer_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM inside run_cli) while the block runs; raise it when the block ends if one came.

    For work that must not stop half-way (an optimizer step and the counters that record it): the interrupt then
    lands where the state is consistent and an interrupt hook can save it. A no-op outside the main thread, inside
    another deferring block, or where SIGINT is not Python's default handler (e.g. ignored in a background job).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        yield
        return
    previous_term = signal.getsignal(signal.SIGTERM)
    deferring_term = previous_term is _raise_terminated
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    if deferring_term:
        signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if deferring_term:
            signal.signal(signal.SIGTERM, previous_term)
    if signal.SIGTERM in received:
        raise Terminated
    if received:
        raise KeyboardInterrupt


def add_debug_argument(parser) -> None:  # noqa: ANN001 (argparse.ArgumentParser; kept import-free)
    """Document ``--debug`` in a parser's help (run_cli removes the flag before the parser sees it)."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback with error messages (or set {DEBUG_ENV}=1)")  # fmt: skip


def _debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _user_errors() -> tuple[type[BaseException], ...]:
    return (ValueError, OSError, UserFacingError)


def out_of_memory(exc: BaseException) -> bool:
    """MemoryError, or an allocator's out-of-memory error (torch raises RuntimeError subclasses for those)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()
                                              or type(exc).__name__ == "OutOfMemoryError")


def _oom_message(exc: BaseException) -> str:
    said = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no details"
    return (f"out of memory: {said}. The input asks for more memory than this machine has: check sizes stated "
            f"by the input (array shapes, frame counts, batch sizes, model widths)")


def _message(exc: BaseException) -> str:
    """An exception -> at most two lines for the user."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        # "[Errno 13] Permission denied: '/x'" -> "Permission denied: /x" (our own OSErrors carry one message)
        text = f"{exc.strerror}: {exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 else "")
    elif isinstance(exc, KeyError) and type(exc).__str__ is KeyError.__str__ and len(exc.args) == 1:
        text = str(exc.args[0])  # KeyError quotes its message; ours read better plain
    else:
        text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or [type(exc).__name__]
    # Two lines at most: the first as it is, the rest (e.g. a list of backends and why each was refused) joined.
    kept = [lines[0]] + (["; ".join(lines[1:])] if len(lines) > 1 else [])
    return "\n".join(ln if len(ln) <= _MAX_LINE_CHARS else ln[:_MAX_LINE_CHARS] + " [...; --debug shows all]"
                     for ln in kept)


def _run_interrupt_hooks() -> list[str]:
    notes = []
    for hook in reversed(list(_interrupt_hooks)):
        try:
            note = hook()
        except KeyboardInterrupt:  # a second Ctrl-C: stop saving, leave quietly
            notes.append(f"{getattr(hook, '__name__', 'hook')} interrupted by a second Ctrl-C")
            break
        except Exception as exc:  # noqa: BLE001 (a failing hook must not hide the others or the interrupt)
            notes.append(f"{getattr(hook, '__name__', 'hook')} failed: {exc}")
        else:
            if note:
                notes.append(str(note))
    return notes


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` inside the error boundary (see the module docstring) and return the exit code.

    argv defaults to sys.argv[1:]; ``--debug`` is removed from it. SystemExit (argparse's usage errors, exit 2)
    passes through unchanged.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    previous_term = _install_sigterm()
    try:
        code = main(argv)
        return 0 if code is None else int(code)
    except KeyboardInterrupt as exc:
        notes = _run_interrupt_hooks()
        _interrupt_hooks.clear()
        if debug:
            traceback.print_exc()
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
        print(what + "".join(f"; {n}" for n in notes), file=sys.stderr, flush=True)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    except RunFailed as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {_message(exc)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except _user_errors() as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {_message(exc)}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 (MemoryError and allocator errors are sorted out below)
        if out_of_memory(exc):
            if debug:
                traceback.print_exc()
            print(f"error: {_message(ValueError(_oom_message(exc)))}", file=sys.stderr, flush=True)
            return EXIT_USAGE
        traceback.print_exc()
        print("error: an unexpected internal error (a bug in fastmixste, not in your input): please report it "
              "with the traceback above and the command line", file=sys.stderr, flush=True)  # fmt: skip
        return EXIT_FAILED
    finally:
        _restore_sigterm(previous_term)


def _install_sigterm() -> object:
    """SIGTERM -> Terminated in the main thread while a CLI runs (where SIGTERM has its default action)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return None
    signal.signal(signal.SIGTERM, _raise_terminated)
    return previous


def _restore_sigterm(previous: object) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def cli_entry(main: Callable[[list[str]], int | None]) -> Callable[[Sequence[str] | None], int]:
    """Decorator: ``main(argv)`` runs inside run_cli and returns its exit code; ``main.__wrapped__`` is the raw one."""

    @functools.wraps(main)
    def entry(argv: Sequence[str] | None = None) -> int:
        return run_cli(main, argv)

    return entry
