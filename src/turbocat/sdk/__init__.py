"""The turbocat Python client: ``Client`` talks to a turbocat server over HTTP.

It imports nothing else from turbocat, so it can be vendored or used against a remote server::

    from turbocat.sdk import Client
    with Client("http://127.0.0.1:8420", api_key="tc_...") as tc:
        for wf in tc.workflows.list():
            print(wf["kebab_name"])
"""

from turbocat.sdk.client import ApiError, Client

__all__ = ["ApiError", "Client"]
