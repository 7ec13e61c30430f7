"""The public hot-path API: reply parsing and DATA encoding.

``IMPLEMENTATION`` says which twin is in use: ``"cython"`` (the compiled
``smtpkit._speedups``) or ``"python"`` (``smtpkit._speedups_py``). Both behave identically;
see ``smtpkit._speedups_py`` for the exact rules.

>>> from smtpkit.speedups import ReplyParser, encode_data
>>> ReplyParser().feed(b"250-mx.example\\r\\n250 SIZE 1000\\r\\n")
[(250, b'mx.example\\nSIZE 1000')]
>>> encode_data(b"Subject: hi\\n\\n.hidden\\n")
b'Subject: hi\\r\\n\\r\\n..hidden\\r\\n.\\r\\n'
"""

from __future__ import annotations

from ._accel import IMPLEMENTATION, impl
from .reply import Reply

ReplyParser = impl.ReplyParser
DataEncoder = impl.DataEncoder
encode_data = impl.encode_data
MAX_LINE_LENGTH: int = impl.MAX_LINE_LENGTH
MAX_REPLY_BYTES: int = impl.MAX_REPLY_BYTES
MAX_REPLY_LINES: int = impl.MAX_REPLY_LINES
MAX_DATA_LINE_LENGTH: int = impl.MAX_DATA_LINE_LENGTH

__all__ = [
    "IMPLEMENTATION",
    "MAX_DATA_LINE_LENGTH",
    "MAX_LINE_LENGTH",
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINES",
    "DataEncoder",
    "Reply",
    "ReplyParser",
    "encode_data",
]
