"""aiohttp, imported without the two TLS contexts it builds eagerly.

aiohttp's connector module creates a verified and an unverified ``ssl.SSLContext`` at
import time, loading the system CA store into both: about 2 MiB of the measured
process's resident set, paid even by a run that only speaks plain HTTP to a loopback
endpoint. This module imports aiohttp with certificate loading switched off for the
duration of the import, and hands out a properly verified context (``tls_context``)
built on demand when a run really talks HTTPS. The contexts aiohttp made stay without
CA certificates, so anything that used them by accident would fail verification,
never skip it.
"""

from __future__ import annotations

import ssl
import sys

if "aiohttp" in sys.modules:  # pragma: no cover - imported earlier by someone else
    import aiohttp
else:
    _Context = ssl.SSLContext
    _load, _paths = _Context.load_default_certs, _Context.set_default_verify_paths
    _Context.load_default_certs = lambda self, purpose=ssl.Purpose.SERVER_AUTH: None  # type: ignore[method-assign]
    _Context.set_default_verify_paths = lambda self: None  # type: ignore[method-assign]
    try:
        import aiohttp
    finally:
        _Context.load_default_certs, _Context.set_default_verify_paths = _load, _paths  # type: ignore[method-assign]


def tls_context() -> ssl.SSLContext:
    """A verifying client context with the system CA store, for https endpoints."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


__all__ = ["aiohttp", "tls_context"]
