"""A few lines of standard-library Python that speak Herald's HTTP gateway.

Publish CloudEvents with publish_batch (structured JSON batches) or
publish (binary mode); consume with a pull subscription: pull, then ack.
Nothing but urllib: see docs/http.md for the endpoints.
"""

import json
import os
import time
import urllib.error
import urllib.request
import uuid


class HeraldError(Exception):
    """An error answer of Herald: status and problem detail."""

    def __init__(self, status, problem):
        self.status = status
        self.problem = problem
        super().__init__(f"{status}: {problem.get('detail', problem)}")


class Herald:
    def __init__(self, url=None, token=None):
        # The admin address of herald serve (it serves the gateway too).
        self.url = (url or os.environ.get("HERALD_HTTP_URL", "http://127.0.0.1:8080")).rstrip("/")
        self.token = token or os.environ.get("HERALD_TOKEN")

    def _call(self, method, path, body=None, content_type="application/json", headers=None, timeout=60):
        data = None
        hdrs = {"Accept": "application/json"}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs["Content-Type"] = content_type
        if self.token:
            hdrs["Authorization"] = "Bearer " + self.token
        hdrs.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = {"detail": raw.decode(errors="replace")}
            raise HeraldError(e.code, problem) from None

    def publish_batch(self, topic, events):
        """Publish structured events; returns once the broker stored them all."""
        return self._call("POST", f"/v1/topics/{topic}/events", events,
                          content_type="application/cloudevents-batch+json")

    def publish(self, topic, type, source, data, subject=None, id=None, **extensions):
        """Publish one event in binary mode: attributes as ce- headers, data as the body."""
        headers = {"ce-specversion": "1.0", "ce-id": id or str(uuid.uuid4()),
                   "ce-source": source, "ce-type": type}
        if subject:
            headers["ce-subject"] = subject
        for k, v in extensions.items():
            headers["ce-" + k] = str(v)
        return self._call("POST", f"/v1/topics/{topic}/events", json.dumps(data).encode(),
                          headers=headers)

    def ensure_topic(self, topic):
        """Create topic unless it exists (admin calls)."""
        if any(t["topic"] == topic for t in self._call("GET", "/api/v1/topics")["topics"]):
            return
        self._call("PUT", f"/api/v1/topics/{topic}/retention", {"max_msgs": "unlimited"})

    def ensure_pull(self, group, topic, start="first", lease="30s"):
        """Create the pull subscription of group unless it exists."""
        try:
            self._call("POST", "/api/v1/subscriptions",
                       {"group": group, "topic": topic, "start": start, "lease": lease})
        except HeraldError as e:
            if e.status != 409:
                raise

    def pull(self, group, max=100, wait=5):
        """Leased events of group (up to max, waiting up to wait seconds for the first)."""
        return self._call("GET", f"/v1/groups/{group}/events?max={max}&wait={wait}",
                          timeout=wait + 30)["events"]

    def ack(self, group, leases):
        return self._call("POST", f"/v1/groups/{group}/ack", {"leases": leases})

    def nack(self, group, leases, delay="0s"):
        return self._call("POST", f"/v1/groups/{group}/nack", {"leases": leases, "delay": delay})


def new_event(type, source, data, subject=None, **extensions):
    """A structured-mode CloudEvent (a dict) with a fresh id."""
    e = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": source, "type": type,
         "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "datacontenttype": "application/json", "data": data}
    if subject:
        e["subject"] = subject
    e.update(extensions)
    return e
