"""The one error family adapters raise; vendors' own exceptions never cross this boundary.

    ProviderError                  retryable=False unless a subclass says otherwise
     ├── ProviderUnavailable       5xx, refused or dropped connection: retrying can help
     │    └── ProviderRateLimited  429; carries the vendor's Retry-After when sent
     └── ProviderRejected          4xx: this request will fail the same way again
          └── ProviderMisconfigured 401/403/404 or no credentials: the route is broken, not the
                                    request, so another route (or a fixed key) can answer it

`message` is written for operators and logs; it never holds a key or a raw vendor body.
"""

from __future__ import annotations


class ProviderError(Exception):
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    retryable = True


class ProviderRateLimited(ProviderUnavailable):
    pass


class ProviderRejected(ProviderError):
    retryable = False


class ProviderMisconfigured(ProviderRejected):
    pass


def error_for_status(status_code: int, message: str,
                     retry_after: float | None = None) -> ProviderError:
    """The error class an HTTP status from a vendor maps to."""
    if status_code == 429:
        return ProviderRateLimited(message, status_code=status_code, retry_after=retry_after)
    # 408 and 409 are transient at the vendors too; their own SDKs retry them.
    if status_code >= 500 or status_code in (408, 409):
        return ProviderUnavailable(message, status_code=status_code, retry_after=retry_after)
    # A refused key, or (for a model API) an unknown model: the route is wrong, not the request.
    if status_code in (401, 403, 404):
        return ProviderMisconfigured(message, status_code=status_code)
    return ProviderRejected(message, status_code=status_code)
