"""A fast check for a network connection, made before anything that would download.

Libraries that download (TFDS, `keras.utils.get_file`) retry for minutes on a machine with no
network (measured: an offline `tfds.load` of an unprepared dataset retried for about 200 s).
Probing the download host first turns that into one clear line within seconds.
"""

from __future__ import annotations

import socket
import threading

from aigc_zoo.errors import UserError


def require_connection(host: str, port: int, *, message: str, timeout: float = 5.0) -> None:
    """`UserError(message)` within `timeout` seconds unless `host:port` accepts a connection.

    Args:
        host: the download host.
        port: its port (443 for https).
        message: the error's text; it should name the remedy (a flag, a local file).
        timeout: seconds to wait for name resolution and the connection together.
    """
    reachable = threading.Event()

    def probe():  # in a thread, since name resolution itself can hang past any socket timeout
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            reachable.set()
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    if not reachable.is_set():
        raise UserError(message)
