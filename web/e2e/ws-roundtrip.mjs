// An MQTT client over WebSocket, as the web phone's broker link is, for
// tests/test_ws_bridge.py: it connects to URL (subprotocol "mqtt", MQTT v5),
// subscribes to TOPIC/in, and publishes TOPIC/out: first "hello over websocket",
// then every message it receives, unchanged. It prints one JSON line per step:
//   {"ready": true}                          subscribed
//   {"received": N, "sha256": HEX}           a message came in
//   {"closed": true}                         the connection ended
// Usage: node ws-roundtrip.mjs URL TOPIC

import { createHash } from 'node:crypto';
import mqtt from 'mqtt';

const [url, topic] = process.argv.slice(2);
if (!url || !topic) {
  console.error('usage: node ws-roundtrip.mjs URL TOPIC');
  process.exit(2);
}

const say = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);

const client = mqtt.connect(url, {
  protocolVersion: 5,
  reconnectPeriod: 0,
  connectTimeout: 10_000,
  will: { topic: `${topic}/will`, payload: 'gone', qos: 1 },
});

client.on('connect', async () => {
  await client.subscribeAsync(`${topic}/in`, { qos: 1 });
  await client.publishAsync(`${topic}/out`, 'hello over websocket', { qos: 1 });
  say({ ready: true });
});

client.on('message', async (_topic, payload) => {
  say({ received: payload.length, sha256: createHash('sha256').update(payload).digest('hex') });
  await client.publishAsync(`${topic}/out`, payload, { qos: 1 });
});

client.on('error', (error) => {
  console.error(`ws-roundtrip: ${error.message}`);
  process.exit(1);
});

client.on('close', () => {
  say({ closed: true });
  process.exit(0);
});
