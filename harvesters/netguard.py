"""The SSRF guard: which addresses a harvest may connect to, and a requests adapter that
connects only to the address it checked.

Every request a harvester makes (CKAN API calls, NGSI/OGC API pages, OAuth2 tokens, resource
downloads) goes through a session from harvesters.http, whose adapter resolves the host
itself, refuses the address unless it is public, and then connects to exactly that address
(the URL's host stays the Host header, TLS SNI and the name the certificate must match), so a
name that resolves to a public address once and to 127.0.0.1 the next time (DNS rebinding)
gains nothing. Through a proxy (HTTP(S)_PROXY in the environment, or a session's proxies) the
proxy is told the checked address, not the name: an HTTPS tunnel is a CONNECT to the address
(TLS still checks the certificate against the name), a plain HTTP request names the address in
its request line with the name as Host (a proxy may replace Host with the address: a site
served only under its name then answers as it does to its address — an error, never another
host's bytes published as if checked). Otherwise the proxy would resolve the name itself and
could reach what the guard refused. requests follows redirects by sending each hop through the adapter again, so
every hop is checked; the count of hops is bounded by the session.

`allow_private_networks: true` on a source lets it reach loopback, private (RFC 1918, ULA) and
CGNAT addresses — municipal intranets are real — but never link-local (169.254.0.0/16, where
cloud metadata services answer, and fe80::/10), multicast, unspecified or reserved ones.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import prepend_scheme_if_needed, select_proxy

CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
MAX_REDIRECTS = 5


class BlockedAddress(requests.RequestException):
    """A request refused before any byte was sent: the host is not one we may reach."""


def refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool
            ) -> str | None:
    """Why a harvest may not connect to `ip`, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:   # ::ffff:127.0.0.1 is 127.0.0.1 to the kernel
            return refusal(embedded, allow_private)
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:   # before "reserved": ::1 lies in ::/8, reserved by IANA
        return None if allow_private else "a loopback address"
    if ip.is_reserved or (ip.version == 4 and int(ip) == 0xFFFFFFFF):
        return "a reserved address"
    if allow_private:
        return None
    if ip.version == 4 and ip in CGNAT:
        return "a carrier-grade NAT address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "a non-public address"
    return None


def checked_address(host: str, port: int, allow_private: bool) -> str:
    """Resolve `host` and return the address to connect to; BlockedAddress if any address
    it resolves to is refused (a name with one public and one internal address is refused:
    the kernel might pick either)."""
    if not host:
        raise BlockedAddress("the URL has no host")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise requests.ConnectionError(f"the name {host} does not resolve") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        why = refusal(ip, allow_private)
        if why is not None:
            hint = "" if allow_private or "link-local" in why or why in (
                "a multicast address", "an unspecified address", "a reserved address") else \
                " (a source on an intranet may set allow_private_networks: true)"
            raise BlockedAddress(f"refused to connect: {host} is {why}{hint}")
    if not addresses:
        raise requests.ConnectionError(f"the name {host} does not resolve")
    return addresses[0]


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter that checks the address of every request it sends and connects to it."""

    def __init__(self, *, allow_private: bool = False, **kw):
        self.allow_private = allow_private
        super().__init__(**kw)

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        parts = urlsplit(request.url)
        if parts.scheme not in ("http", "https"):
            raise BlockedAddress(f"refused: {parts.scheme or 'no'} scheme (http and https only)")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        request._renkei_address = checked_address(parts.hostname or "", port,
                                                  self.allow_private)
        # Host is the URL's, not the address connected to; set on every hop, since requests
        # copies the previous hop's headers into a redirect.
        host = parts.hostname if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
        request.headers["Host"] = host if parts.port is None else f"{host}:{parts.port}"
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                            proxies=proxies)

    def request_url(self, request, proxies):
        url = super().request_url(request, proxies)
        address = getattr(request, "_renkei_address", None)
        if address is None or not url.startswith("http://") or \
                not select_proxy(request.url, proxies):
            return url
        # Plain HTTP through a proxy: the absolute-form target names the checked address.
        parts = urlsplit(url)
        host = f"[{address}]" if ":" in address else address
        return urlunsplit(parts._replace(
            netloc=host if parts.port is None else f"{host}:{parts.port}"))

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        address = getattr(request, "_renkei_address", None)
        if address is None:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(
            request, verify, cert)
        if host_params["scheme"] == "https":
            # SNI and certificate checks against the name, while the socket (or the proxy's
            # tunnel) goes to `address`.
            pool_kwargs = {**pool_kwargs, "server_hostname": host_params["host"],
                           "assert_hostname": host_params["host"]}
        proxy = select_proxy(request.url, proxies)
        manager = self.poolmanager
        if proxy:
            proxy = prepend_scheme_if_needed(proxy, "http")
            if not urlsplit(proxy).hostname:
                raise requests.exceptions.InvalidProxyURL(
                    "the proxy URL has no host; check HTTP_PROXY / HTTPS_PROXY")
            manager = self.proxy_manager_for(proxy)
        return manager.connection_from_host(
            host=address, port=host_params["port"], scheme=host_params["scheme"],
            pool_kwargs=pool_kwargs)
