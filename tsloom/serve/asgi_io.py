"""Small ASGI helpers shared by the guard middleware and the prediction fast lane: read a
body under a size limit, and give what was read to the next layer again."""

from __future__ import annotations

from starlette.types import Message, Receive

__all__ = ["BodyTooLarge", "disconnected", "read_body", "replay"]


class BodyTooLarge(Exception):
    """A request body grew past the limit while streaming in; `messages` are those read
    so far (for a layer that hands the request on)."""

    def __init__(self, messages: list[Message] | None = None) -> None:
        super().__init__("request body too large")
        self.messages = messages or []


async def read_body(receive: Receive, limit: int) -> tuple[bytes | None, list[Message]]:
    """The whole body (None if the client left first) and the messages it came in;
    :class:`BodyTooLarge` past `limit` bytes."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        size += len(message.get("body", b""))
        if size > limit:
            raise BodyTooLarge(messages)
        if not message.get("more_body", False):
            break
    if len(messages) == 1:
        return messages[0].get("body", b""), messages
    return b"".join(m.get("body", b"") for m in messages), messages


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives `messages` again, then what `receive` gives."""
    pending = list(messages)

    async def again() -> Message:
        return pending.pop(0) if pending else await receive()

    return again


async def disconnected() -> Message:
    """The receive for a response sent after the body was read: nothing more comes."""
    return {"type": "http.disconnect"}
