"""Reading form posts safely: bounded body, bounded fields, no line breaks.

Every value of every field is checked, known or not: a CR, LF or NUL anywhere is
refused (400), so no submitted value can ever start a mail header or log line; so
are bytes that are not UTF-8 (Starlette would turn them into U+FFFD and we would
store that as an address).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from starlette.datastructures import FormData
from starlette.requests import Request

MAX_BODY = 16 * 1024  # the largest legitimate form (preferences with many topics) is far below
MAX_FIELDS = 100
FORBIDDEN = ("\r", "\n", "\x00")


class BadForm(Exception):
    """The post is malformed or breaks a limit; ``status`` is the HTTP answer (400 or 413)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Form:
    """A checked form: single-line values within their length limits."""

    data: FormData

    def get(self, name: str) -> str:
        value = self.data.get(name, "")
        return value if isinstance(value, str) else ""

    def getlist(self, name: str) -> list[str]:
        return [v for v in self.data.getlist(name) if isinstance(v, str)]


async def read_form(request: Request, limits: dict[str, int], *, default_limit: int = 200) -> Form:
    """Parse a urlencoded or multipart post; BadForm if it is too big or any value is unsafe.

    ``limits`` maps field names to their maximum length in characters; fields not
    named there get ``default_limit``. Files are refused.
    """
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise BadForm("the form is too large", status=413)
    body = bytearray()
    # Read the stream ourselves: a chunked body has no Content-Length to check.
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadForm("the form is too large", status=413)
    _check_utf8(
        bytes(body),
        urlencoded=request.headers.get("content-type", "").split(";")[0].strip().lower()
        == "application/x-www-form-urlencoded",
    )
    request._body = bytes(body)  # Starlette's form parser reads the cached body from here
    try:
        data = await request.form(max_files=0, max_fields=MAX_FIELDS)
    except Exception as exc:  # python-multipart and Starlette raise several kinds for garbage
        raise BadForm("the form could not be read") from exc
    for key, value in data.multi_items():
        if not isinstance(value, str):
            raise BadForm("files are not accepted")
        if any(ch in key or ch in value for ch in FORBIDDEN):
            raise BadForm("a field contains a line break or NUL character")
        if len(value) > limits.get(key, default_limit):
            raise BadForm(f"the field {key[:40]!r} is too long")
    return Form(data)


def _check_utf8(body: bytes, *, urlencoded: bool) -> None:
    """BadForm unless the body, and every percent-decoded name and value of a urlencoded one, is UTF-8.

    (Files are refused, so a multipart body is text too; Starlette would decode its
    parts with a silent Latin-1 fallback.)
    """
    try:
        body.decode("utf-8")
        if urlencoded:
            for pair in body.split(b"&"):
                for part in pair.split(b"=", 1):
                    unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise BadForm("a field is not UTF-8 text") from None
