"""Object-store options: the accepted keys, other libraries' spellings, the endpoints."""

from __future__ import annotations

import json

import pytest
from obstore.store import AzureStore, GCSStore, S3Store

from atrium.core.objectstore import (
    AZURITE_ENDPOINT,
    ObjectStoreError,
    ObjectStoreOptions,
    brief_error,
    custom_endpoints,
    fsspec_filesystem,
    open_store,
    parse_options,
    split_url,
)


def test_urls_split_into_provider_bucket_and_prefix() -> None:
    assert split_url("s3://bucket/a/b/") == ("s3", "bucket", "a/b")
    assert split_url("gs://bucket") == ("gcs", "bucket", "")
    assert split_url("abfss://container/x") == ("azure", "container", "x")
    for bad in ("http://host/x", "bucket/x", "s3:///x"):
        with pytest.raises(ObjectStoreError):
            split_url(bad)


def test_s3fs_spellings_map_to_obstore_options() -> None:
    options = parse_options(
        "s3",
        {
            "key": "AKIA",
            "secret": "s3cr3t",
            "client_kwargs": {"endpoint_url": "http://minio:9000", "region_name": "eu-west-1"},
            "timeout": "5s",
        },
    )
    assert options.config == {
        "access_key_id": "AKIA",
        "secret_access_key": "s3cr3t",
        "endpoint": "http://minio:9000",
        "region": "eu-west-1",
    }
    assert options.client == {"timeout": "5s"}
    assert custom_endpoints(options) == ["http://minio:9000"]


def test_options_that_read_files_or_pick_credential_hosts_are_refused() -> None:
    for provider, key in (
        ("s3", "web_identity_token_file"),
        ("s3", "sts_endpoint"),
        ("gcs", "application_credentials"),
        ("gcs", "service_account"),
        ("azure", "msi_endpoint"),
        ("azure", "authority_host"),
    ):
        with pytest.raises(ObjectStoreError, match=f"unknown .* option '{key}'"):
            parse_options(provider, {key: "x"})  # type: ignore[arg-type]
    with pytest.raises(ObjectStoreError, match="client_kwargs must be an object"):
        parse_options("s3", {"client_kwargs": "x"})


def test_endpoints_include_a_key_s_base_url_and_the_emulator() -> None:
    key = {"client_email": "a@b", "gcs_base_url": "http://fake-gcs:4443"}
    gcs = parse_options("gcs", {"token": key})
    assert json.loads(gcs.config["service_account_key"]) == key
    assert custom_endpoints(gcs) == ["http://fake-gcs:4443"]
    azure = parse_options("azure", {"use_emulator": True})
    assert custom_endpoints(azure) == [AZURITE_ENDPOINT]
    with pytest.raises(ObjectStoreError, match="not JSON"):
        custom_endpoints(parse_options("gcs", {"service_account_key": "{"}))


def test_stores_are_built_for_each_provider() -> None:
    s3 = parse_options("s3", {"endpoint": "http://127.0.0.1:9", "skip_signature": True})
    assert isinstance(open_store(s3, "bucket"), S3Store)
    assert isinstance(open_store(parse_options("gcs", {"skip_signature": True}), "b"), GCSStore)
    azure = parse_options("azure", {"account_name": "acct", "skip_signature": True})
    assert isinstance(open_store(azure, "container"), AzureStore)
    filesystem = fsspec_filesystem(s3, "s3")
    assert filesystem.protocol == "s3"
    with pytest.raises(ObjectStoreError, match="the s3 options are wrong"):
        open_store(ObjectStoreOptions("s3", {"region": 5}), "bucket")


def test_brief_errors_drop_the_rust_debug_dump() -> None:
    error = RuntimeError("Generic S3 error: 404 Not Found\n\nDebug source:\nGeneric {...}")
    assert brief_error(error) == "Generic S3 error: 404 Not Found"
    assert brief_error(RuntimeError("")) == "RuntimeError"


def test_brief_errors_name_the_server_s_error_code() -> None:
    body = (
        'Generic MicrosoftAzure error: PUT failed - 403 Forbidden: <?xml version="1.0"?>\n'
        "<Error>\n  <Code>AuthorizationFailure</Code>\n  <Message>Not allowed.\n"
        "RequestId:1</Message>\n</Error>\n\nDebug source:\n..."
    )
    assert brief_error(RuntimeError(body)) == (
        "Generic MicrosoftAzure error: PUT failed - 403 Forbidden: "
        "AuthorizationFailure: Not allowed."
    )
