"""A model call's transport failure (timeout, refused connection, TLS, proxy, redirect) said in the
operator's words, naming the setting to change: httpx's own words ("ConnectError") sent operators to a
server that ran.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import httpx

from agent.models.base import ModelError, ModelUnavailableError, NoApiAtURLError
from agent.models.http import ResponseRefused
from agent.models.proxies import proxy_for

__all__ = ["redirect_error", "tls_problem", "transport_error"]


def transport_error(e: httpx.HTTPError, *, name: str, base_url: str, provider: str) -> ModelError:
    """A timeout or connection failure, said plainly, and retryable."""
    if isinstance(e, httpx.ReadTimeout):
        waited = _read_timeout(e)
        return ModelError(
            f"{name} at {base_url} timed out: nothing for {waited} (ReadTimeout); a model still loading, or a "
            "long prompt on a slow machine, needs a larger MODEL_TIMEOUT; else check that the server runs",
            provider=provider,
            model=name,
            retryable=True,
        )
    setting = (
        f"{provider.upper()}_BASE_URL" if provider in ("openai", "anthropic", "gemini") else "the base URL"
    )
    if isinstance(e, ResponseRefused):
        return ModelUnavailableError(f"{name} at {base_url} {e}", provider=provider, model=name)
    if (tls := tls_problem(e, setting)) is not None:  # no retry mends these: fall back at once
        return ModelUnavailableError(f"{name} at {base_url} {tls}", provider=provider, model=name)
    connecting = isinstance(e, httpx.ConnectError | httpx.ConnectTimeout | httpx.ProxyError)
    if connecting and (via := proxy_for(base_url)):  # the proxy is down, or refused the way through
        said = f": {str(e)[:200]}" if isinstance(e, httpx.ProxyError) and str(e) else ""  # "407 ..."
        kind = f"could not be reached through the proxy {via} ({type(e).__name__}{said})"
        setting = "HTTPS_PROXY/HTTP_PROXY (or NO_PROXY)"
    elif isinstance(e, httpx.TimeoutException):
        kind = "timed out"
    elif isinstance(e, httpx.ReadError | httpx.RemoteProtocolError):  # connected, then cut mid-answer
        kind = f"dropped the connection mid-answer ({type(e).__name__})"
    else:
        kind = f"could not be reached ({type(e).__name__})"
    return ModelError(
        f"{name} at {base_url} {kind}: check {setting} and that the server runs",
        provider=provider,
        model=name,
        retryable=True,
    )


def redirect_error(
    status: int, headers: httpx.Headers, *, name: str, base_url: str, setting: str, provider: str
) -> ModelError:
    """A model call answered with a redirect, which is never followed: the key would go wherever the
    server says. It read as "not Chat Completions JSON: check that OPENAI_BASE_URL is the API's address,
    not a web page's", retried five times, without the address it pointed to: http:// to a server that
    moves callers to https://, a path the server moved, or a captive portal's login page."""
    where = headers.get("location", "")[:300]  # a hostile server's header is shown, so bounded
    try:
        same_host = urlsplit(urljoin(f"{base_url}/", where)).hostname == urlsplit(base_url).hostname
    except ValueError:  # "http://[::1" raises: a Location no client could follow
        same_host = False
    if not where:
        fix = f"check {setting}"
    elif same_host:  # https://, or a path the server moved
        fix = f"if that is where the API is now, set {setting} to its base"
    else:
        fix = f"if the API moved there, set {setting} to its base; a login page (captive portal, proxy) wants you to sign in"
    return NoApiAtURLError(  # the base URL is what to fix; another provider's model may still serve
        f"{name}: {base_url} answered HTTP {status}, a redirect to {where or 'no address'}, which agentbot "
        f"does not follow (the API key would go along): {fix}",
        quoted=(where,),
        provider=provider,
        model=name,
        status=status,
    )


def tls_problem(e: BaseException, setting: str) -> str | None:
    """An https:// URL's failure said with what to change ("could not be reached: check that the server
    runs" sent operators to a server that ran): https to a plain-HTTP server (Ollama, llama.cpp and vLLM
    serve http://), or a certificate this machine does not trust (a self-signed or company CA)."""
    said = str(e)
    if "WRONG_VERSION_NUMBER" in said or "record layer failure" in said:
        return f"answered plain HTTP to https://: write http:// in {setting}"
    if "CERTIFICATE_VERIFY_FAILED" in said:
        why = said.partition("certificate verify failed:")[2].partition("(_ssl")[0].strip() or "not trusted"
        return (
            f"has a TLS certificate this machine does not trust ({why}): point the environment variable "
            f"SSL_CERT_FILE (not .env) at the CA bundle that signed it, or check {setting}"
        )
    return None


def _read_timeout(e: httpx.ReadTimeout) -> str:
    try:
        return f"{e.request.extensions['timeout']['read']:g} s"
    except (RuntimeError, KeyError, TypeError, ValueError):
        return "the read timeout"
