"""Secrets stay out of logs, errors and files; untrusted catalogs cannot reach local files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import socket
import traceback
from pathlib import Path

import pystac
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from geochip.core.hrefs import HrefPolicy
from geochip.core.security import (
    install_log_redaction,
    redact,
    register_secret,
    sign_href,
    unsign_href,
)
from geochip.errors import HrefPolicyError, InputError

SAS = "sv=2024-05-04&se=2030-01-01&sr=c&sp=rl&sig=Pl4nted%2FSasSig%3D"
KEY = "planted-api-key-0123456789"
REMOTE = HrefPolicy.for_remote("https://stac.example.com/v1/")

token_chars = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789%-_.~+/",
    min_size=8,
    max_size=40,
)


# --- redaction --------------------------------------------------------------------------


def test_sas_signature_is_removed_from_a_url() -> None:
    out = redact(f"https://acc.blob.core.windows.net/c/B04.tif?{SAS}")
    assert "Pl4nted" not in out
    assert "sig=REDACTED" in out and "se=2030-01-01" in out


def test_header_values_are_removed_in_every_printed_form() -> None:
    forms = [
        f"x-api-key: {KEY}",
        f"{{'X-Api-Key': '{KEY}', 'Accept': 'application/json'}}",
        f'{{"x-api-key": "{KEY}"}}',
        f"Authorization: Bearer {KEY}",
        f"Ocp-Apim-Subscription-Key={KEY}",
    ]
    for text in forms:
        assert KEY not in redact(text), text


def test_json_bodies_lose_token_values() -> None:
    body = json.dumps({"collections": ["s2"], "token": "next-page-secret-token"})
    out = redact(body)
    assert "next-page-secret-token" not in out and '"collections": ["s2"]' in out


def test_a_registered_secret_is_removed_wherever_it_appears() -> None:
    secret = "custom-header-value-7f3a9c"
    register_secret(secret)
    assert redact(f"weird place {secret} and {secret}!") == "weird place REDACTED and REDACTED!"


def test_azure_keys_in_the_environment_are_registered_alone_and_in_connection_strings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from geochip.core.storage import _redact_environment_credentials

    account_key = "YWNjb3VudC1rZXktZm9yLWFkbGZz"  # adlfs's and obstore's variable
    cli_key = "YXp1cmUtY2xpLWtleS12YWx1ZQ"  # the Azure CLI's
    in_string = "Y29ubmVjdGlvbi1zdHJpbmcta2V5=="
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", account_key)
    monkeypatch.setenv("AZURE_STORAGE_KEY", cli_key)
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={in_string};",
    )
    _redact_environment_credentials()
    for key in (account_key, cli_key, in_string):
        assert redact(f"the SDK said: signature of {key} failed") == (
            "the SDK said: signature of REDACTED failed"
        )


def test_short_values_are_not_registered() -> None:
    register_secret("abc")
    assert redact("abc def") == "abc def"


@settings(max_examples=200, deadline=None)
@given(secret=token_chars, key=st.sampled_from(["sig", "api_key", "token", "X-Amz-Signature"]))
def test_property_a_secret_query_value_never_survives(secret: str, key: str) -> None:
    skeleton = f"https://host.example/path/file.tif?a=1&{key}=REDACTED&b=2"  # what is left
    assume(secret not in skeleton and "&" not in secret)
    assert secret not in redact(f"https://host.example/path/file.tif?a=1&{key}={secret}&b=2")


@settings(max_examples=100, deadline=None)
@given(secret=token_chars)
def test_property_a_header_value_never_survives_a_dict_repr(secret: str) -> None:
    assume("'" not in secret)
    text = repr({"X-Api-Key": secret, "User-Agent": "geochip"})
    assert secret not in redact(text)


def test_log_records_are_redacted_at_creation(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    logging.getLogger("some.library").debug(
        "GET %s Headers: %s", f"https://h/x?{SAS}", {"x-api-key": KEY}
    )
    try:
        raise ValueError(f"failed https://h/x?{SAS}")
    except ValueError:
        logging.getLogger("other").exception("boom")
    text = caplog.text + "".join(r.getMessage() for r in caplog.records)
    assert "Pl4nted" not in text and KEY not in text
    assert "sig=REDACTED" in text


# --- signing ----------------------------------------------------------------------------


def test_sign_href_calls_the_signer_and_accepts_objects_with_href() -> None:
    class Signed:
        href = "https://a/x.tif?sig=1"

    assert sign_href("https://a/x.tif", lambda h: Signed()) == "https://a/x.tif?sig=1"
    assert sign_href("https://a/x.tif", None) == "https://a/x.tif"


def test_a_signer_returning_nonsense_is_named() -> None:
    with pytest.raises(InputError, match=r"returned a int .*must return the signed href"):
        sign_href("https://a/x.tif", lambda h: 3)


def test_unsign_strips_sas_and_aws_signatures_and_keeps_the_rest() -> None:
    assert unsign_href(f"https://a/x.tif?v=3&{SAS}") == "https://a/x.tif?v=3"
    aws = (
        "https://b.s3.amazonaws.com/k.tif?X-Amz-Algorithm=AWS4&X-Amz-Credential=c"
        "&X-Amz-Signature=s&part=1"
    )
    assert unsign_href(aws) == "https://b.s3.amazonaws.com/k.tif?part=1"


# --- href policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "href",
    [
        "/etc/passwd",
        "file:///etc/passwd",
        "file://localhost/etc/passwd",
        "../../../../etc/passwd",
        "C:\\Windows\\win.ini",
        "/vsizip//etc/archive.zip/x.tif",
        "/vsicurl/http://169.254.169.254/latest",
        "HDF5:/etc/secret.h5://band",
        "GTIFF_RAW:/etc/x.tif",
        "ftp://ftp.example.com/x.tif",
    ],
)
def test_a_network_catalog_cannot_reach_local_files_or_gdal_paths(href: str) -> None:
    with pytest.raises(HrefPolicyError, match="may not make geochip read"):
        REMOTE.check(href, base="/data/catalog.json" if href.startswith("..") else None)


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "2852039166",  # 169.254.169.254 as one number
        "0xA9FEA9FE",
        "0251.0376.0251.0376",
        "[fe80::1]",
        "[::ffff:169.254.169.254]",
        "metadata.google.internal",
        "100.100.100.200",
    ],
)
def test_link_local_and_metadata_hosts_are_refused_even_for_local_catalogs(host: str) -> None:
    for policy in (REMOTE, HrefPolicy.trusted()):
        with pytest.raises(HrefPolicyError, match="link-local or cloud-metadata"):
            policy.check(f"http://{host}/latest/meta-data/")


def test_a_public_catalog_cannot_point_at_private_hosts() -> None:
    for host in ("127.0.0.1", "localhost", "10.0.0.5", "[::1]", "0.0.0.0", "192.168.1.2"):
        with pytest.raises(HrefPolicyError, match="loopback or private"):
            REMOTE.check(f"http://{host}:8080/x.tif")


def test_a_loopback_catalog_may_point_at_loopback_but_not_at_local_files() -> None:
    policy = HrefPolicy.for_remote("http://127.0.0.1:9999/")
    assert policy.check("http://127.0.0.1:9998/x.tif") == "http://127.0.0.1:9998/x.tif"
    with pytest.raises(HrefPolicyError, match="local path"):
        policy.check("/tmp/x.tif")


def test_relative_hrefs_of_a_network_catalog_resolve_to_urls() -> None:
    base = "https://stac.example.com/v1/collections/s2/items/a.json"
    assert (
        REMOTE.check("../../../../etc/passwd", base=base) == "https://stac.example.com/etc/passwd"
    )
    assert REMOTE.check("/etc/passwd", base=base) == "https://stac.example.com/etc/passwd"


def test_local_roots_stop_dotdot_and_symlink_escapes(tmp_path: Path) -> None:
    root = tmp_path / "catalog"
    root.mkdir()
    (root / "ok.tif").write_bytes(b"x")
    (root / "link").symlink_to("/etc")
    policy = HrefPolicy(local_roots=(str(root),))
    base = str(root / "catalog.json")
    assert policy.check("ok.tif", base=base) == str(root / "ok.tif")
    with pytest.raises(HrefPolicyError, match="outside the allowed folders"):
        policy.check("../../x.tif", base=base)
    with pytest.raises(HrefPolicyError, match="outside the allowed folders"):
        policy.check("link/passwd", base=base)


def test_trusted_policy_allows_local_files_and_cloud_urls() -> None:
    trusted = HrefPolicy.trusted()
    assert trusted.check("/data/x.tif") == "/data/x.tif"
    assert trusted.check("s3://bucket/x.tif") == "s3://bucket/x.tif"
    assert REMOTE.check("s3://bucket/x.tif") == "s3://bucket/x.tif"


ipv4_link_local = st.integers(
    int(ipaddress.IPv4Address("169.254.0.0")), int(ipaddress.IPv4Address("169.254.255.255"))
)


@settings(max_examples=200, deadline=None)
@given(
    address=ipv4_link_local,
    form=st.sampled_from(["dotted", "int", "hex", "octal"]),
    path=st.text(alphabet="abc/._-", max_size=20),
)
def test_property_link_local_in_any_spelling_is_refused(address: int, form: str, path: str) -> None:
    packed = socket.inet_ntoa(address.to_bytes(4, "big"))
    host = {
        "dotted": packed,
        "int": str(address),
        "hex": hex(address),
        "octal": ".".join(f"0{int(p):o}" for p in packed.split(".")),
    }[form]
    with pytest.raises(HrefPolicyError):
        HrefPolicy.trusted().check(f"http://{host}/{path}")


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(
        st.sampled_from(["..", ".", "etc", "home", "x.tif", "a b", "%2e%2e"]),
        min_size=1,
        max_size=8,
    ),
    prefix=st.sampled_from(["", "/", "file://", "file:///", "./"]),
)
def test_property_no_path_form_reads_local_files_for_a_remote_catalog(
    parts: list[str], prefix: str
) -> None:
    href = prefix + "/".join(parts)
    try:
        resolved = REMOTE.check(href, base="https://stac.example.com/c/item.json")
    except HrefPolicyError:
        return
    assert resolved.startswith("https://stac.example.com/")


# --- end to end -------------------------------------------------------------------------


def _item(asset_href: str) -> pystac.Item:
    item = pystac.Item(
        "evil",
        {"type": "Point", "coordinates": [1.0, 1.0]},
        [1.0, 1.0, 1.0, 1.0],
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        {"eo:cloud_cover": 1.0},
        collection="c",
    )
    item.add_asset("data", pystac.Asset(asset_href))
    return item


def test_a_network_api_with_a_file_url_asset_is_refused_before_any_read() -> None:
    from geochip.sources.open import open_catalog
    from geochip.testing.stac_api import StacApiServer

    with StacApiServer([_item("file:///etc/passwd")]) as api:
        cat = open_catalog(api.url)
        with pytest.raises(HrefPolicyError, match=r"item 'evil', asset 'data'.*local path"):
            cat.search()


def test_a_static_catalog_over_http_cannot_link_to_a_local_file(tmp_path: Path) -> None:
    from geochip.sources.open import open_catalog
    from geochip.testing.stac_api import StacApiServer

    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(_item("https://x.example/a.tif").to_dict()))
    root = tmp_path / "www"
    root.mkdir()
    catalog = {
        "type": "Catalog",
        "stac_version": "1.1.0",
        "id": "evil",
        "description": "links to a local file",
        "links": [{"rel": "item", "href": f"file://{secret}"}],
    }
    (root / "catalog.json").write_text(json.dumps(catalog))
    with StacApiServer(files_root=root) as server:
        cat = open_catalog(server.file_url(root / "catalog.json"))
        with pytest.raises(HrefPolicyError, match="local path"):
            cat.search()


def test_exceptions_from_an_unreachable_api_carry_no_key() -> None:
    from geochip.errors import CatalogUnreachableError
    from geochip.sources.open import open_catalog
    from geochip.testing.rustac import free_port

    url = f"http://127.0.0.1:{free_port()}/?api_key={KEY}"
    with pytest.raises(CatalogUnreachableError) as info:
        open_catalog(url, retries=0, timeout=2, api_key=KEY)
    formatted = "".join(traceback.format_exception(info.value))
    assert KEY not in formatted and "cannot reach" in formatted
