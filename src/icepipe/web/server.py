"""``icepipe web``: the application on uvicorn."""

from __future__ import annotations

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


def serve(config: WebConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``config`` until interrupted (uvicorn; one process). A host other than a loopback
    address is said on stderr: the pages then show the repositories to the network."""
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
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
