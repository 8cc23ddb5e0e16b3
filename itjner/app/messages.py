"""Messages for users: the error type the app shows as is, and Markdown that renders text literally."""
from __future__ import annotations

import re
from typing import Any


class UserError(ValueError):
    """Something the user can fix; the message is shown as is."""


def md_escape(text: Any) -> str:
    """Text for a Markdown message, shown literally: every ASCII punctuation character backslash-escaped (CommonMark),
    so no emphasis, link or HTML tag can come out of it. (Gradio's Markdown escapes HTML entities itself, so
    html.escape would show up as "&amp;lt;".)"""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", str(text)).replace("\n", " ")


def md_code(text: Any) -> str:
    """Text as a Markdown code span (rendered literally, HTML included)."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"
