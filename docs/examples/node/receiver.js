// A Notifly webhook receiver in plain Node.js (no framework, no dependencies).
//
//   NOTIFLY_WEBHOOK_SECRET=whsec_... node receiver.js [port]
//
// It verifies `x-notifly-signature` exactly as the guide shows, checks the
// Standard Webhooks timestamp to refuse replays, drops duplicates by
// `webhook-id`, answers 200 at once and handles the event afterwards.
// The test suite runs this file against real deliveries.
const http = require('http')
const crypto = require('crypto')

const secret = process.env.NOTIFLY_WEBHOOK_SECRET
if (!secret) {
  console.error('set NOTIFLY_WEBHOOK_SECRET to the webhook secret (whsec_...)')
  process.exit(1)
}
const TOLERANCE_SECONDS = 5 * 60
const seen = new Set() // use a database table with a unique key in production

function verify(payload, headers) {
  // The guide's check, over the raw body bytes:
  const signature = headers['x-notifly-signature']
  const hash = crypto.createHmac('sha256', secret).update(payload).digest('hex')
  if (typeof signature !== 'string' || signature.length !== hash.length) return false
  // Constant-time comparison, so timing reveals nothing about the signature.
  if (!crypto.timingSafeEqual(Buffer.from(hash), Buffer.from(signature))) return false
  // Refuse old or future-dated requests (replays).
  const timestamp = Number(headers['webhook-timestamp'])
  return Number.isFinite(timestamp) && Math.abs(Date.now() / 1000 - timestamp) <= TOLERANCE_SECONDS
}

function handle(event) {
  // Check the type attribute to see what happened; the part before the dot
  // names the payload's resource.
  const [resource, action] = event.type.split('.')
  console.log(JSON.stringify({ verified: true, id: event.id, type: event.type, resource, action, payload_id: event.payload.id }))
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
    setImmediate(() => handle(JSON.parse(payload.toString('utf8'))))
  })
})

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }))
})
