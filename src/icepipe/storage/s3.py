"""Amazon S3 and S3-compatible services (MinIO, Ceph, SeaweedFS, R2, ...): ``s3://``."""

from __future__ import annotations

import os
from typing import Any

from icepipe.storage.base import Scheme
from icepipe.storage.options import S3Secrets, StorageOptions, resolve_s3_credentials
from icepipe.storage.urls import split_url

__all__ = ["S3Scheme"]


class S3Scheme(Scheme):
    """S3: every storage option applies; credentials come from the variables the options
    name, else the standard AWS chain (``AWS_*`` variables, and ``AWS_PROFILE`` through boto3
    when installed)."""

    names = ("s3",)

    def container_reach(self, options: StorageOptions) -> dict[str, Any]:
        # The region Icechunk is given (us-east-1 for custom endpoints), not the one written.
        return {**options.reach(), "region": options.effective_region}

    def credentials(self, options: StorageOptions) -> S3Secrets | None:
        return resolve_s3_credentials(options)

    def obstore_store(
        self, root_url: str, options: StorageOptions, secrets: S3Secrets | None
    ) -> Any:
        from obstore.store import S3Store

        _, bucket, key = split_url(root_url)
        kwargs: dict[str, Any] = {}
        if options.effective_region:
            kwargs["region"] = options.effective_region
        if options.endpoint:
            kwargs["endpoint"] = options.endpoint
            kwargs["virtual_hosted_style_request"] = not options.force_path_style
        client_options: Any = {"allow_http": True} if options.allow_http else None
        credential_provider = None
        if options.anonymous:
            kwargs["skip_signature"] = True
        elif secrets is not None:
            kwargs["access_key_id"] = secrets.access_key_id
            kwargs["secret_access_key"] = secrets.secret_access_key
            if secrets.session_token:
                kwargs["session_token"] = secrets.session_token
        elif os.environ.get("AWS_PROFILE") and not os.environ.get("AWS_ACCESS_KEY_ID"):
            # obstore reads the AWS_* variables itself, but not profiles: boto3 does.
            try:
                from obstore.auth.boto3 import Boto3CredentialProvider
            except ImportError:  # pragma: no cover - boto3 is optional
                pass
            else:
                credential_provider = Boto3CredentialProvider()
        return S3Store(
            bucket,
            prefix=key or None,
            client_options=client_options,
            credential_provider=credential_provider,
            **kwargs,
        )
