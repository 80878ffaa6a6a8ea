"""A TLS front for the test broker: certificates made with `openssl`, and a TLS-terminating proxy.

The shared test RabbitMQ has no TLS listener; this proxy accepts TLS on loopback with a certificate
for `localhost` and 127.0.0.1 signed by a throw-away CA, and forwards the plain bytes to the broker.
"""

from __future__ import annotations

import selectors
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_CHUNK = 65536


@dataclass(frozen=True)
class Certificates:
    """Paths of a CA certificate and of a server certificate and key it signed."""

    ca: Path
    server_cert: Path
    server_key: Path


def make_certificates(folder: Path) -> Certificates:
    """Make a CA and a server certificate for `localhost` and 127.0.0.1 with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the TLS tests need the openssl command (apt-get install openssl)")
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ext = folder / "server.ext"
    ext.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]
    signed = ["-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "2", "-extfile", ext]
    commands = [
        [
            openssl,
            "req",
            "-x509",
            *ec,
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "2",
            "-subj",
            "/CN=CA",
            *ca_ext,
        ],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", csr, "-out", cert, *signed],
    ]
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True, timeout=30)
    return Certificates(ca, cert, key)


class TlsProxy:
    """Accept TLS on 127.0.0.1 and forward each connection's plain bytes to `upstream`."""

    def __init__(self, certificates: Certificates, upstream: tuple[str, int]) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificates.server_cert, certificates.server_key)
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)  # accept() is not woken by close(): poll the stop flag
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.handshakes = 0

    def __enter__(self) -> TlsProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(5)
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):
            client.close()
            return  # the client refused our certificate: the tests want to see that
        self.handshakes += 1
        with tls, socket.create_connection(self._upstream, timeout=5) as plain:
            tls.settimeout(None)
            plain.settimeout(None)
            self._pump(tls, plain)

    def _pump(self, tls: ssl.SSLSocket, plain: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(tls, selectors.EVENT_READ)
            selector.register(plain, selectors.EVENT_READ)
            while not self._stop.is_set():
                ready = [key.fileobj for key, _ in selector.select(0.2)]
                if tls.pending() and tls not in ready:
                    ready.append(tls)
                for source in ready:
                    target = plain if source is tls else tls
                    try:
                        data = source.recv(_CHUNK)  # type: ignore[union-attr]
                        if not data:
                            return
                        target.sendall(data)
                    except OSError:
                        return
