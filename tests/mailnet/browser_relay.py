"""Relays connections from a listening socket it inherits to a TCP port on this namespace's loopback.

    python browser_relay.py <fd> <port>

Why: chromedriver runs inside a network namespace of the test internet (tests/mailnet/browser.py), where
127.0.0.1 is the namespace's own loopback, which the test process (in the machine's namespace) cannot reach.
The test process binds a listening socket on the machine's 127.0.0.1 and hands it to this relay, started
inside the namespace: a socket stays in the namespace it was created in, so this process accepts there and
connects here. Nothing is opened on the wire. Runs until killed; standard library only.
"""

from __future__ import annotations

import socket
import sys
import threading


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until `source` ends, then pass the end on (half-close), so HTTP keep-alive and EOF both work."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(client: socket.socket, port: int) -> None:
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as error:
        print(f"browser_relay: cannot reach 127.0.0.1:{port}: {error}", file=sys.stderr, flush=True)
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    back.start()
    pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main() -> None:
    listener = socket.socket(fileno=int(sys.argv[1]))
    port = int(sys.argv[2])
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, port), daemon=True).start()


if __name__ == "__main__":
    main()
