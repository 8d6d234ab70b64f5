"""The SSRF guard of image URL fetches, against a real http.server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from factory.serve.api_errors import ApiError
from factory.serve.serve_config import UrlFetchConfig
from factory.serve.url_fetch import ImageFetcher, address_problem
from tests.imagegen import jpeg
from tests.serve.image_host import image_host

IMAGE = jpeg(64, 48)
LOOPBACK_ONLY = UrlFetchConfig(allowed_networks=["127.0.0.1/32"], timeout_s=1.0)


@pytest.fixture(scope="module")
def host():
    with image_host(IMAGE, huge_bytes=300_000, slow_s=3.0) as served:
        yield served


def fetch(config: UrlFetchConfig, url: str, max_bytes: int = 100_000) -> bytes:
    return asyncio.run(ImageFetcher(config, max_bytes).fetch(url))


def refused(config: UrlFetchConfig, url: str, max_bytes: int = 100_000) -> ApiError:
    with pytest.raises(ApiError) as raised:
        fetch(config, url, max_bytes)
    return raised.value


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata endpoint
        "100.64.0.1",  # shared address space
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address):
    assert address_problem(ipaddress.ip_address(address), []) is not None


def test_public_addresses_and_allowed_networks_pass():
    assert address_problem(ipaddress.ip_address("93.184.216.34"), []) is None
    assert address_problem(ipaddress.ip_address("2606:4700::1111"), []) is None
    allowed = [ipaddress.ip_network("10.1.0.0/16")]
    assert address_problem(ipaddress.ip_address("10.1.2.3"), allowed) is None
    assert address_problem(ipaddress.ip_address("10.2.0.1"), allowed) is not None


def test_loopback_is_refused_by_default_by_address_and_by_name(host):
    by_address = refused(UrlFetchConfig(), f"{host.url}/image.jpg")
    assert (by_address.status, by_address.code) == (403, "url_forbidden")
    assert "loopback" in by_address.message
    by_name = refused(UrlFetchConfig(), f"http://localhost:{host.port}/image.jpg")
    assert (by_name.status, by_name.code) == (403, "url_forbidden")
    assert host.hits == []  # refused before any connection


def test_allowed_loopback_fetches_the_image(host):
    assert fetch(LOOPBACK_ONLY, f"{host.url}/image.jpg") == IMAGE


def test_only_http_and_https(host):
    for url in ("file:///etc/passwd", "ftp://example.org/a.jpg", "gopher://x/"):
        error = refused(LOOPBACK_ONLY, url)
        assert (error.status, error.code) == (400, "unsupported_url_scheme")
    assert refused(LOOPBACK_ONLY, "http:///nohost").code == "invalid_url"


def test_redirects_are_checked_at_every_hop(host):
    # allowed host redirecting to a loopback address outside the allowed /32
    to_other = refused(LOOPBACK_ONLY, f"{host.url}/redirect?to=http://127.0.0.2:{host.port}/x")
    assert (to_other.status, to_other.code) == (403, "url_forbidden")
    to_file = refused(LOOPBACK_ONLY, f"{host.url}/redirect?to=file:///etc/passwd")
    assert (to_file.status, to_file.code) == (400, "unsupported_url_scheme")
    followed = fetch(LOOPBACK_ONLY, f"{host.url}/redirect?to=/image.jpg")
    assert followed == IMAGE


def test_redirect_chains_are_bounded(host):
    url = f"{host.url}/image.jpg"
    for _ in range(3):
        url = f"{host.url}/redirect?to={url}"
    config = LOOPBACK_ONLY.model_copy(update={"max_redirects": 2})
    assert refused(config, url).code == "too_many_redirects"
    assert fetch(LOOPBACK_ONLY.model_copy(update={"max_redirects": 3}), url) == IMAGE


def test_size_time_and_status_limits(host):
    too_big = refused(LOOPBACK_ONLY, f"{host.url}/huge.jpg", max_bytes=100_000)
    assert (too_big.status, too_big.code) == (413, "image_too_large")
    slow = refused(LOOPBACK_ONLY, f"{host.url}/slow.jpg")
    assert (slow.status, slow.code) == (422, "image_fetch_timeout")
    missing = refused(LOOPBACK_ONLY, f"{host.url}/missing.jpg")
    assert (missing.status, missing.code) == (422, "image_fetch_failed")
    assert "404" in missing.message


def test_fetching_can_be_switched_off(host):
    error = refused(UrlFetchConfig(enabled=False, allowed_networks=["127.0.0.1/32"]), host.url)
    assert (error.status, error.code) == (400, "url_fetch_disabled")


@pytest.mark.parametrize(
    "spelling",
    ["2130706433", "0177.0.0.1", "127.1", "127.0.0.1.", "0x7f.1", "0", "[::1]"],
)
def test_every_spelling_of_loopback_is_refused_as_forbidden(host, spelling):
    hits_before = len(host.hits)
    error = refused(UrlFetchConfig(), f"http://{spelling}:{host.port}/image.jpg")
    assert (error.status, error.code) == (403, "url_forbidden"), error.message
    assert len(host.hits) == hits_before  # refused before any connection
