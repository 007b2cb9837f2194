"""Object stores (S3, GCS, Azure Blob) through obstore, with the options users may set.

obstore wraps the Rust ``object_store`` crate: one wheel, no botocore, so it installs
beside everything else Atrium needs (s3fs cannot: botocore pins ``python-dateutil<3``,
which the Kubernetes client's ``>=3`` excludes). This module turns a URL and a dict of
options (from a secret or the settings) into an obstore store, or into obstore's fsspec
filesystem for callers that glob.

Only documented options are accepted (:data:`OPTION_KEYS`, plus the s3fs/gcsfs/adlfs
spellings in :data:`ALIASES`): the crate's others read local files (token files) or
name credential hosts (metadata, STS, MSI endpoints) that a user must not choose. The
hosts a store will reach besides the provider's own, a custom ``endpoint``, GCS
``base_url`` (or a service account key's ``gcs_base_url``) and the Azure emulator, are
returned by :func:`custom_endpoints` so a caller can vet them against its network
policy. Credentials not given are taken from the server's environment (``AWS_*``,
``GOOGLE_*``, ``AZURE_*``, instance metadata), as the cloud SDKs do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, Literal

import fsspec  # type: ignore[import-untyped]
import obstore.exceptions
from obstore.fsspec import FsspecStore
from obstore.store import AzureStore, GCSStore, S3Store

__all__ = [
    "ALIASES",
    "OPTION_KEYS",
    "PROVIDERS",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectStoreOptions",
    "Provider",
    "brief_error",
    "custom_endpoints",
    "fsspec_filesystem",
    "is_refusal",
    "open_store",
    "parse_options",
    "split_url",
    "url_to_fs",
]

Provider = Literal["s3", "gcs", "azure"]
#: The stores :func:`open_store` makes.
ObjectStore = S3Store | GCSStore | AzureStore

#: URL schemes -> the provider that serves them.
PROVIDERS: Final[Mapping[str, Provider]] = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "azure": "azure",
    "abfs": "azure",
    "abfss": "azure",
}
#: Options of the HTTP client, valid for every provider.
_CLIENT_KEYS: Final = frozenset({"allow_http", "timeout", "connect_timeout"})
#: The options each provider accepts (obstore's names).
OPTION_KEYS: Final[Mapping[Provider, frozenset[str]]] = {
    "s3": _CLIENT_KEYS
    | {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "region",
        "endpoint",
        "skip_signature",
        "virtual_hosted_style_request",
        "request_payer",
    },
    "gcs": _CLIENT_KEYS | {"service_account_key", "bearer_token", "base_url", "skip_signature"},
    "azure": _CLIENT_KEYS
    | {
        "account_name",
        "account_key",
        "sas_key",
        "token",
        "client_id",
        "client_secret",
        "tenant_id",
        "use_emulator",
        "endpoint",
        "skip_signature",
    },
}
#: Other libraries' spellings (s3fs, gcsfs, adlfs) -> obstore's.
ALIASES: Final[Mapping[Provider, Mapping[str, str]]] = {
    "s3": {
        "key": "access_key_id",
        "secret": "secret_access_key",
        "token": "session_token",
        "endpoint_url": "endpoint",
        "region_name": "region",
        "anon": "skip_signature",
    },
    "gcs": {"token": "service_account_key", "endpoint_url": "base_url", "anon": "skip_signature"},
    "azure": {"sas_token": "sas_key", "endpoint_url": "endpoint", "anon": "skip_signature"},
}
#: Where the Azure emulator (Azurite) listens when ``use_emulator`` is set.
AZURITE_ENDPOINT: Final = "http://127.0.0.1:10000"
#: A sync gives up on an unreachable store in seconds, not after the crate's 3 minutes.
_RETRY: Final = {"max_retries": 2, "retry_timeout": timedelta(seconds=30)}
_XML_CODE: Final = re.compile(r"<Code>([^<]{1,100})</Code>")
_XML_MESSAGE: Final = re.compile(r"<Message>([^<]{1,2000})</Message>")
_REFUSED_STATUS: Final = re.compile(r"status code: (401|403)\b")


class ObjectStoreError(ValueError):
    """Options that name no store, or that obstore refuses."""


@dataclass(frozen=True)
class ObjectStoreOptions:
    """A provider's checked options: the store's config and its HTTP client's."""

    provider: Provider
    config: dict[str, Any] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)


def split_url(url: str) -> tuple[Provider, str, str]:
    """``s3://bucket/some/prefix`` -> ``("s3", "bucket", "some/prefix")``."""
    scheme, sep, rest = url.partition("://")
    provider = PROVIDERS.get(scheme.lower()) if sep else None
    if provider is None:
        known = ", ".join(f"{s}://" for s in PROVIDERS)
        raise ObjectStoreError(f"an object store URL starts with one of {known}")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ObjectStoreError(f"{url} names no bucket or container")
    return provider, bucket, prefix.strip("/")


def parse_options(provider: Provider, options: Mapping[str, Any]) -> ObjectStoreOptions:
    """Check ``options`` against what ``provider`` accepts; map the other spellings."""
    flat = dict(options)
    nested = flat.pop("client_kwargs", None)  # s3fs: {"endpoint_url": ..., "region_name": ...}
    if isinstance(nested, Mapping):
        flat.update({k: v for k, v in nested.items() if k not in flat})
    elif nested is not None:
        raise ObjectStoreError("client_kwargs must be an object")
    aliases = ALIASES[provider]
    allowed = OPTION_KEYS[provider]
    checked = ObjectStoreOptions(provider)
    for key, value in flat.items():
        name = aliases.get(key, key)
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            raise ObjectStoreError(f"unknown {provider} option {key!r} (known: {known})")
        target = checked.client if name in _CLIENT_KEYS else checked.config
        as_json = name == "service_account_key" and isinstance(value, Mapping)
        target[name] = json.dumps(dict(value)) if as_json else value
    return checked


def custom_endpoints(options: ObjectStoreOptions) -> list[str]:
    """The URLs ``options`` point the store at instead of the provider's own hosts."""
    config = options.config
    found = [config[key] for key in ("endpoint", "base_url") if key in config]
    key = config.get("service_account_key")
    if isinstance(key, str):
        try:
            parsed = json.loads(key)
        except json.JSONDecodeError:
            raise ObjectStoreError("service_account_key is not JSON") from None
        if isinstance(parsed, dict) and "gcs_base_url" in parsed:
            found.append(parsed["gcs_base_url"])
    if config.get("use_emulator") in (True, "true", "True", "1"):
        found.append(AZURITE_ENDPOINT)
    for url in found:
        if not isinstance(url, str):
            raise ObjectStoreError("an endpoint must be a URL string")
    return found


def _client_options(options: ObjectStoreOptions) -> dict[str, Any] | None:
    # None keeps the environment's client options (AWS_ALLOW_HTTP...): obstore replaces
    # them all with any dict given. The crate's timeouts (30 s, 5 s to connect) stand.
    client = dict(options.client)
    # A plain-http endpoint the user named (MinIO, an emulator) is what they meant.
    if any(url.startswith("http://") for url in custom_endpoints(options)):
        client.setdefault("allow_http", True)
    return client or None


def open_store(options: ObjectStoreOptions, bucket: str) -> ObjectStore:
    """An obstore store for ``bucket`` (an Azure container)."""
    client: Any = _client_options(options)
    config: Any = options.config
    retry: Any = _RETRY
    try:
        if options.provider == "s3":
            return S3Store(bucket, config=config, client_options=client, retry_config=retry)
        if options.provider == "gcs":
            return GCSStore(bucket, config=config, client_options=client, retry_config=retry)
        return AzureStore(bucket, config=config, client_options=client, retry_config=retry)
    except (obstore.exceptions.BaseError, ValueError, TypeError) as exc:
        msg = f"the {options.provider} options are wrong: {brief_error(exc)}"
        raise ObjectStoreError(msg) from None


def fsspec_filesystem(options: ObjectStoreOptions, protocol: str) -> FsspecStore:
    """obstore's fsspec filesystem for ``protocol`` (synchronous API)."""
    client: Any = _client_options(options)
    config: Any = options.config
    retry: Any = _RETRY
    name: Any = protocol  # obstore's overloads want a literal protocol
    return FsspecStore(name, config=config, client_options=client, retry_config=retry)


def url_to_fs(url: str, options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """Like ``fsspec.core.url_to_fs``, with obstore's filesystem for the object stores.

    Returns the filesystem and the URL's path in it (``bucket/prefix`` for a store).
    ``options`` are the store's options (:func:`parse_options`) or fsspec's for others.
    """
    scheme, sep, _ = url.partition("://")
    if sep and scheme.lower() in PROVIDERS:
        provider, bucket, prefix = split_url(url)
        filesystem = fsspec_filesystem(parse_options(provider, options or {}), scheme.lower())
        return filesystem, f"{bucket}/{prefix}".rstrip("/")
    filesystem, path = fsspec.core.url_to_fs(url, **(options or {}))
    return filesystem, str(path)


def brief_error(exc: BaseException) -> str:
    """An obstore error in one line: its first line (the text goes on with a Rust debug
    dump), the XML prolog of the server's error body replaced by the body's code and
    message (``SignatureDoesNotMatch: The request signature ...``)."""
    text = str(exc).split("\n\nDebug source", 1)[0].strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    first = first.split(": <?xml", 1)[0]
    code, message = _XML_CODE.search(text), _XML_MESSAGE.search(text)
    if code is not None:
        said = message.group(1).strip().splitlines()[0] if message else ""
        first += f": {code.group(1)}" + (f": {said}" if said else "")
    return first if len(first) <= 400 else first[:397] + "..."


def is_refusal(exc: BaseException) -> bool:
    """Whether the store refused the credentials (401 or 403), whatever obstore's class."""
    refused = (obstore.exceptions.PermissionDeniedError, obstore.exceptions.UnauthenticatedError)
    return isinstance(exc, refused) or bool(_REFUSED_STATUS.search(str(exc)))
