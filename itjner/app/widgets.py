"""Gradio components the app needs beyond the stock ones."""
from __future__ import annotations

import base64
import os
import tempfile
import types

import gradio as gr


def raw_image(**kwargs) -> gr.Image:
    """A gr.Image whose value reaches Python as the uploaded file's path, untouched. Stock gr.Image opens (and in
    RGB mode re-encodes) the upload before our code runs, so a corrupt or huge file would fail with Gradio's message
    instead of ours, and the bytes (the feature cache key) could change. Overridden on the instance, not by
    subclassing: a component subclass makes Gradio write a .pyi stub next to this file."""
    component = gr.Image(type="filepath", image_mode=None, **kwargs)

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.path:
            return str(payload.path)
        if payload.url and payload.url.startswith("data:"):
            _, _, b64 = payload.url.partition(",")
            fd, name = tempfile.mkstemp(prefix="upload-", dir=self.GRADIO_CACHE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.b64decode(b64))
            return name
        return None

    component.preprocess = types.MethodType(preprocess, component)
    return component
