"""One line per error a user can cause, in every binary:

    <binary>: error: <what>, <which file or flag>, <what to do>

then exit status 1 (130 after Ctrl-C, 143 after SIGTERM), with neither usage text nor
traceback. The library's
errors already name the file or flag and the fix; this module decides which errors are the
user's and prints them on one line: a bad flag value (absl validators, at parse time), an
`app.UsageError`, an OSError (a missing or unreadable file), a ValueError (a bad value, a damaged
file), a KeyError (an unknown name), a damaged zip (`.npz`), TensorFlow's data and load errors
(`tf.errors.OpError`), a busy lock, a failed study step. Anything else is a bug in this package
and keeps its traceback (so does a KeyError whose message is a bare key, and every error when
TRANSFER_TF_TRACEBACK=1 is set, for debugging).

    def run():
        cli.run("transfer-finetune", main)
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import signal
import sys
import time
import zipfile
import zlib

from absl import app, flags

from transfer_tf.data.tfrecords import ASSERTION_PREFIX, assertion_text
from transfer_tf.files import BusyError, atomic_write_text
from transfer_tf.study.steps import STARTED_AT_ENV, STARTUP_FILE_ENV

_USER_ERRORS = (
    app.UsageError,
    flags.Error,
    OSError,
    ValueError,
    KeyError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    BusyError,
)


def _tf_op_error():
    """`tf.errors.OpError` when TensorFlow is loaded (never imported here just for this)."""
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    return getattr(errors, "OpError", None)


def _study_step_failed():
    steps = sys.modules.get("transfer_tf.study.steps")
    return getattr(steps, "StepFailed", None)


def is_user_error(error: BaseException) -> bool:
    if os.environ.get("TRANSFER_TF_TRACEBACK"):
        return False
    if isinstance(error, KeyError) and " " not in str(error.args[0] if error.args else ""):
        return False  # d["key"] in our code: a bug; an unknown name comes with a sentence
    kinds = [k for k in (_tf_op_error(), _study_step_failed()) if k is not None]
    return isinstance(error, _USER_ERRORS + tuple(kinds))


def tf_error_text(message: str) -> str:
    """Our own assertion's text out of a TensorFlow error message, else its first line."""
    text = assertion_text(message)
    if text is not None:
        return text
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else message


def error_text(error: BaseException) -> str:
    """The one-line text of a user error (the first line of a multi-line message)."""
    op_error = _tf_op_error()
    if op_error is not None and isinstance(error, op_error):
        text = tf_error_text(error.message)
        if ASSERTION_PREFIX not in error.message:
            text = f"{type(error).__name__}: {text}; check the files the flags name"
    elif isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    elif isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.filename}: {error.strerror.lower()}; check the path the flags name"
    elif isinstance(error, zipfile.BadZipFile | zlib.error | EOFError):
        text = f"a damaged file ({type(error).__name__}: {error}); write it again"
    else:
        text = str(error) or type(error).__name__
    text = text.strip().split("\n", 1)[0]
    return re.sub(r"^(error: )+", "", text)


def error_line(binary: str, error: BaseException) -> str:
    return f"{binary}: error: {error_text(error)}"


def define_renamed_flag(old: str, new: str, why: str) -> None:
    """`--old` kept only to say, at parse time, that it is now `--new` (and why), so an old
    command line or flagfile fails in one line instead of meaning something else."""
    flags.DEFINE_string(old, None, f"Renamed --{new} ({why}).")
    flags.register_validator(
        old, lambda value: value is None, f"--{old} is now --{new} ({why}); rename it"
    )


def _parse_flags(binary: str, argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"{binary}: error: {e}; see {binary} --helpfull", file=sys.stderr, flush=True)
        sys.exit(1)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `kill`), raised where Ctrl-C would be: a study stops its
    step commands the same way, and the binary exits with one line."""


def _raise_terminated(signum, frame):
    raise Terminated


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc; 10 ms resolution), else None."""
    try:
        with open("/proc/self/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - int(after_name[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None


class _LateImportTimer(importlib.abc.MetaPathFinder):
    """Times a module's import (e.g. TensorFlow) that a binary does only inside its main, so
    that its start-up counts it: finds the module as the other finders would and times its
    loader's exec_module (the module and everything it imports). Only timing is added."""

    def __init__(self, name: str, on_done):
        self.name, self.on_done = name, on_done

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once; the spec below comes from the other finders
        try:
            spec = importlib.util.find_spec(fullname)
            exec_module = spec.loader.exec_module
        except Exception:  # noqa: BLE001 - timing must never break an import
            return None

        def timed_exec_module(module):
            start = time.time()
            try:
                exec_module(module)
            finally:
                self.on_done(time.time() - start)

        spec.loader.exec_module = timed_exec_module
        return spec


# This process's start-up: process start until `main` began, plus TensorFlow's import when main
# does it (`record_startup`).
startup_s: float | None = None


def _write_startup(path: str | None) -> None:
    if path and startup_s is not None:
        try:
            atomic_write_text(path, repr(startup_s))
        except OSError:
            pass


def record_startup() -> float | None:
    """Measures this process's start-up when `main` begins: since the time a study passed
    (STARTED_AT_ENV), else since the process started; writes it to STARTUP_FILE_ENV's file when a
    study asked for it, again with TensorFlow's import added if main imports it later. Both
    variables are removed, so a process this one starts reports nothing in their name. Never
    fails the binary."""
    global startup_s
    path = os.environ.pop(STARTUP_FILE_ENV, None)
    started_at = os.environ.pop(STARTED_AT_ENV, None)
    try:
        startup_s = time.time() - float(started_at) if started_at else process_age_s()
    except ValueError:
        startup_s = process_age_s()
    _write_startup(path)
    if path and startup_s is not None and "tensorflow" not in sys.modules:  # a study asked

        def add_import(seconds: float) -> None:
            global startup_s
            startup_s += seconds
            _write_startup(path)

        sys.meta_path.insert(0, _LateImportTimer("tensorflow", add_import))
    return startup_s


def guard(binary: str, main):
    """`main` with the user's errors printed as one line (exit 1), and Ctrl-C (exit 130) or
    SIGTERM (exit 143) as one line."""

    def guarded(argv):
        record_startup()
        try:
            return main(argv)
        except KeyboardInterrupt as e:
            terminated = isinstance(e, Terminated)
            print(
                f"{binary}: {'terminated' if terminated else 'interrupted'}; rerun the same "
                "command to resume",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(143 if terminated else 130)
        except Exception as e:  # noqa: BLE001 - sorted by is_user_error; bugs re-raise
            if not is_user_error(e):
                raise
            print(error_line(binary, e), file=sys.stderr, flush=True)
            sys.exit(1)

    return guarded


def run(binary: str, main) -> None:
    """`app.run(main)` with one-line errors, flag errors included, and SIGTERM stopping it as
    Ctrl-C does."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    app.run(guard(binary, main), flags_parser=lambda argv: _parse_flags(binary, argv))
