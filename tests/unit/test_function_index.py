"""The master's index of the minions' functions follows each minion's latest hello."""

from master.functions import FunctionIndex


def test_a_new_hello_replaces_the_minions_functions() -> None:
    index = FunctionIndex()
    index.update("a", frozenset({"test.ping", "cmd.run"}))
    index.update("b", frozenset({"test.ping"}))
    index.update("a", frozenset({"test.echo"}))  # upgraded: cmd.run gone from a
    assert index.names() == ["test.echo", "test.ping"]
    assert not index.known("cmd.run") and index.known("test.ping")
    assert index.reported("b") and not index.reported("c")
