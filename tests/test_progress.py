"""Progress bars: moving tqdm bars on stderr when it is a terminal, none when redirected or --quiet,
and stdout byte for byte the same in every case."""
import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.helpers.data import write_category

REPO = Path(__file__).resolve().parents[1]
FAST = ["--weights", "random", "--model", "resnet18", "--k", "10", "--image-size", "64", "--batch-size", "2",
        "--workers", "0", "--overwrite", "--protocol", "standard"]


def run(args: list[str], terminal: bool, tool: str = "train.py") -> tuple[str, str]:
    """Runs a script with stdout to a pipe and stderr to a pseudo-terminal (or a pipe): (stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "DATA"}
    env["TERM"] = "xterm"
    if not terminal:
        done = subprocess.run([sys.executable, tool, *args], cwd=REPO, capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a fresh pty has 0 columns
    process = subprocess.Popen([sys.executable, tool, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=slave,
                               stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:  # read the terminal side until the process closes it, so it never blocks on a full buffer
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout = process.stdout.read().decode()
    assert process.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    os.close(master)
    return stdout, b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_category(root, "toy", seed=0)
    write_category(root, "other", seed=1)
    return root


def test_terminal_shows_moving_bars_and_redirected_shows_none(root, tmp_path):
    args = ["--dataroot", str(root), "--category", "toy,other", "--experiment", str(tmp_path / "exp"), *FAST]
    stdout_tty, stderr_tty = run(args, terminal=True)
    stdout_pipe, stderr_pipe = run(args, terminal=False)
    stdout_quiet, stderr_quiet = run([*args, "--quiet"], terminal=True)
    assert stdout_tty == stdout_pipe == stdout_quiet  # headline lines unchanged by the bars
    assert re.search(r"^toy: SEG AUPROC \d\.\d{4}", stdout_tty, re.M) and "mean: SEG AUPROC" in stdout_tty
    # per phase, images counted up to the phase's size: 11 fitted, 1 validation, 7 test per category
    for category in ("toy", "other"):
        for phase, total in (("fit", 11), ("validation", 1), ("test", 7)):
            counts = {int(n) for n in re.findall(rf"{category} {phase}:.*?\| *(\d+)/{total} ", stderr_tty)}
            assert 0 in counts and total in counts, (category, phase, counts)
    overall = {int(n) for n in re.findall(r"all:.*?\| *(\d)/2 ", stderr_tty)}
    assert overall == {0, 1, 2}  # the categories bar moves once per finished category
    assert "\r" in stderr_tty and "img" in stderr_tty
    for quiet in (stderr_pipe, stderr_quiet):
        assert "img" not in quiet and "\r" not in quiet and "/2 " not in quiet
