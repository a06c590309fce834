"""A client that retries a payment safely: one key per operation, full-jitter backoff."""

import random
import uuid

import anyio
import httpx

# --8<-- [start:client]
#: Worth another try, with the same key: in flight (409), too early or too
#: many (425, 429), the server or a gateway in trouble (5xx).
RETRY = frozenset({409, 425, 429, 500, 502, 503, 504})


async def post_once(
    client: httpx.AsyncClient,
    url: str,
    payload: object,
    *,
    key: str | None = None,
    attempts: int = 6,
    base: float = 0.25,
    cap: float = 8.0,
) -> httpx.Response:
    """POST `payload` so that it takes effect once, however often it is sent.

    The key is made once per operation, never per attempt: a retry must
    send the same one, or the server cannot know it is a retry. Between
    attempts the client sleeps a random time up to `base * 2**attempt`
    seconds (capped): full jitter, so that clients that failed together
    do not retry together. A `Retry-After` in seconds is waited at least.
    """
    # An sf-string, as the draft writes it (the layer takes a bare key too).
    headers = {"Idempotency-Key": f'"{key or uuid.uuid4()}"'}
    for attempt in range(attempts):
        error: httpx.TransportError | None = None
        try:
            response = await client.post(url, json=payload, headers=headers)
        except httpx.TransportError as exc:
            error = exc  # no answer: it may have run, and the key makes asking again safe
        else:
            if response.status_code not in RETRY:
                return response  # done (201, or a replay of it), or a 4xx to fix, not to retry
        if attempt == attempts - 1:
            break
        delay = random.uniform(0, min(cap, base * 2**attempt))  # noqa: S311 - jitter, not a secret
        retry_after = response.headers.get("retry-after", "") if error is None else ""
        if retry_after.isdigit():
            delay = max(delay, float(retry_after))
        await anyio.sleep(delay)
    if error is not None:
        raise error
    return response


# --8<-- [end:client]
