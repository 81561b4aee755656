"""``icepipe web``: the application on uvicorn."""

from __future__ import annotations

import dataclasses
import ipaddress
import sys

from icepipe.web.config import WebConfig

__all__ = ["serve"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: The names a browser on this machine reaches a loopback server by.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def serve(config: WebConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``config`` until interrupted (uvicorn; one process). A host other than a loopback
    address is said on stderr: the pages then show the repositories to the network. On a
    loopback address, only requests addressed to a loopback name are answered (unless
    ``config.allowed_hosts`` says otherwise): a web page cannot reach the server through a
    name of its own resolving to 127.0.0.1 (DNS rebinding)."""
    import uvicorn

    from icepipe.web.app import create_app
    from icepipe.web.config import pipeline_files

    pipeline_files(config.pipelines)  # a folder that does not exist: exit 2 now, not a 400 later
    if not _is_loopback(host):
        print(
            f"icepipe web: listening on {host}: every repository shown here is readable by "
            "anyone who reaches this address (read-only)",
            file=sys.stderr,
        )
    elif not config.allowed_hosts:
        config = dataclasses.replace(config, allowed_hosts=(*LOOPBACK_NAMES, host))
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
