"""BackendClient.wait_for keeps what arrives with the message it waited for (real ZeroMQ sockets).

A busy machine lets a server's `views` and `done` reach the client before it polls: both come back from one poll.
wait_for(views) must leave `done` for the next wait_for (it used to drop it, and the next wait timed out: seen in
the loaded CI run). The sockets talk over ``inproc://``, where a message is in the peer's queue once sent, so the
four messages below are all waiting before the client reads: one batch, on every machine."""

import pytest
import zmq

from blender_addon.core import protocol
from blender_addon.core.client import BackendClient

pytestmark = pytest.mark.integration  # real sockets


def test_messages_after_the_awaited_one_in_the_same_batch_are_kept_in_order():
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    address = f"inproc://wait-for-{id(router)}"
    router.bind(address)
    client = BackendClient(address)
    try:
        client.ping("hello")
        assert router.poll(300_000), "the client's ping never arrived"
        identity = router.recv_multipart()[0]
        sent = [protocol.encode("progress", job="j1", phase="denoise", step=1, total=2),
                protocol.encode("pong", token="one"),
                protocol.encode("done", job="j1", artifacts=[]),
                protocol.encode("pong", token="two")]
        for frames in sent:
            router.send_multipart([identity, *frames])
        # inproc: all four are in the client's queue now, so its first poll returns them together
        collected = []
        first = client.wait_for(lambda m: m.type == "progress", 300, collected)
        assert first.get("step") == 1
        assert client.wait_for(lambda m: m.type == "done", 300, collected).get("job") == "j1"
        assert [m.get("token") for m in client.poll()] == ["two"]  # the rest of the batch, in order
        assert [m.type for m in collected] == ["progress", "pong", "done"]  # each seen once, in order
    finally:
        client.close()
        router.close(0)
