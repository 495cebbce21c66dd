// A Notifly webhook receiver for an `ed25519` endpoint, in plain Node.js (no
// dependencies): it verifies with the endpoint's public key, which cannot sign.
//
//   NOTIFLY_WEBHOOK_PUBLIC_KEY=whpk_... node receiver-ed25519.js [port]
//
// `webhook-signature` holds space-separated `v1a,<base64>` entries: Ed25519
// signatures of "{webhook-id}.{webhook-timestamp}.{raw body}". One must verify
// and the timestamp must be recent. Duplicates are dropped by `webhook-id`.
// The test suite runs this file against real deliveries.
const http = require('http')
const crypto = require('crypto')

const publicKey = process.env.NOTIFLY_WEBHOOK_PUBLIC_KEY
if (!publicKey || !publicKey.startsWith('whpk_')) {
  console.error('set NOTIFLY_WEBHOOK_PUBLIC_KEY to the webhook public key (whpk_...)')
  process.exit(1)
}
// The raw 32-byte key, as a key object Node's crypto verifies with.
const key = crypto.createPublicKey({
  key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(publicKey.slice(5), 'base64').toString('base64url') },
  format: 'jwk',
})
const TOLERANCE_SECONDS = 5 * 60
const seen = new Set() // use a database table with a unique key in production

function verify(payload, headers) {
  const id = headers['webhook-id']
  const timestamp = headers['webhook-timestamp']
  const signatures = headers['webhook-signature']
  if (!id || !timestamp || !signatures) return false
  // Refuse old or future-dated requests (replays).
  if (!(Math.abs(Date.now() / 1000 - Number(timestamp)) <= TOLERANCE_SECONDS)) return false
  const signed = Buffer.concat([Buffer.from(`${id}.${timestamp}.`), payload])
  // During a key rotation there are two entries: either may verify.
  return signatures.split(' ').some((entry) => {
    if (!entry.startsWith('v1a,')) return false
    const signature = Buffer.from(entry.slice(4), 'base64')
    return signature.length === 64 && crypto.verify(null, signed, key, signature)
  })
}

const server = http.createServer((req, res) => {
  const chunks = []
  req.on('data', (c) => chunks.push(c))
  req.on('end', () => {
    const payload = Buffer.concat(chunks) // the raw bytes: never re-serialize JSON before verifying
    if (!verify(payload, req.headers)) {
      console.log(JSON.stringify({ verified: false, id: req.headers['webhook-id'] }))
      res.writeHead(401).end()
      return
    }
    res.writeHead(200).end() // answer fast; work happens after
    const id = req.headers['webhook-id']
    if (seen.has(id)) return // a retry of an event already handled
    seen.add(id)
    const event = JSON.parse(payload.toString('utf8'))
    const [resource, action] = event.type.split('.')
    console.log(JSON.stringify({ verified: true, id: event.id, type: event.type, resource, action, payload_id: event.payload.id }))
  })
})

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }))
})
