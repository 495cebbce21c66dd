// A webhook receiver written the way an integrator following the guide would:
// it checks `x-notifly-signature` with the guide's snippet, unchanged, and the
// Standard Webhooks headers with the reference `standardwebhooks` library.
// An Ed25519 public key (`whpk_…`) is checked with Node's own crypto (OpenSSL)
// against the `v1a` entries, as the Standard Webhooks spec defines them.
// Usage: node verify-receiver.js SECRET_FILE
// The secret file holds one secret or public key per line (several during a
// rotation). Prints {"port": N} once listening, then one JSON line per
// request: per line of the file, `guide` (null for a public key) and
// `standard`.
const http = require('http')
const crypto = require('crypto')
const fs = require('fs')
const { Webhook } = require('standardwebhooks')

const secretFile = process.argv[2]

const server = http.createServer((req, res) => {
  const chunks = []
  req.on('data', (c) => chunks.push(c))
  req.on('end', () => {
    const payload = Buffer.concat(chunks).toString('utf8')
    const secrets = fs.readFileSync(secretFile, 'utf8').split('\n').filter((s) => s.length > 0)
    const result = { id: req.headers['webhook-id'], guide: [], standard: [] }
    for (const secret of secrets) {
      if (secret.startsWith('whpk_')) {
        result.guide.push(null)
        result.standard.push(verifyEd25519(secret, payload, req.headers))
        continue
      }
      // The guide's snippet, unchanged:
      const signature = req.headers['x-notifly-signature']
      const hash = crypto.createHmac('sha256', secret).update(payload).digest('hex')

      if (hash === signature) {
        // Request is verified
        result.guide.push(true)
      } else {
        // Request could not be verified
        result.guide.push(false)
      }

      try {
        new Webhook(secret).verify(payload, req.headers)
        result.standard.push(true)
      } catch (e) {
        result.standard.push(false)
      }
    }
    console.log(JSON.stringify(result))
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok')
  })
})

// Standard Webhooks, asymmetric: one of the space-separated `v1a,<base64>`
// entries must be the Ed25519 signature of `{id}.{timestamp}.{body}`, and the
// timestamp within five minutes.
function verifyEd25519(publicKey, payload, headers) {
  const id = headers['webhook-id']
  const timestamp = headers['webhook-timestamp']
  const signatures = headers['webhook-signature']
  if (!id || !timestamp || !signatures) return false
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return false
  const raw = Buffer.from(publicKey.slice('whpk_'.length), 'base64')
  const key = crypto.createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') },
    format: 'jwk',
  })
  const message = Buffer.from(`${id}.${timestamp}.${payload}`, 'utf8')
  return signatures.split(' ').some((entry) => {
    if (!entry.startsWith('v1a,')) return false
    const signature = Buffer.from(entry.slice(4), 'base64')
    return signature.length === 64 && crypto.verify(null, message, key, signature)
  })
}

server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }))
})
