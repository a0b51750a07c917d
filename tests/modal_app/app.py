"""The tiny Modal app the live suite runs against (``NSAI_WORK_MODAL_LIVE=1 make test-modal``
deploys it first): the functions of tests/integration/_modal_functions.py, which FakeModal
serves in every other run. Deploy it by hand with, from the repository's root:

    PYTHONPATH=. .venv/bin/modal deploy -m tests.modal_app.app --name nsai-work-test

This file is not collected by pytest (no test_ prefix) and is never run where Modal's cloud
cannot be reached.
"""

from __future__ import annotations

from typing import Any

import modal

app = modal.App("nsai-work-test")
# The functions' own module goes into the image, so that they (and the test app's exception
# type, which the caller unpickles) are the same code on both sides.
image = modal.Image.debian_slim(python_version="3.11").add_local_python_source("tests")


@app.function(image=image, timeout=600)
async def echo(payload: dict[str, Any]) -> Any:
    from tests.integration import _modal_functions as functions

    return await functions.echo(payload)


@app.function(image=image, timeout=600)
async def add(payload: dict[str, Any]) -> Any:
    from tests.integration import _modal_functions as functions

    return await functions.add(payload)


@app.function(image=image, timeout=600)
async def fail(payload: dict[str, Any]) -> Any:
    from tests.integration import _modal_functions as functions

    return await functions.fail(payload)


@app.function(image=image, timeout=600)
async def diverge(payload: dict[str, Any]) -> Any:
    from tests.integration import _modal_functions as functions

    return await functions.diverge(payload)


@app.function(image=image, timeout=600)
async def sleep(payload: dict[str, Any]) -> Any:
    from tests.integration import _modal_functions as functions

    return await functions.sleep(payload)


@app.function(image=image, timeout=3600)
async def hang(payload: dict[str, Any]) -> Any:
    from tests.integration import _modal_functions as functions

    return await functions.hang(payload)
