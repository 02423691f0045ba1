"""The one error type for what a client sent: everything else that escapes a request is ours.

The OGC API answers a QueryError with 400 and its message, word for word, so the message says
what was wrong with the request and nothing about the server. Any other exception is a server
fault: 500 with a fixed text, and the traceback goes to the log (DESIGN.md: what a user sees
never names a server path).
"""

from pygeoapi.provider.base import ProviderInvalidQueryError


class QueryError(ProviderInvalidQueryError):
    """A request parameter (bbox, filter, crs, limit, offset, property …) that cannot be served.

    A pygeoapi ProviderInvalidQueryError, so the views pygeoapi answers itself (f=csv, single
    items, queryables) turn it into the same 400 with the same message.
    """

    ogc_exception_code = 'InvalidParameterValue'

    def __init__(self, message: str):
        super().__init__(message, user_msg=message)

    def __str__(self):
        return self.user_msg
