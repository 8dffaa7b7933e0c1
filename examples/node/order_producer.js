// The shop's order producer in Node.js: publishes OrderPlaced events to
// Herald over HTTP, in batches.
//
//   node order_producer.js --count 1000 --batch 100
'use strict';

const crypto = require('node:crypto');
const { parseArgs } = require('node:util');
const { publishBatch, ensureTopic } = require('./herald');

async function main() {
  const { values: a } = parseArgs({
    options: {
      url: { type: 'string' },
      topic: { type: 'string', default: 'shop.orders' },
      count: { type: 'string', default: '1000' },
      batch: { type: 'string', default: '100' },
    },
  });
  const count = Number(a.count);
  const size = Number(a.batch);
  await ensureTopic(a.url, a.topic);
  const start = process.hrtime.bigint();
  let sent = 0;
  while (sent < count) {
    const batch = [];
    for (let i = sent; i < Math.min(sent + size, count); i++) {
      const orderId = `o-${i}`;
      batch.push({
        specversion: '1.0', id: crypto.randomUUID(), source: 'orders-node', type: 'shop.order.placed.v1',
        subject: orderId, time: new Date().toISOString(), datacontenttype: 'application/json',
        correlationid: `checkout-${orderId}`,
        data: { order_id: orderId, customer: `c-${i % 97}`, sku: 'sku-1', quantity: 1 + (i % 3), total_cents: 500 + ((i * 7919) % 150000) },
      });
    }
    const answer = await publishBatch(a.url, a.topic, batch);
    sent += answer.accepted;
  }
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(JSON.stringify({ published: sent, seconds: secs, events_per_second: Math.round(sent / secs) }));
}

main().catch((err) => { console.error(err); process.exit(1); });
