// A webhook receiver written the way an integrator following the guide would:
// it checks `x-notifly-signature` with the guide's snippet, unchanged, and the
// Standard Webhooks headers with the reference `standardwebhooks` library.
// Usage: node verify-receiver.js SECRET_FILE
// The secret file holds one secret per line (several during a rotation).
// Prints {"port": N} once listening, then one JSON line per request.
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

server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }))
})
