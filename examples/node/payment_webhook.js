// The shop's payment service in Node.js, as a push webhook: Herald POSTs
// each OrderPlaced event here (CloudEvents binary mode, signed); it
// checks the signature, charges the card, publishes PaymentTaken or
// PaymentFailed over HTTP and answers 204. An error answer (5xx) makes
// Herald retry; the payment id is derived from the order's, so a retry
// stores the payment once.
//
//   HERALD_WEBHOOK_SECRET=whsec_... node payment_webhook.js --port 3000
//   herald subscribe --group payments-node --topic shop.orders \
//     --push http://127.0.0.1:3000/ --secret "$HERALD_WEBHOOK_SECRET"
'use strict';

const http = require('node:http');
const { parseArgs } = require('node:util');
const { publish, verify } = require('./herald');

const CARD_LIMIT = 100000; // cents, as in examples/shop

const { values: a } = parseArgs({
  options: {
    url: { type: 'string' },
    port: { type: 'string', default: '3000' },
    payments: { type: 'string', default: 'shop.payments' },
  },
});
const secret = process.env.HERALD_WEBHOOK_SECRET;
if (!secret) {
  console.error('set HERALD_WEBHOOK_SECRET to the subscription secret');
  process.exit(2);
}

async function handle(req, body) {
  if (!verify(secret, req.headers, body)) return 401;
  if (req.headers['ce-type'] !== 'shop.order.placed.v1') return 204;
  const order = JSON.parse(body.toString());
  const id = req.headers['ce-id'];
  const ext = { correlationid: req.headers['ce-correlationid'] || id, causationid: id };
  const paid = order.total_cents <= CARD_LIMIT;
  await publish(a.url, a.payments, {
    id: `pay-${id}`,
    source: 'payments-node',
    type: paid ? 'shop.payment.taken.v1' : 'shop.payment.failed.v1',
    subject: order.order_id,
    data: paid ? { order_id: order.order_id, amount_cents: order.total_cents } : { order_id: order.order_id, reason: 'over the card limit' },
    extensions: ext,
  });
  return 204;
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    handle(req, Buffer.concat(chunks))
      .then((code) => { res.writeHead(code); res.end(); })
      .catch((err) => { console.error(err.message); res.writeHead(503); res.end(); });
  });
});
server.listen(Number(a.port), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
