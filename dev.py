"""The task runner: `python3 dev.py TASK` (serve, test, lint, ci, generate, bench)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
PYTHON = BIN / "python"
# Everything installed is pinned: direct dependencies in pyproject.toml, the rest here.
INPUTS = ("pyproject.toml", "constraints.txt")
NODE_CLIENT = ROOT / "clients" / "node"


def run(*cmd: str | Path, cwd: Path = ROOT) -> None:
    """Run a command, echoing it; stop the task with its exit code if it fails."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    code = subprocess.call([str(c) for c in cmd], cwd=cwd)
    if code != 0:
        sys.exit(code)


def setup(extra: str) -> None:
    """Create .venv and install Journey with `extra` ("otel" or "dev"), unless already current.

    "dev" includes "otel", so the tests and the benchmark can switch tracing on.
    """
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


def npm_ci(folder: Path) -> None:
    """Install a package.json's pinned packages (npm ci), unless its lock file is unchanged."""
    lock = (folder / "package-lock.json").read_bytes()
    stamp = folder / "node_modules" / ".installed"
    if stamp.exists() and stamp.read_bytes() == hashlib.sha256(lock).hexdigest().encode():
        return
    run("npm", "ci", "--no-audit", "--no-fund", cwd=folder)
    stamp.write_text(hashlib.sha256(lock).hexdigest())


def node_tools() -> None:
    """Install buf (pinned in package.json) for the contract checks and code generation."""
    if shutil.which("npm") is None:
        sys.exit("the contract tools need Node.js and npm (buf is pinned in package.json)")
    npm_ci(ROOT)


def buf(*args: str) -> None:
    """Run the buf version pinned in package.json."""
    node_tools()
    run(ROOT / "node_modules" / ".bin" / "buf", *args)


def first_contract_commit() -> str:
    """The first commit that has protos/: the v1 contract that must not break."""
    out = subprocess.run(
        ["git", "rev-list", "--reverse", "HEAD", "--", "protos"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if not out:
        sys.exit("buf breaking needs the git history (a full clone)")
    return out[0]


def buf_breaking() -> None:
    """Check with buf breaking against the contract as it stood in its first commit."""
    commit = first_contract_commit()
    archive = subprocess.run(
        ["git", "archive", commit, "buf.yaml", "protos"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tempfile.TemporaryDirectory() as old:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(old, filter="data")
        print(f"(against the contract at {commit[:12]})", flush=True)
        buf("breaking", "--against", old)


def node_client() -> None:
    """The Node.js client's packages, for its tests; CI must have Node.js."""
    if shutil.which("npm") is None:
        if os.environ.get("CI"):
            sys.exit("CI runs the Node.js client's tests: install Node.js 20 and npm")
        print("note: no Node.js here, so the Node.js client's test is skipped", flush=True)
        return
    npm_ci(NODE_CLIENT)


def prometheus_tools() -> None:
    """Prometheus and promtool for the tests of the alerts and dashboard; CI must have them."""
    missing = [tool for tool in ("prometheus", "promtool") if shutil.which(tool) is None]
    if not missing:
        return
    if os.environ.get("CI"):
        sys.exit(f"CI runs the Prometheus tests: install Debian's prometheus package ({missing})")
    print(f"note: no {' or '.join(missing)} here, so the Prometheus tests are skipped", flush=True)


def serve(args: list[str]) -> None:
    """Run the server on the embedded SQLite default (or the given --config)."""
    # With the tracing extra, so that `tracing = true` works here as configured.
    setup("otel")
    os.execv(BIN / "journey", [str(BIN / "journey"), "serve", *args])


def test(args: list[str]) -> None:
    """Run the whole test suite, then `bench --quick`; with pytest arguments, only pytest."""
    setup("dev")
    node_client()
    prometheus_tools()
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
    """ruff, mypy, generated-code drift, and buf lint, format and breaking."""
    setup("dev")
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")
    run(BIN / "mypy")
    node_tools()
    run(PYTHON, "scripts/generate_protos.py", "--check")
    buf("lint")
    buf("format", "-d", "--exit-code")
    buf_breaking()


def generate(_: list[str]) -> None:
    """Regenerate the protobuf and gRPC code from protos/ (as buf.gen.yaml says)."""
    setup("dev")
    node_tools()
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
