"""Every code block of the README and the docs works as written.

- `python` blocks run, each on its own, top to bottom, in a process of its own that starts with an
  empty namespace (a block never relies on an earlier one), with MNIST found through
  `$QUASIGRAD_MNIST`.
- `bash`, `sh` and `console` blocks (in `console`, the lines after `$ `) pass `bash -n`; each
  command in them runs, except the kinds listed in `NOT_RUN` with the reason. Of those, a
  benchmark's arguments are parsed by that benchmark's own parser, `quasigrad check`'s by its
  parser, a script's options are looked up in its `--help`, and a test file must exist.
- `text` blocks (output, tables) are not run. A block without a language, or with another one,
  fails: say what it is.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("QUASIGRAD_TEST_MNIST", ROOT.parent / "shared" / "data" / "mnist"))
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON, SHELL, TEXT = {"python", "py"}, {"bash", "sh", "shell", "console"}, {"text", "output"}
TIMEOUT_S = 600   # a guard against a hang, not a speed requirement: every block is meant to take seconds

# Commands that are not run, and why. Each still gets the check named in the module docstring.
NOT_RUN = {
    "pip": "installs packages",
    "pytest": "runs this test suite",
    "bench": "runs a benchmark (minutes to days); its arguments are parsed by its own parser",
    "script": "runs a benchmark script (minutes); its options are checked against its --help",
    "check": "prints the bias of every estimator (about 15 s of CPU); tests/test_exact.py runs it at a small size",
    "mkdocs": "builds or serves this site; tests/test_docs_site.py builds it",
    "lint": "ruff and mypy, which the test command runs before this suite",
}


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"


def _blocks(page: Path) -> List[Block]:
    out, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.groups()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        out.append(Block(page, start, lang.lower(), "\n".join(body) + "\n"))
        i += 1
    return out


BLOCKS = [b for page in PAGES for b in _blocks(page)]
PY_BLOCKS = [b for b in BLOCKS if b.lang in PYTHON]
SH_BLOCKS = [b for b in BLOCKS if b.lang in SHELL]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg", QUASIGRAD_MNIST=str(MNIST_DIR),
               OMP_NUM_THREADS="1", NO_MKDOCS_2_WARNING="1")
    env.pop("QUASIGRAD_BENCH_STOP_AFTER", None)
    return env


def test_pages_have_code_blocks():
    assert len(PY_BLOCKS) >= 10 and len(SH_BLOCKS) >= 5, (len(PY_BLOCKS), len(SH_BLOCKS))


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_block_says_its_language(block):
    assert block.lang in PYTHON | SHELL | TEXT, (
        f"{block.id}: a code block needs a language: python (run), bash/console (commands), or text (output); "
        f"got {block.lang or 'none'!r}")


# Each Python block runs in its own process, forked from a server that has imported torch and
# quasigrad once (the block starts with an empty namespace, so it still needs its own imports);
# this saves the import time of a fresh interpreter per block. Without os.fork, a fresh interpreter.
_SERVER = r"""
import json, os, runpy, sys, time, traceback
import torch, quasigrad
print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(req["cwd"])
            fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.argv = [req["script"]]
            runpy.run_path(req["script"], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline, status = time.monotonic() + req["timeout"], None
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(raw)
        elif time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status = "timeout"
        else:
            time.sleep(0.02)
    print(json.dumps({"status": status}), flush=True)
"""


@pytest.fixture(scope="module")
def block_runner():
    if not hasattr(os, "fork"):
        def run(script: Path, cwd: Path) -> Tuple[object, str]:
            proc = subprocess.run([sys.executable, str(script)], cwd=cwd, env=_env(), capture_output=True, text=True,
                                  timeout=TIMEOUT_S)
            return proc.returncode, proc.stdout + proc.stderr
        yield run
        return
    server = subprocess.Popen([sys.executable, "-c", _SERVER], cwd=ROOT, env=_env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdin is not None
    assert server.stdout.readline().strip() == "ready", "the snippet server did not start"

    def run(script: Path, cwd: Path) -> Tuple[object, str]:
        log = cwd / "output.txt"
        server.stdin.write(json.dumps({"script": str(script), "cwd": str(cwd), "log": str(log),
                                       "timeout": TIMEOUT_S}) + "\n")
        server.stdin.flush()
        status = json.loads(server.stdout.readline())["status"]
        return status, log.read_text() if log.exists() else ""

    yield run
    server.stdin.close()
    server.wait(timeout=60)


@pytest.mark.parametrize("block", PY_BLOCKS, ids=lambda b: b.id)
def test_python_block_runs(block, tmp_path, block_runner):
    if "load_mnist" in block.code and not MNIST_DIR.is_dir():
        pytest.skip(f"MNIST files not found at {MNIST_DIR}; set QUASIGRAD_TEST_MNIST to their directory")
    script = tmp_path / "snippet.py"
    script.write_text(block.code)
    status, output = block_runner(script, tmp_path)
    assert status == 0, f"{block.id} failed ({status}):\n{block.code}\n--- output ---\n{output[-4000:]}"


# --------------------------------------------------------------------------- shell blocks

def _commands(block: Block) -> List[List[str]]:
    """The block's commands as argument lists (continuations joined, comments dropped, `&&` and
    `;` split); in a console block only the lines after a `$ ` prompt."""
    text = block.code.replace("\\\n", " ")
    lines = text.splitlines()
    if block.lang == "console":
        lines = [line[2:] for line in lines if line.startswith("$ ")]
    out = []
    for line in lines:
        cmd: List[str] = []
        for token in shlex.split(line, comments=True):
            if token in ("&&", ";", "||"):
                out.append(cmd)
                cmd = []
            else:
                cmd.append(token)
        out.append(cmd)
    return [c for c in out if c]


def _kind(argv: List[str]) -> Tuple[str, List[str]]:
    """What a command is (a key of NOT_RUN, or "run") and the arguments that matter for it."""
    prog, rest = argv[0], argv[1:]
    if prog == "torchrun":                                              # torchrun [opts] -m module args
        i = rest.index("-m")
        return _kind(["python", "-m", *rest[i + 1:]])
    if prog in ("python", "python3"):
        if rest[:2] == ["-m", "pip"]:
            return "pip", rest[2:]
        if rest[:2] == ["-m", "pytest"]:
            return "pytest", rest[2:]
        if rest[:2] == ["-m", "quasigrad"]:
            return _kind(["quasigrad", *rest[2:]])
        if rest[:1] == ["-m"] and rest[1].startswith("quasigrad.bench."):
            from quasigrad.bench import BENCHMARKS
            names = [n for n, module in BENCHMARKS.items() if module == rest[1]]
            assert names, f"{rest[1]} is not a benchmark module"
            return "bench", [names[0], *rest[2:]]
        if rest and rest[0].endswith(".py"):
            return "script", rest
        return "run", argv
    if prog == "pip":
        return "pip", rest
    if prog == "mkdocs":
        return "mkdocs", rest
    if prog in ("ruff", "mypy"):
        return "lint", rest
    if prog == "quasigrad" and rest[:1] == ["bench"]:
        return "bench", rest[1:]
    if prog == "quasigrad" and rest[:1] == ["check"]:
        return "check", rest[1:]
    return "run", argv


def _check_not_run(kind: str, args: List[str], where: str) -> None:
    import argparse

    from quasigrad.bench import runner

    if kind == "bench" and args in (["--help"], ["-h"], []):
        return
    if kind == "bench":
        from quasigrad.bench import BENCHMARKS
        assert args and args[0] in BENCHMARKS, f"{where}: unknown benchmark {args[:1]}; known: {sorted(BENCHMARKS)}"
        try:
            runner.parser(args[0]).parse_args(args[1:])
        except SystemExit:
            pytest.fail(f"{where}: `quasigrad bench {' '.join(args)}` does not parse (see the error above)")
    elif kind == "check":
        from quasigrad.lab import check
        parser = argparse.ArgumentParser(prog="quasigrad check")
        check.add_arguments(parser)
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{where}: `quasigrad check {' '.join(args)}` does not parse")
    elif kind == "script":
        script = ROOT / args[0]
        assert script.is_file(), f"{where}: {args[0]} does not exist"
        proc = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, env=_env(), capture_output=True,
                              text=True, timeout=TIMEOUT_S)
        assert proc.returncode == 0, f"{where}: {args[0]} --help failed:\n{proc.stderr[-2000:]}"
        for option in (a.split("=")[0] for a in args[1:] if a.startswith("--")):
            assert re.search(rf"(^|[\s,\[]){re.escape(option)}\b", proc.stdout, re.M), \
                f"{where}: {args[0]} has no option {option}"
    elif kind == "pytest":
        for path in (a.split("::")[0] for a in args if a.startswith("tests")):
            assert (ROOT / path).exists(), f"{where}: {path} does not exist"


@pytest.mark.parametrize("block", SH_BLOCKS, ids=lambda b: b.id)
def test_shell_block(block, tmp_path):
    if block.lang != "console":
        proc = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
        assert proc.returncode == 0, f"{block.id}: not valid bash:\n{proc.stderr}"
    commands = _commands(block)
    assert commands, f"{block.id}: a shell block without a command"
    for argv in commands:
        env = _env()
        while re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):                # VAR=value prefixes
            name, _, value = argv[0].partition("=")
            env[name] = str(ROOT) if value == "." else value
            argv = argv[1:]
        kind, args = _kind(argv)
        if kind in NOT_RUN:
            _check_not_run(kind, args, block.id)
            continue
        if argv[0] == "quasigrad":
            argv = [sys.executable, "-m", "quasigrad", *argv[1:]]
        elif argv[0] in ("python", "python3"):
            argv = [sys.executable, *argv[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        assert proc.returncode == 0, f"{block.id}: `{shlex.join(argv)}` failed:\n{proc.stdout}{proc.stderr[-4000:]}"
