"""The shop's payment service in Python: pulls OrderPlaced events over HTTP,
charges the card, publishes PaymentTaken or PaymentFailed, then acks.

    python3 payment_consumer.py            # runs until stopped
    python3 payment_consumer.py --count 50 # stops after 50 orders

An order that is not acked (the process died, say) comes back after its
lease; payments are published with an id derived from the order's, so a
second try stores the payment once.
"""

import argparse
import json
import sys

from herald_http import Herald

CARD_LIMIT = 100000  # cents, as in examples/shop


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", help="Herald's HTTP address (default $HERALD_HTTP_URL or http://127.0.0.1:8080)")
    p.add_argument("--orders", default="shop.orders")
    p.add_argument("--payments", default="shop.payments")
    p.add_argument("--group", default="payments-py")
    p.add_argument("--count", type=int, default=0, help="stop after this many orders (0: never)")
    a = p.parse_args()

    h = Herald(a.url)
    h.ensure_topic(a.payments)
    h.ensure_pull(a.group, a.orders)
    done = 0
    while a.count == 0 or done < a.count:
        leased = h.pull(a.group, max=100, wait=5)
        acks = []
        for item in leased:
            order = item["event"]
            if order["type"] != "shop.order.placed.v1":
                acks.append(item["lease"])
                continue
            o = order["data"]
            ext = {"correlationid": order.get("correlationid", order["id"]), "causationid": order["id"]}
            if o["total_cents"] > CARD_LIMIT:
                h.publish(a.payments, "shop.payment.failed.v1", "payments-py",
                          {"order_id": o["order_id"], "reason": "over the card limit"},
                          subject=o["order_id"], id="pay-" + order["id"], **ext)
            else:
                h.publish(a.payments, "shop.payment.taken.v1", "payments-py",
                          {"order_id": o["order_id"], "amount_cents": o["total_cents"]},
                          subject=o["order_id"], id="pay-" + order["id"], **ext)
            acks.append(item["lease"])
            done += 1
        if acks:
            h.ack(a.group, acks)
    print(json.dumps({"handled": done}))


if __name__ == "__main__":
    sys.exit(main())
