"""One Twilio gateway, many threads sending at once (the worker sends from its agents and its
sweep): each send must come back with the SID of *its* message, or a notification row records
another's SID and the SMS it did send is owned by nobody."""

from __future__ import annotations

import threading

from infra.twilio_stub import DEFAULT_FROM_NUMBER, TwilioStub
from notifiers.twilio_gateway import TwilioGateway


def test_concurrent_sends_each_get_their_own_sid() -> None:
    with TwilioStub() as stub:
        gateway = TwilioGateway(stub.account_sid, stub.auth_token, from_number=DEFAULT_FROM_NUMBER,
                                api_base_url=stub.base_url, timeout=10.0)
        answers: dict[str, str] = {}
        lock = threading.Lock()
        start = threading.Barrier(8)

        clients: set[int] = set()

        def sender(t: int) -> None:
            start.wait()
            with lock:
                # twilio's HTTP client hands back the response it kept on itself: a window
                # too narrow to hit on demand, so check no two threads share one.
                clients.add(id(gateway._client))
            for i in range(15):
                body = f"message {t}-{i}"
                sid = gateway.send(f"+8210{t:04d}{i:04d}", body).sid
                with lock:
                    answers[body] = sid

        threads = [threading.Thread(target=sender, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(clients) == 8
        assert len(answers) == 8 * 15
        assert len(set(answers.values())) == len(answers)  # no SID handed out twice
        for body, sid in answers.items():
            message = stub.get(sid)
            assert message is not None and message["body"] == body
