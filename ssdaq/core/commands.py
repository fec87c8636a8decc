"""The command channel: a zmq ROUTER on an IPC socket under /run/ssdaq, JSON replies.

Request: one frame of text, ``command arg1 arg2 …``. Reply: one frame of JSON,
``{"ok": true, "result": …}`` or ``{"ok": false, "error": "…"}``. Each request is answered in its
own task, so a slow command delays only its own reply, never the data path or other clients.
Every failure becomes an error reply; nothing escapes into the event loop.
"""

import asyncio
import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio

from ssdaq.core.errors import CommandError, UnavailableError

DEFAULT_RUNTIME_DIR = "/run/ssdaq"


def socket_path(name: str, configured: str = "") -> str:
    """Where receiver ``name`` listens for commands; the receiver and ssdaqctl share this rule."""
    if configured:
        return configured
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return os.path.join(runtime or DEFAULT_RUNTIME_DIR, f"{name}.ctl")


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


Dispatch = Callable[[str, list[str]], Awaitable[Any]]


def table(receiver: object) -> dict[str, Callable[..., Any]]:
    """The receiver's commands: its ``cmd_*`` methods, by name without the prefix."""
    return {n[4:]: getattr(receiver, n) for n in dir(receiver) if n.startswith("cmd_")}


def describe(commands: dict[str, Callable[..., Any]]) -> dict[str, str]:
    """Each command with the first line of its docstring (the ``help`` reply)."""
    return {name: (inspect.getdoc(f) or "").partition("\n")[0] for name, f in sorted(commands.items())}


async def dispatch(commands: dict[str, Callable[..., Any]], command: str, args: list[str]) -> Any:
    """Call ``commands[command](*args)`` (awaiting a coroutine); refusals raise ``CommandError``."""
    func = commands.get(command)
    if func is None:
        raise CommandError(f"unknown command {command!r}; `help` lists the commands")
    try:
        inspect.signature(func).bind(*args)
    except TypeError:
        params = " ".join(f"<{p}>" for p in inspect.signature(func).parameters)
        raise CommandError(f"usage: {command} {params}".rstrip()) from None
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class CommandServer:
    """Serves one IPC socket (mode 0660: the ssdaq group may send commands, nobody else)."""

    def __init__(self, path: str, context: zmq.asyncio.Context, dispatch: Dispatch,
                 log: logging.Logger) -> None:
        self.path, self.dispatch, self.log = path, dispatch, log
        self.handled = self.failed = 0
        self._sock = context.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._pending: set[asyncio.Task] = set()
        try:
            self._sock.bind(f"ipc://{path}")
        except zmq.ZMQError as e:
            self._sock.close()
            raise UnavailableError(f"cannot bind command socket {path}: {e}") from None
        os.chmod(path, 0o660)
        self.log.info("commands on ipc://%s", path)

    async def serve(self) -> None:
        """Receive requests forever; each one is answered by its own task."""
        while True:
            frames = await self._sock.recv_multipart()
            task = asyncio.get_running_loop().create_task(self._answer(frames))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _answer(self, frames: list[bytes]) -> None:
        *envelope, body = frames
        try:
            words = body.decode().split()
        except UnicodeDecodeError:
            words = []
        if not words:
            reply = reply_error("empty or undecodable request; send `command arg…` as text")
        else:
            try:
                reply = reply_ok(await self.dispatch(words[0], words[1:]))
                self.handled += 1
            except CommandError as e:
                self.failed += 1
                reply = reply_error(str(e))
            except Exception as e:
                self.failed += 1
                self.log.exception("command %r failed", " ".join(words))
                reply = reply_error(f"internal error in {words[0]!r}: {e}")
        try:
            await self._sock.send_multipart([*envelope, reply])
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
    directory = os.path.dirname(path) or "."
    if os.path.isdir(directory) and not os.access(directory, os.X_OK):
        raise NoAnswer(f"permission denied on {directory} (members of group ssdaq may send commands)")
    if not os.path.exists(path):
        raise NoAnswer(f"no command socket at {path} (is the receiver running?)")
    if not os.access(path, os.W_OK):
        raise NoAnswer(f"permission denied on {path} (members of group ssdaq may send commands)")
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{path}")
        sock.send_string(line)
        if not sock.poll(int(timeout_s * 1000)):
            raise NoAnswer(f"no answer from {path} within {timeout_s:g} s")
        return json.loads(sock.recv())
    finally:
        sock.close(linger=0)
