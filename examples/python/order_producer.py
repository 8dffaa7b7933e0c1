"""The shop's order producer in Python: publishes OrderPlaced events to Herald over HTTP.

    python3 order_producer.py --count 1000 --batch 100

Each batch returns once Herald's broker confirmed every event in it.
"""

import argparse
import json
import random
import sys
import time

from herald_http import Herald, new_event


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", help="Herald's HTTP address (default $HERALD_HTTP_URL or http://127.0.0.1:8080)")
    p.add_argument("--topic", default="shop.orders")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--batch", type=int, default=100)
    a = p.parse_args()

    h = Herald(a.url)
    h.ensure_topic(a.topic)
    start = time.monotonic()
    sent = 0
    while sent < a.count:
        batch = []
        for i in range(sent, min(sent + a.batch, a.count)):
            order_id = f"o-{i}"
            batch.append(new_event(
                "shop.order.placed.v1", "orders-py",
                {"order_id": order_id, "customer": f"c-{i % 97}", "sku": "sku-1",
                 "quantity": 1 + i % 3, "total_cents": random.randint(500, 150000)},
                subject=order_id, correlationid="checkout-" + order_id))
        answer = h.publish_batch(a.topic, batch)
        sent += answer["accepted"]
    secs = time.monotonic() - start
    print(json.dumps({"published": sent, "seconds": round(secs, 3),
                      "events_per_second": round(sent / secs) if secs else None}))


if __name__ == "__main__":
    sys.exit(main())
