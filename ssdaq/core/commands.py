"""The command channel: a zmq ROUTER on an IPC socket in the runtime directory, JSON replies.

Request: one frame of text, ``command arg1 arg2 …``. Reply: one frame of JSON,
``{"ok": true, "result": …}`` or ``{"ok": false, "error": "…"}``. Each request is answered in its
own task, so a slow command delays only its own reply, never the data path or other clients.
Every failure becomes an error reply; nothing escapes into the event loop.
"""

import asyncio
import functools
import grp
import inspect
import json
import logging
import math
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, cast

import zmq
import zmq.asyncio

from ssdaq.core.errors import CommandError, UnavailableError

SYSTEM_RUNTIME_DIR = "/run/ssdaq"
#: group whose members may send commands (the package creates it; systemd's units run as it)
GROUP = "ssdaq"


def runtime_directory(system: str = SYSTEM_RUNTIME_DIR) -> str:
    """The directory of the command sockets; receivers and ssdaqctl both find it by this rule.

    ``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=``), else ``system`` where it exists (the
    installed package's, shared by every user of group ssdaq), else ``$XDG_RUNTIME_DIR/ssdaq``
    (a login session's own), else ``system``, which only root may create
    (:func:`make_runtime_directory` says what to do otherwise).
    """
    if runtime := os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]:
        return runtime
    if os.path.isdir(system):
        return system
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(xdg, "ssdaq")
    return system


def make_runtime_directory(path: str, system: str = SYSTEM_RUNTIME_DIR) -> None:
    """Create :func:`runtime_directory` for a receiver started by hand (systemd creates its own).

    ``system`` is made by root only, ``drwxr-s---`` with group ssdaq where that group exists
    (setgid, so that the sockets made in it belong to the group too, as under systemd); the per-user
    directory under ``$XDG_RUNTIME_DIR`` is private to its user.
    """
    if os.path.isdir(path):
        return
    if path == system and os.geteuid() != 0:
        raise UnavailableError(
            f"no directory for the command socket: {system} does not exist and only root may "
            "create it; install the package (its units create it), run from a login session "
            "(which sets XDG_RUNTIME_DIR), or set RUNTIME_DIRECTORY or [control] socket")
    try:
        os.mkdir(path, 0o700)
        if path == system:
            try:
                os.chown(path, -1, grp.getgrnam(GROUP).gr_gid)
            except KeyError:
                pass  # no group ssdaq on this machine: root only
            os.chmod(path, 0o2750)
    except FileExistsError:
        pass  # another receiver made it meanwhile
    except OSError as e:
        raise UnavailableError(f"cannot create the command socket directory {path}: {e.strerror}") from None


def socket_path(name: str, configured: str = "") -> str:
    """Where receiver ``name`` listens for commands: ``configured``, else in :func:`runtime_directory`."""
    return configured or os.path.join(runtime_directory(), f"{name}.ctl")


def reply_ok(result: Any) -> bytes:
    return json.dumps({"ok": True, "result": result}, default=_jsonable).encode()


def reply_error(error: str) -> bytes:
    return json.dumps({"ok": False, "error": error}).encode()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    return str(obj)


#: a command name and its arguments -> the result, or an awaitable of it (a coroutine command)
Dispatch = Callable[[str, list[str]], Any]


def table(*handlers: object) -> dict[str, Callable[..., Any]]:
    """The ``cmd_*`` methods of ``handlers``, by name without the prefix; a later one's wins."""
    return {n[4:]: getattr(h, n) for h in handlers for n in dir(h) if n.startswith("cmd_")}


def describe(commands: dict[str, Callable[..., Any]]) -> dict[str, str]:
    """Each command with the first line of its docstring (the ``help`` reply)."""
    return {name: (inspect.getdoc(f) or "").partition("\n")[0] for name, f in sorted(commands.items())}


@functools.lru_cache(maxsize=256)
def _arity(func: Callable[..., Any]) -> tuple[float, float]:
    """How many words ``func`` takes, at least and at most; worked out once: ``status`` is asked
    every second, and ``Signature.bind`` is dozens of Python calls, each slow out of the caches."""
    params = inspect.signature(func).parameters.values()
    if any(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params):
        return math.inf, math.inf  # words cannot fill it: never callable from a command line
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    least = sum(p.default is p.empty for p in positional)
    return least, math.inf if any(p.kind is p.VAR_POSITIONAL for p in params) else len(positional)


def dispatch(commands: dict[str, Callable[..., Any]], command: str, args: list[str]) -> Any:
    """Call ``commands[command](*args)``: its result, or the awaitable a coroutine command
    returns; refusals raise ``CommandError``."""
    func = commands.get(command)
    if func is None:
        raise CommandError(f"unknown command {command!r}; `help` lists the commands")
    least, most = _arity(func)
    if not least <= len(args) <= most:
        params = " ".join(f"<{p}>" for p in inspect.signature(func).parameters)
        raise CommandError(f"usage: {command} {params}".rstrip()) from None
    return func(*args)


class CommandServer:
    """Serves one IPC socket (mode 0660: the ssdaq group may send commands, nobody else).

    A plain zmq socket read when its file descriptor wakes the loop, not a ``zmq.asyncio`` one,
    and a command that is not a coroutine answered right there: ``status`` is asked once a
    second for as long as the receiver runs (the metrics service), and a task per request, or
    the asyncio wrapper's bookkeeping, cost more than the answer itself. A coroutine command
    (``reload``) is answered by a task of its own, so that it delays only its own reply."""

    def __init__(self, path: str, context: zmq.asyncio.Context, dispatch: Dispatch,
                 log: logging.Logger) -> None:
        self.path, self.dispatch, self.log = path, dispatch, log
        self.handled = self.failed = 0
        # a plain view of the same context: its sockets share the receiver's I/O thread
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(context.underlying)
        self._sock: zmq.Socket[bytes] = self._context.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._pending: set[asyncio.Task[None]] = set()
        try:
            self._sock.bind(f"ipc://{path}")
        except zmq.ZMQError as e:
            self._sock.close()
            raise UnavailableError(f"cannot bind command socket {path}: {e}") from None
        os.chmod(path, 0o660)
        self.log.info("commands on ipc://%s", path)

    @classmethod
    def for_receiver(cls, name: str, configured: str, context: zmq.asyncio.Context,
                     dispatch: Dispatch, log: logging.Logger) -> "CommandServer":
        """Serve receiver ``name``'s socket (:func:`socket_path`), making its directory if needed."""
        path = socket_path(name, configured)
        if not configured:
            make_runtime_directory(os.path.dirname(path))
        return cls(path, context, dispatch, log)

    async def serve(self) -> None:
        """Answer requests until cancelled (the receiver stopping)."""
        loop = asyncio.get_running_loop()
        fd: int = self._sock.FD
        loop.add_reader(fd, self._take_requests)
        try:
            self._take_requests()  # what was queued before the reader was added
            await loop.create_future()
        finally:
            loop.remove_reader(fd)

    def _take_requests(self) -> None:
        """Answer every request queued: zmq's descriptor signals edges, so all of them now."""
        while cast(int, self._sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # .EVENTS: a Python lookup
            *envelope, body = self._sock.recv_multipart(zmq.NOBLOCK)
            words = body.decode(errors="replace").split()
            if not words:
                self._reply(envelope, reply_error("empty request; send `command arg…` as text"))
                continue
            try:
                result = self.dispatch(words[0], words[1:])
            except Exception as e:
                self._reply(envelope, self._failure(words, e))
                continue
            if not inspect.isawaitable(result):
                self._reply(envelope, self._success(result))
                continue
            task = asyncio.get_running_loop().create_task(self._answer_later(envelope, words, result))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _answer_later(self, envelope: list[bytes], words: list[str],
                            result: Awaitable[Any]) -> None:
        try:
            reply = self._success(await result)
        except Exception as e:
            reply = self._failure(words, e)
        self._reply(envelope, reply)
        self._take_requests()  # sending may have taken the edge of a request that came meanwhile

    def _success(self, result: Any) -> bytes:
        self.handled += 1
        return reply_ok(result)

    def _failure(self, words: list[str], e: Exception) -> bytes:
        self.failed += 1
        if isinstance(e, CommandError):
            return reply_error(str(e))
        self.log.exception("command %r failed", " ".join(words), exc_info=e)
        return reply_error(f"internal error in {words[0]!r}: {e}")

    def _reply(self, envelope: list[bytes], reply: bytes) -> None:
        try:
            self._sock.send_multipart([*envelope, reply], zmq.NOBLOCK)  # a ROUTER never blocks
        except zmq.ZMQError as e:
            self.log.warning("could not reply to a command: %s", e)

    def close(self) -> None:
        """Close and remove the socket file (it is ours, not systemd's)."""
        for task in self._pending:
            task.cancel()
        self._sock.close(linger=0)
        try:
            os.unlink(self.path)
        except OSError:
            pass


class NoAnswer(Exception):
    """Nothing answered on the command socket within the timeout (the message names the path)."""


def request(path: str, line: str, timeout_s: float = 2.0) -> dict[str, Any]:
    """Send one command line to the socket at ``path`` and return the decoded JSON reply."""
    _check_path(path)
    sock = _connect(path)
    try:
        return _ask(sock, path, line, timeout_s)
    finally:
        sock.close(linger=0)


class Connections:
    """Kept connections to command sockets, one per path, for a client that asks every second.

    The metrics service polls each receiver's ``status`` once a second for as long as it runs;
    on a new connection per request the receiver's I/O thread accepts, greets and tears down
    each one, a third of what answering costs it. A connection whose request timed out is closed
    (a REQ socket waits for that reply forever) and made again at the next request; one whose
    socket file is gone is closed by :meth:`prune` (zmq would keep trying to reconnect).
    Callable from any thread: a connection in use is taken out of the pool meanwhile.
    """

    def __init__(self) -> None:
        self._kept: dict[str, zmq.Socket[bytes]] = {}
        self._lock = threading.Lock()

    def request(self, path: str, line: str, timeout_s: float = 2.0) -> dict[str, Any]:
        """:func:`request` on the kept connection to ``path``."""
        _check_path(path)
        with self._lock:
            sock = self._kept.pop(path, None)
        sock = sock or _connect(path)
        try:
            reply = _ask(sock, path, line, timeout_s)
        except BaseException:
            sock.close(linger=0)
            raise
        with self._lock:
            other = self._kept.pop(path, None)  # made by a concurrent request meanwhile
            self._kept[path] = sock
        if other is not None:
            other.close(linger=0)
        return reply

    def __len__(self) -> int:
        """How many connections are kept."""
        return len(self._kept)

    def prune(self) -> None:
        """Close the connections to socket files that no longer exist (receivers stopped)."""
        with self._lock:
            gone = [p for p in self._kept if not os.path.exists(p)]
            for path in gone:
                self._kept.pop(path).close(linger=0)

    def close(self) -> None:
        with self._lock:
            for sock in self._kept.values():
                sock.close(linger=0)
            self._kept.clear()


def _check_path(path: str) -> None:
    """Why ``path`` cannot be asked, as :class:`NoAnswer`, before a connection waits in vain."""
    directory = os.path.dirname(path) or "."
    if os.path.isdir(directory) and not os.access(directory, os.X_OK):
        raise NoAnswer(f"permission denied on {directory} (members of group ssdaq may send commands)")
    if not os.path.exists(path):
        raise NoAnswer(f"no command socket at {path} (is the receiver running?)")
    if not os.access(path, os.W_OK):
        raise NoAnswer(f"permission denied on {path} (members of group ssdaq may send commands)")


def _connect(path: str) -> "zmq.Socket[bytes]":
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{path}")
    return sock


def _ask(sock: "zmq.Socket[bytes]", path: str, line: str, timeout_s: float) -> dict[str, Any]:
    sock.send_string(line)
    if not sock.poll(int(timeout_s * 1000)):
        raise NoAnswer(f"no answer from {path} within {timeout_s:g} s")
    reply: dict[str, Any] = json.loads(sock.recv())
    return reply
