"""Run botctl as a subprocess: with its output captured (`run`), in the background (`spawn`), or on a
pseudo-terminal (a real TTY to it): answer its prompts (`converse`), or drive a full-screen command
with keys and signals and read what it drew (`Console`).

Each starts botctl warm unless told `cold=True`: without the half second a fresh interpreter spends
importing the CLI. A server (one per test process, started on first use) imports the CLI's modules
once and forks a child per command. The child is botctl as a subprocess in every other way: its own
pid (signals and SIGKILL reach it), the given arguments, environment, working directory, umask,
stdin (`input`, a pseudo-terminal - its controlling terminal - or /dev/null), stdout and stderr,
`console.cli` run as __main__, and the interpreter's normal exit as its exit status. What a warm
child does not exercise is the interpreter's start: which modules the CLI imports and how long that
takes, Ctrl-C during those imports, and a hash seed of its own (tests that compare the runs of
separate processes for determinism start at least one of them cold). COLD_CLI=1 in the environment
starts every command cold (the whole suite then runs as it did before the server: slower, same
assertions).
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

# --------------------------------------------------------------------------- warm: a server that forks

# What a command would import, imported once by the server (never anything that starts a thread: the
# server forks). console.cli itself is run fresh in each child, as `python -m` runs it.
PRELOAD = ("typer", "console.errors", "console.commands.doctor", "console.commands.keys", "console.commands.logs",
           "console.commands.operator", "console.commands.read", "console.commands.reconcile",
           "console.commands.rollout", "console.commands.run", "console.commands.tui", "asyncio", "aiosqlite",
           "storage", "engine.audit", "engine.drills", "engine.inbox", "engine.kernel", "engine.rollout",
           "engine.venues.choose", "engine.venues.paper.world", "engine.views", "console.tui.app")
# A second server for tests of EVM chains (`evm=True`): web3 and the EVM venue take a second or two to
# import, which the other tests need not wait for.
PRELOAD_EVM = ("web3", "eth_account", "wallet.keystore", "engine.venues.evm.client", "engine.venues.evm.executor",
               "engine.venues.evm.world")
COLD = "COLD_CLI"  # set (to anything) in the environment: every command starts a fresh interpreter


def run(args, env: dict[str, str], cwd=None, timeout: float = 120, input: str | bytes | None = None,
        text: bool = True, cold: bool = False, evm: bool = False) -> subprocess.CompletedProcess:
    """`botctl ARGS` with its output captured (as text, or bytes): a CompletedProcess, or
    TimeoutExpired after `timeout` seconds (the command is killed). stdin is `input`, else /dev/null."""
    argv = [sys.executable, "-m", "console.cli", *map(str, args)]
    if cold or os.environ.get(COLD):
        return subprocess.run(argv, capture_output=True, text=text, env=env, cwd=cwd, timeout=timeout, input=input,
                              stdin=subprocess.DEVNULL if input is None else None)
    return _server(evm).run(argv, [str(a) for a in args], env, cwd, timeout, input, text)


_SERVERS: dict[bool, "_Server"] = {}
_SERVER_LOCK = threading.Lock()


def _server(evm: bool = False) -> "_Server":
    with _SERVER_LOCK:
        server = _SERVERS.get(evm)
        if server is None or server.proc.poll() is not None:
            server = _SERVERS[evm] = _Server(evm)
        return server


class _Server:
    """The test process's side: starts the server, sends it one request per command (the arguments,
    environment, directory and umask, with the command's stdin, stdout and stderr as file descriptors),
    reads the output, and the exit status the server reports once it has reaped the child."""

    def __init__(self, evm: bool):
        import atexit
        import socket
        import tempfile

        self.socket = socket
        self.dir = tempfile.mkdtemp(prefix="botctl-warm-")
        self.path = os.path.join(self.dir, "server")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
        # stdin: the server ends when this process does (EOF); stdout: one line once it is ready.
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", self.path,
                                      "evm" if evm else "paper"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        ready = self.proc.stdout.readline()
        if ready != b"ready\n":
            raise RuntimeError(f"the warm botctl server did not start (exit {self.proc.wait()})")
        atexit.register(self.close)

    def close(self) -> None:
        import shutil

        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self, args, env, cwd, stdio: list[int], terminal: bool = False):
        """Send one request: (the connection its exit status will come on, the child's pid). The
        three descriptors are the child's stdin, stdout and stderr; they are closed here once sent.
        `terminal`: they are a pseudo-terminal's, to be the child's controlling terminal."""
        import json

        socket = self.socket
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(self.path)
            umask = os.umask(0o022)
            os.umask(umask)
            request = {"args": args, "env": dict(env if env is not None else os.environ),
                       "cwd": os.path.abspath(cwd if cwd is not None else os.getcwd()), "umask": umask,
                       "terminal": terminal}
            socket.send_fds(conn, [json.dumps(request).encode()], stdio)
        except BaseException:
            conn.close()
            raise
        finally:
            for fd in stdio:
                os.close(fd)
        return conn, int(conn.recv(64).split()[1])

    def run(self, argv, args, env, cwd, timeout, input, text_mode) -> subprocess.CompletedProcess:
        import locale
        import selectors

        deadline = time.monotonic() + timeout
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        if input is None:
            in_r, in_w = os.open(os.devnull, os.O_RDONLY), None
        else:
            in_r, in_w = os.pipe()
        try:
            conn, pid = self.start(args, env, cwd, [in_r, out_w, err_w])
        except BaseException:
            for fd in (out_r, err_r, in_w):
                if fd is not None:
                    os.close(fd)
            raise
        if in_w is not None:
            data = input.encode() if isinstance(input, str) else input
            threading.Thread(target=_feed, args=(in_w, data), daemon=True).start()
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
        with selectors.DefaultSelector() as sel:
            for fd in chunks:
                sel.register(fd, selectors.EVENT_READ)
            try:
                while sel.get_map():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        _kill(pid)
                        raise subprocess.TimeoutExpired(argv, timeout)
                    for key, _ in sel.select(left):
                        data = os.read(key.fd, 65536)
                        if data:
                            chunks[key.fd].append(data)
                        else:
                            sel.unregister(key.fd)
                code = _status(conn, pid, argv, deadline - time.monotonic(), timeout)
            finally:
                conn.close()
                os.close(out_r)
                os.close(err_r)
        encoding = locale.getpreferredencoding(False)

        def text(parts: list[bytes]) -> str | bytes:  # as subprocess's text mode decodes (universal newlines)
            raw = b"".join(parts)
            return raw.decode(encoding).replace("\r\n", "\n").replace("\r", "\n") if text_mode else raw

        return subprocess.CompletedProcess(argv, code, text(chunks[out_r]), text(chunks[err_r]))


def spawn(args, env: dict[str, str], cwd=None, stdout: int = subprocess.DEVNULL, stderr: int = subprocess.DEVNULL,
          text: bool = False, cold: bool = False, evm: bool = False):
    """`botctl ARGS` started in the background (stdin /dev/null; stdout and stderr PIPE, DEVNULL or an
    open file): a Popen, or (warm) an object with the part of Popen's interface tests use."""
    argv = [sys.executable, "-m", "console.cli", *map(str, args)]
    if cold or os.environ.get(COLD):
        return subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                text=text)
    return Spawned(argv, [str(a) for a in args], env, cwd, stdout, stderr, text, evm)


class Spawned:
    """A warm child started by `spawn`. Its parent is the server, which reports its exit status."""

    def __init__(self, argv: list[str], args: list[str], env, cwd, stdout: int, stderr: int, text: bool,
                 evm: bool = False):
        import locale

        self.args = argv
        self.returncode: int | None = None
        ends, mine = [os.open(os.devnull, os.O_RDONLY)], []
        for how in (stdout, stderr):
            if how == subprocess.PIPE:
                r, w = os.pipe()
                ends.append(w)
                mine.append(r)
            elif how == subprocess.DEVNULL:
                ends.append(os.open(os.devnull, os.O_WRONLY))
                mine.append(None)
            else:  # an open file (or its descriptor): the child writes to it, as Popen's would
                ends.append(os.dup(how if isinstance(how, int) else how.fileno()))
                mine.append(None)
        encoding = locale.getpreferredencoding(False)
        self.stdout, self.stderr = (None if fd is None else
                                    open(fd, "r", encoding=encoding) if text else open(fd, "rb") for fd in mine)
        try:
            self._conn, self.pid = _server(evm).start(args, env, cwd, ends)
        except BaseException:
            for stream in (self.stdout, self.stderr):
                if stream is not None:
                    stream.close()
            raise

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = _reported(self._conn, self.pid, self.args, 0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = _reported(self._conn, self.pid, self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None):
        """(stdout, stderr) read to their end, then the exit status (as Popen's, for pipes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out: dict[str, object] = {}
        readers = [threading.Thread(target=lambda name=name, stream=stream: out.__setitem__(name, stream.read()),
                                    daemon=True)
                   for name, stream in (("stdout", self.stdout), ("stderr", self.stderr)) if stream is not None]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(None if deadline is None else max(deadline - time.monotonic(), 0))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(deadline - time.monotonic(), 0))
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        return out.get("stdout"), out.get("stderr")

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # gone, not yet reported
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _reported(conn, pid: int, argv, timeout: float | None) -> int | None:
    """A warm child's exit status as its server reports it, the connection closed once it has come:
    None when `timeout` is 0 and it has not come yet (poll); TimeoutExpired after a longer one (wait)."""
    try:
        code = _status(conn, pid, argv, timeout, timeout, kill=False)
    except subprocess.TimeoutExpired:
        if timeout == 0:
            return None
        raise
    conn.close()
    return code


def _status(conn, pid: int, argv, left: float | None, timeout: float | None, kill: bool = True) -> int:
    """The exit code the server reports for `pid` (TimeoutExpired if none comes within `left` seconds;
    `kill`: the child is killed then)."""
    import socket

    if left is None:
        conn.settimeout(None)
    elif left <= 0:
        conn.setblocking(False)
    else:
        conn.settimeout(left)
    try:
        message = conn.recv(64)
    except (BlockingIOError, socket.timeout):
        if kill:
            _kill(pid)
        raise subprocess.TimeoutExpired(argv, timeout) from None
    if not message:
        raise RuntimeError(f"the warm botctl server went away before pid {pid} ended")
    return int(message.split()[1])


def _feed(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)
    except OSError:
        pass
    finally:
        os.close(fd)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _serve(path: str, kind: str) -> dict:
    """The server: import, then fork a child per request and report its exit status. Returns only
    in a child, with the request it is to run."""
    import gc
    import importlib
    import json
    import selectors
    import socket

    for name in PRELOAD:
        importlib.import_module(name)
    for name in PRELOAD_EVM if kind == "evm" else ():
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # moved or renamed: its children import it themselves
            if exc.name != name:
                raise
    assert threading.active_count() == 1, "a preloaded module started a thread: forking would copy it"
    # What was imported here stays for every child's life: out of the collector's sight, a child's
    # exit does not walk it (a tenth of a second each), nor do its collections copy its pages.
    gc.collect()
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(128)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    waiting: dict[int, socket.socket] = {}  # child pid -> the connection that waits for its status
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "request")
    sel.register(wake_r, selectors.EVENT_READ, "exited")
    sel.register(0, selectors.EVENT_READ, "parent")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in sel.select():
            if key.data == "parent":
                if not os.read(0, 4096):  # the test process is gone
                    os._exit(0)
            elif key.data == "exited":
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    conn = waiting.pop(pid, None)
                    if conn is not None:
                        try:
                            conn.send(b"exit %d" % os.waitstatus_to_exitcode(status))
                        except OSError:  # the caller gave up (a timeout)
                            pass
                        conn.close()
            else:
                conn, _ = listener.accept()
                try:
                    message, fds, _flags, _address = socket.recv_fds(conn, 1 << 20, 3)
                except OSError:
                    conn.close()
                    continue
                if len(fds) != 3:
                    for fd in fds:
                        os.close(fd)
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:  # the child: only its own stdin, stdout and stderr stay open
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    sel.close()
                    for fd, target in zip(fds, (0, 1, 2)):
                        os.dup2(fd, target)
                    for sock in (listener, conn, *waiting.values()):
                        sock.detach()
                    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                    return json.loads(message)
                for fd in fds:
                    os.close(fd)
                try:
                    conn.send(b"pid %d" % pid)
                except OSError:
                    pass
                waiting[pid] = conn


def _as_botctl(request: dict) -> None:
    """In the child: become `python -m console.cli ARGS` (run as __main__; its exit is this process's)."""
    import runpy

    if request["terminal"]:  # a session of its own, the terminal its controlling one (as pty.fork does)
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    sys.stdout.reconfigure(line_buffering=os.isatty(1))  # as an interpreter starting on that stdout would
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = request["cwd"]  # as `python -m` puts the working directory first
    sys.argv = ["-m", *request["args"]]
    runpy.run_module("console.cli", run_name="__main__", alter_sys=True)


# --------------------------------------------------------------------------- on a pseudo-terminal


def converse(args: list[str], env: dict[str, str], answers: list[str], timeout: float = 60,
             cold: bool = False) -> tuple[int, str]:
    """Run `botctl ARGS`, answering each prompt (output ending in ':') with the next answer in turn.
    Returns (exit code, everything shown); AssertionError if it is still running after `timeout`
    seconds (it is killed)."""
    child = _on_terminal(args, env, None, None, cold)
    deadline = time.monotonic() + timeout
    shown, pending = b"", list(answers)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                child.kill()
                raise AssertionError(f"botctl {' '.join(args)} still running {timeout} s later; "
                                     f"answers left {pending}; shown: {shown.decode(errors='replace')[-1500:]!r}")
            ready, _, _ = select.select([child.fd], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(child.fd, 4096)
            except OSError:  # EIO: every process on the terminal has gone
                break
            if not chunk:
                break
            shown += chunk
            if pending and shown.rstrip(b" ").endswith(b":"):
                os.write(child.fd, pending.pop(0).encode() + b"\r")
        return child.wait(max(deadline - time.monotonic(), 1)), shown.decode(errors="replace")
    finally:
        child.close()


class _Terminal:
    """botctl on a new pseudo-terminal (its master is `fd`): forked by pty.fork (cold) or by the
    server (warm); poll, wait and kill as for any child."""

    def __init__(self, args: list[str], env: dict[str, str], size: tuple[int, int] | None, cwd: str | None,
                 cold: bool):
        self.args = args
        self.code: int | None = None
        self._conn = None
        if cold or os.environ.get(COLD):
            import pty

            self.pid, self.fd = pty.fork()
            if self.pid == 0:  # the child: its window size set before botctl starts and asks for it
                try:
                    if size is not None:
                        _set_size(0, size)
                    if cwd is not None:
                        os.chdir(cwd)
                    os.execve(sys.executable, [sys.executable, "-m", "console.cli", *args], env)
                finally:
                    os._exit(127)
            return
        self.fd, slave = os.openpty()
        try:
            if size is not None:
                _set_size(slave, size)
            self._conn, self.pid = _server().start(list(args), env, cwd, [slave, os.dup(slave), os.dup(slave)],
                                                   terminal=True)
        except BaseException:
            os.close(self.fd)
            raise

    def poll(self) -> int | None:
        if self.code is None:
            if self._conn is None:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.code = os.waitstatus_to_exitcode(status)
            else:
                self.code = _reported(self._conn, self.pid, self.args, 0.0)
        return self.code

    def wait(self, timeout: float | None = None) -> int:
        """The exit code (subprocess.TimeoutExpired after `timeout` seconds; None: no limit)."""
        if self.code is None:
            if self._conn is None:
                deadline = None if timeout is None else time.monotonic() + timeout
                while self.poll() is None:
                    if deadline is not None and time.monotonic() > deadline:
                        raise subprocess.TimeoutExpired(self.args, timeout)
                    time.sleep(0.02)
            else:
                self.code = _reported(self._conn, self.pid, self.args, timeout)
        return self.code

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()

    def close(self) -> None:
        """Kill it if it still runs, reap it, close the master."""
        self.kill()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _on_terminal(args, env, size, cwd, cold) -> _Terminal:
    return _Terminal(list(args), env, size, cwd, cold)


def _set_size(fd: int, size: tuple[int, int]) -> None:
    columns, rows = size
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


# Escape sequences a full-screen app writes: CSI (cursor, colours, modes), OSC (titles, links), and the
# short ESC forms (charset, keypad, save/restore). Stripped, what is left is the text it drew.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>NOPM78c]")


class Console:
    """`botctl ARGS` on a pseudo-terminal of `size` (columns, rows), for full-screen commands.

    A thread drains the terminal all the time (a full-screen app blocks once the terminal's buffer is
    full); `expect` searches what was drawn, escape sequences stripped. `mark()` then
    `expect(..., after=mark)` only looks at what was drawn since. Use as a context manager: a child
    still running at the end is killed (SIGKILL, by its pid) and reaped, so no test leaves one behind.
    Warm by default (see `run`); `cold=True` forks and executes a fresh interpreter."""

    def __init__(self, args: list[str], env: dict[str, str], size: tuple[int, int] = (130, 40),
                 cwd: str | None = None, cold: bool = False):
        env = {**env, "TERM": env.get("TERM", "xterm-256color")}
        self.args = args
        self.started = time.monotonic()
        self._child = _on_terminal(args, env, size, cwd, cold)
        self.pid, self.fd = self._child.pid, self._child.fd
        self._chunks: list[bytes] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    @property
    def code(self) -> int | None:
        return self._child.code

    def _drain(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: every process on the terminal has gone
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def raw(self) -> str:
        return b"".join(list(self._chunks)).decode(errors="replace")

    def text(self) -> str:
        """Everything drawn so far, escape sequences stripped."""
        return _ESCAPES.sub("", self.raw())

    def mark(self) -> int:
        return len(self.text())

    def expect(self, pattern: str, timeout: float = 10, after: int = 0) -> re.Match:
        """Wait until `pattern` (a regular expression) was drawn after position `after`."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text()[after:])
            if found:
                return found
            if time.monotonic() > deadline or (self.poll() is not None and not self._reader.is_alive()):
                raise AssertionError(f"{pattern!r} not drawn within {timeout} s (exit {self.code}); "
                                     f"last drawn: {self.text()[-1500:]!r}")
            time.sleep(0.05)

    def press(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def hang_up(self) -> None:
        """Close the terminal, as when its window is closed: the kernel sends SIGHUP to botctl."""
        self._stop.set()
        self._reader.join()
        os.close(self.fd)
        self.fd = self._child.fd = -1

    def poll(self) -> int | None:
        return self._child.poll()

    def wait(self, timeout: float = 10) -> int:
        """The exit code; AssertionError if botctl is still running after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"botctl {' '.join(self.args)} still running {timeout} s later; "
                                     f"last drawn: {self.text()[-1500:]!r}")
            time.sleep(0.05)
        return self.code

    def close(self) -> None:
        self._child.kill()
        self._stop.set()
        self._reader.join()
        self._child.close()
        self.fd = -1

    def __enter__(self) -> "Console":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    _as_botctl(_serve(sys.argv[2], sys.argv[3]))
