"""Moving a client's traffic from the old server to lipsync through nginx, under load.

One client thread keeps sending small InferBatchComposite calls through nginx while the upstream
weights go 100/0 -> 90/10 -> 50/50 -> 0/100 (old/lipsync; `nginx -s reload` each time), and then
lipsync is drained: a stop signal turns its /readyz to 503 while it keeps serving, the balancer
(played by the test) sees that and takes it out, and a second signal stops it. No call may fail;
each phase's shares come from the servers' own request counters. The client retries UNAVAILABLE
as gRPC's retry policy does (see migration_util.RETRY_UNAVAILABLE): without it, a call that met
nginx's reload GOAWAY failed in 8 of 13 runs of this test. By the second signal no call is left
on lipsync here, so whether lipsync finishes calls in flight when stopped is test_drain.py's to
show."""
import os
import signal
import threading

import pytest

import migration_util as mu

BIN = os.environ["LIPSYNC_BIN"]
CALLS_PER_PHASE = 40  # nginx's weighted round robin is deterministic: 4 lipsync calls in 40 at 9:1


@pytest.fixture(scope="module")
def nginx_binary():
    found = mu.find_nginx()
    if not found:
        pytest.skip("nginx not found (Debian package nginx-light): the migration test needs it")
    return found


class LoadClient(threading.Thread):
    """Sends calls of 1 to 3 frames back to back through one channel until stopped; counts
    successes and keeps every failure."""

    def __init__(self, pb, pb_grpc, target):
        super().__init__(daemon=True)
        self.pb = pb
        self.channel = mu.channel(target, retry_unavailable=True)
        self.stub = pb_grpc.MonolithicServiceStub(self.channel)
        self.ok = 0
        self.failures = []
        self.cond = threading.Condition()
        self.stopping = False

    def run(self):
        i = 0
        while True:
            with self.cond:
                if self.stopping:
                    return
            batch = 1 + i % 3
            try:
                reply = self.stub.InferBatchComposite(
                    mu.composite_request(self.pb, batch, seed=i, start_frame=i), timeout=120)
                error = None if reply.success and len(reply.composited_frames) == batch else (
                    f"success={reply.success} frames={len(reply.composited_frames)} "
                    f"error={reply.error!r}")
            except Exception as e:  # a gRPC error is a failed call to report
                error = repr(e)
            with self.cond:
                if error:
                    self.failures.append(error)
                else:
                    self.ok += 1
                self.cond.notify_all()
            i += 1

    def wait_for_calls(self, count, timeout=300):
        """Blocks until `count` more calls have succeeded (or any failed)."""
        with self.cond:
            target = self.ok + count
            done = self.cond.wait_for(lambda: self.ok >= target or self.failures, timeout)
            assert done, f"only {self.ok - target + count} of {count} calls in {timeout} s"
            assert not self.failures, self.failures

    def stop(self):
        with self.cond:
            self.stopping = True
        self.join(300)
        self.channel.close()


def test_shift_traffic_then_drain_lipsync(nginx_binary, tmp_path):
    avatars = str(tmp_path / "avatars")
    mu.make_avatar(avatars)
    pb, pb_grpc = mu.load_stubs(tmp_path / "stubs")
    old = mu.start_old_server(avatars, str(tmp_path))
    # Stop signals start a drain of up to 120 s with /readyz at 503; a second one ends it.
    new = mu.start_lipsync(BIN, avatars, str(tmp_path), extra=["--drain-delay-s", "120"])
    balancer = mu.Nginx(nginx_binary, {"old": old.port, "new": new.port})
    client = None
    try:
        old_stub = pb_grpc.MonolithicServiceStub(mu.channel(f"127.0.0.1:{old.port}"))
        new_stub = pb_grpc.MonolithicServiceStub(mu.channel(f"127.0.0.1:{new.port}"))
        readyz = f"http://127.0.0.1:{new.metrics_port}/readyz"
        assert mu.http_status(readyz) == 200

        def counts():
            return mu.request_count(old_stub), mu.request_count(new_stub)

        balancer.start({"old": 1})
        client = LoadClient(pb, pb_grpc, f"127.0.0.1:{balancer.port}")
        client.start()
        shares = {}
        for label, weights in [("100/0", {"old": 1}), ("90/10", {"old": 9, "new": 1}),
                               ("50/50", {"old": 1, "new": 1}), ("0/100", {"new": 1})]:
            if label != "100/0":
                balancer.set_weights(weights)
            before = counts()
            client.wait_for_calls(CALLS_PER_PHASE)
            after = counts()
            d_old, d_new = after[0] - before[0], after[1] - before[1]
            # A call the server counted just before `before` may reach the client just after it.
            assert d_old + d_new >= CALLS_PER_PHASE - 1, (label, before, after)
            shares[label] = d_new / (d_old + d_new)
            print(f"{label}: old {d_old} calls, lipsync {d_new} calls, "
                  f"lipsync share {100 * shares[label]:.1f}%")
        assert shares["100/0"] == 0.0
        assert 0.03 <= shares["90/10"] <= 0.25, shares
        assert 0.30 <= shares["50/50"] <= 0.70, shares
        assert shares["0/100"] == 1.0

        # Drain: lipsync turns unready but keeps serving until the balancer has taken it out.
        new.proc.send_signal(signal.SIGTERM)
        new.wait_for(r"unready")
        assert mu.http_status(readyz) == 503
        unready_count = mu.request_count(new_stub)
        client.wait_for_calls(3)
        assert mu.request_count(new_stub) >= unready_count + 2  # served while unready
        balancer.set_weights({"old": 1})  # the balancer acts on /readyz
        new.proc.send_signal(signal.SIGTERM)  # taken out: stop now
        assert new.proc.wait(60) == 0, new.output()[-3000:]
        before_old = mu.request_count(old_stub)
        client.wait_for_calls(CALLS_PER_PHASE)
        assert mu.request_count(old_stub) - before_old >= CALLS_PER_PHASE - 1
        client.stop()
        assert not client.failures, client.failures
        print(f"{client.ok} calls, none failed")
    finally:
        if client and client.is_alive():
            client.stop()
        balancer.stop()
        if new.proc.poll() is None:  # a first signal may have started the drain delay
            new.proc.send_signal(signal.SIGTERM)
        new.stop()
        old.stop()
