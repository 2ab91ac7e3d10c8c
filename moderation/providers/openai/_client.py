"""Building the SDK client: ``AsyncOpenAI`` over the aiohttp transport, SDK retries off.

The SDK reads ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` itself (OpenAI, Azure's
OpenAI-compatible endpoint, vLLM, Ollama, a local fake); we only check that a key is
there before anything is sent, so a policy that needs the API fails with a clear
:class:`ConfigError` instead of a stack trace or a quarantined dataset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import openai
from openai import AsyncOpenAI, DefaultAioHttpClient

from moderation._redact import install_http_log_filters
from moderation.errors import ConfigError

__all__ = ["DEFAULT_TIMEOUT", "build_client", "check_credentials", "client_for_provider"]

DEFAULT_TIMEOUT = 60.0
"""Seconds per HTTP attempt (connect, read and write each)."""


def check_credentials(environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` unless ``OPENAI_API_KEY`` is set (and not blank)."""
    env = os.environ if environ is None else environ
    if not env.get("OPENAI_API_KEY", "").strip():
        raise ConfigError(
            "OPENAI_API_KEY is not set, but the policy uses the OpenAI API. Set"
            " OPENAI_API_KEY (and OPENAI_BASE_URL for an OpenAI-compatible server such as"
            " Azure, vLLM or Ollama; any non-empty key for servers that need none), or use"
            " the 'offline' policy."
        )


def build_client(
    *,
    timeout: float = DEFAULT_TIMEOUT,
    environ: Mapping[str, str] | None = None,
) -> AsyncOpenAI:
    """An ``AsyncOpenAI`` client for the providers: aiohttp transport, ``max_retries=0``
    (our retry loop sees every 429), ``timeout`` seconds per attempt.

    ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` come from ``environ`` (default: the
    process environment). The caller owns the client and closes it (``await
    client.close()``). Raises :class:`ConfigError` when no key is set.
    """
    check_credentials(environ)
    # Whoever logs the SDK's records (an app, a notebook), they carry no key and no body.
    install_http_log_filters()
    # From the process environment the SDK reads the variables itself (and the others
    # it knows, e.g. OPENAI_ORG_ID); an explicit mapping is passed through.
    api_key = base_url = None
    if environ is not None:
        api_key = environ["OPENAI_API_KEY"].strip()
        base_url = environ.get("OPENAI_BASE_URL") or None
    try:
        return AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            http_client=DefaultAioHttpClient(timeout=timeout),
            max_retries=0,
            timeout=timeout,
        )
    except openai.OpenAIError as exc:
        raise ConfigError(f"cannot configure the OpenAI client: {exc}") from None


def client_for_provider(
    client: AsyncOpenAI | None, *, timeout: float | None, default_timeout: float
) -> tuple[AsyncOpenAI, bool]:
    """The client a provider sends with, and whether the provider owns it (and closes it).

    ``client`` is used as given (the caller keeps it) but with the SDK's own retries off:
    every 429 must reach our rate limiter. When ``None``, one is built from the
    environment. ``timeout`` (seconds per attempt) overrides the client's.
    """
    owned = client is None
    if client is None:
        client = build_client(timeout=default_timeout if timeout is None else timeout)
    if timeout is None:
        return client.with_options(max_retries=0), owned
    return client.with_options(max_retries=0, timeout=timeout), owned
