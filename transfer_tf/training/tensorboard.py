"""Starting TensorBoard beside a training run, bound to 127.0.0.1 only (never all interfaces).

`python -m transfer_tf.training.tensorboard --logdir=... --port=...` runs TensorBoard's own server
in this Python (TensorBoard 2.20 imports `pkg_resources`, which is why setup.cfg pins setuptools
80.10.2, the last release that ships it).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HOST = "127.0.0.1"


def tensorboard_command(logdir: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "transfer_tf.training.tensorboard",
        "--logdir",
        logdir,
        "--host",
        HOST,
        "--port",
        str(int(port)),
        "--reload_interval",
        "5",
    ]


def serve(argv: list[str]) -> int:
    """TensorBoard's own `main` (flags as `tensorboard`)."""
    from tensorboard import default, program  # only the server process needs it

    board = program.TensorBoard(plugins=default.get_plugins())
    board.configure(argv=["tensorboard", *argv])
    return board.main()


def start_tensorboard(logdir: str, port: int, *, wait_s: float = 60.0) -> subprocess.Popen:
    """Starts TensorBoard on http://127.0.0.1:<port>/ and waits until it answers.

    The caller owns the process (`stop_tensorboard`); a port in use or a crash raises with
    TensorBoard's own message.
    """
    if not 0 < int(port) < 65536:
        raise ValueError(f"--tensorboard_port={port}: use a port in 1..65535")
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a full pipe would block it
    process = subprocess.Popen(
        tensorboard_command(logdir, port), stdout=subprocess.DEVNULL, stderr=log, text=True
    )
    deadline = time.time() + wait_s
    url = f"http://{HOST}:{int(port)}/data/logdir"
    while time.time() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(
                f"TensorBoard exited with code {process.returncode} on --tensorboard_port={port}: "
                f"{log.read()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    stop_tensorboard(process)
    raise TimeoutError(f"TensorBoard did not answer on {url} within {wait_s:.0f}s")


def stop_tensorboard(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
