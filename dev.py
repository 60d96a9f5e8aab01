"""The task runner: `python3 dev.py TASK` (serve, test, lint, ci, generate, bench)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
PYTHON = BIN / "python"
# Everything installed is pinned: direct dependencies in pyproject.toml, the rest here.
INPUTS = ("pyproject.toml", "constraints.txt")


def run(*cmd: str | Path, cwd: Path = ROOT) -> None:
    """Run a command, echoing it; stop the task with its exit code if it fails."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=cwd)
    if code != 0:
        sys.exit(code)


def setup(extra: str) -> None:
    """Create .venv and install Journey with `extra` ("" or "dev"), unless already current."""
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"Journey needs Python 3.11; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        venv.create(VENV, with_pip=True)
    digest = hashlib.sha256(b"".join((ROOT / name).read_bytes() for name in INPUTS)).hexdigest()
    stamp = VENV / f".installed-{extra or 'base'}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    target = f".[{extra}]" if extra else "."
    run(PYTHON, "-m", "pip", "install", "--quiet", "-c", "constraints.txt", "-e", target)
    stamp.write_text(digest)


def buf(*args: str) -> None:
    """Run the buf version pinned in package.json."""
    if shutil.which("npm") is None:
        sys.exit("buf checks need Node.js and npm (buf is pinned in package.json)")
    if not (ROOT / "node_modules" / ".bin" / "buf").exists():
        run("npm", "ci", "--no-audit", "--no-fund")
    run(ROOT / "node_modules" / ".bin" / "buf", *args)


def serve(args: list[str]) -> None:
    """Run the server on the embedded SQLite default (or the given --config)."""
    setup("")
    os.execv(BIN / "journey", [str(BIN / "journey"), "serve", *args])


def test(args: list[str]) -> None:
    """Run the whole test suite, then `bench --quick`; with pytest arguments, only pytest."""
    setup("dev")
    run(PYTHON, "-m", "pytest", *args)
    if not args:
        # Keeps the benchmark working: it fails only if a scenario errors, loses or repeats
        # events, never because of a figure.
        bench(["--quick"])


def bench(args: list[str]) -> None:
    """Benchmark Journey beside a storage-free gRPC baseline (--quick, --json PATH, --only 1,3)."""
    setup("dev")
    run(PYTHON, "-m", "bench", *args)


def lint(_: list[str]) -> None:
    """ruff, mypy, generated-code drift, and buf lint and format."""
    setup("dev")
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")
    run(BIN / "mypy")
    run(PYTHON, "scripts/generate_protos.py", "--check")
    buf("lint")
    buf("format", "-d", "--exit-code")


def generate(_: list[str]) -> None:
    """Regenerate the protobuf and gRPC code from protos/."""
    setup("dev")
    run(PYTHON, "scripts/generate_protos.py")


def ci(args: list[str]) -> None:
    """Everything CI checks: lint, then the test suite and the quick benchmark."""
    lint([])
    test(args)


TASKS = {
    "serve": serve,
    "test": test,
    "lint": lint,
    "generate": generate,
    "ci": ci,
    "bench": bench,
}


def main() -> None:
    """Dispatch to a task."""
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        tasks = "\n".join(f"  {name:<9} {task.__doc__}" for name, task in TASKS.items())
        sys.exit(f"usage: python3 dev.py TASK [ARGS...]\n\n{tasks}")
    TASKS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
