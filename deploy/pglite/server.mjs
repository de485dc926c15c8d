#!/usr/bin/env node
// Test-only PostgreSQL + TimescaleDB stand-in: PGlite (TimescaleDB build) served
// over the PostgreSQL wire protocol. One client connection at a time; further
// connections wait in a queue until the current one disconnects.
//
//   node server.mjs [--port 55432] [--host 127.0.0.1] [--data DIR] [--debug]
//
// Prints exactly one line "READY <port>" to stdout once listening (with
// --port 0 the OS picks the port). Diagnostics go to stderr.
import net from 'node:net'
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'
import { PGLiteSocketHandler } from '@electric-sql/pglite-socket'

const USAGE = 'usage: node server.mjs [--port 55432] [--host 127.0.0.1] [--data DIR] [--debug]\n'

function parseArgs(argv) {
  const opts = { port: 55432, host: '127.0.0.1', data: null, debug: false }
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]
    let value
    const eq = arg.indexOf('=')
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1)
      arg = arg.slice(0, eq)
    }
    const next = () => {
      if (value !== undefined) return value
      if (i + 1 >= argv.length) throw new Error(`missing value for ${arg}`)
      return argv[++i]
    }
    switch (arg) {
      case '--port': {
        const raw = next()
        opts.port = Number(raw)
        if (!/^\d+$/.test(raw) || opts.port > 65535) throw new Error(`invalid --port ${raw}`)
        break
      }
      case '--host':
        opts.host = next()
        break
      case '--data':
        opts.data = next()
        break
      case '--debug':
        opts.debug = true
        break
      case '-h':
      case '--help':
        process.stderr.write(USAGE)
        process.exit(0)
        break
      default:
        throw new Error(`unknown argument: ${arg}`)
    }
  }
  return opts
}

let opts
try {
  opts = parseArgs(process.argv.slice(2))
} catch (err) {
  process.stderr.write(`server.mjs: ${err.message}\n${USAGE}`)
  process.exit(2)
}

const log = (msg) => process.stderr.write(`[pglite] ${msg}\n`)
const debug = (msg) => opts.debug && log(msg)

const db = await PGlite.create({
  dataDir: opts.data ?? undefined, // undefined => in-memory database
  extensions: { timescaledb },
})

// --- protocol helpers ---------------------------------------------------------
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const TYPE_QUERY = 0x51 // 'Q'
const TYPE_PARSE = 0x50 // 'P'
const TYPE_SYNC = 0x53 // 'S'
const TYPE_TERMINATE = 0x58 // 'X'

function typedMessage(type, body) {
  const msg = Buffer.alloc(5 + body.length)
  msg[0] = type
  msg.writeInt32BE(4 + body.length, 1)
  body.copy(msg, 5)
  return new Uint8Array(msg)
}
const SYNC_MSG = typedMessage(TYPE_SYNC, Buffer.alloc(0))

// PGlite's WASM backend is started with "-c search_path=pg_catalog" and then
// runs "SET search_path TO public"; startup-packet options and ALTER
// DATABASE/ROLE ... SET are not applied. So RESET ALL / DISCARD ALL (asyncpg's
// pool runs RESET ALL on every release) would leave search_path = pg_catalog
// and unqualified tables would "not exist". Put back the usual default after
// such statements (and between clients).
const RESTORE_SEARCH_PATH = 'SET search_path TO "$user", public'
const RESTORE_SEARCH_PATH_MSG = typedMessage(TYPE_QUERY, Buffer.from(RESTORE_SEARCH_PATH + '\0'))
const RESET_RE = /\b(?:RESET\s+(?:ALL|search_path)|DISCARD\s+ALL)\b/i

/** Does this Query ('Q') or Parse ('P') message reset search_path? */
function resetsSearchPath(msg) {
  const type = msg[0]
  if (type !== TYPE_QUERY && type !== TYPE_PARSE) return false
  let start = 5
  if (type === TYPE_PARSE) start = msg.indexOf(0, 5) + 1 // skip statement name
  const end = msg.indexOf(0, start)
  return RESET_RE.test(msg.toString('utf8', start, end < 0 ? msg.length : end))
}

// --- connection handler ---------------------------------------------------------
// PGLiteSocketHandler (pglite-socket 0.0.20) provides attach/detach, the
// exclusive lock on the PGlite instance and close/error events, but its
// handleData passes every TCP chunk straight to PGlite and writes the reply
// asynchronously. Two problems with that:
//  * a protocol message split across TCP chunks (e.g. a Bind carrying a
//    200 KB parameter) crashes the WASM backend ("RuntimeError: unreachable");
//  * PGlite returns a view into a reused receive buffer, so a second chunk
//    arriving before the first reply is written overwrites that reply.
// This subclass buffers the stream, hands PGlite only whole messages, one
// batch at a time, and copies each reply before anything else runs.
class FramedHandler extends PGLiteSocketHandler {
  pending = Buffer.alloc(0)
  startup = true // until the StartupMessage has been passed on
  restorePath = false
  chain = Promise.resolve()

  handleData(chunk) {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk
    const batch = []
    let terminate = false
    let off = 0
    while (!terminate) {
      const rest = this.pending.length - off
      if (this.startup) {
        // untyped startup-phase packet: int32 length (self-inclusive) + int32 code + ...
        if (rest < 8) break
        const len = this.pending.readInt32BE(off)
        if (len < 8 || len > 10000) {
          terminate = true
          break
        }
        if (rest < len) break
        const code = this.pending.readInt32BE(off + 4)
        off += len
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          this.enqueue(() => this.socket?.write('N')) // no SSL/GSSAPI: continue in plaintext
        } else if (code === CANCEL_REQUEST) {
          terminate = true // query cancellation is not supported
        } else {
          batch.push(this.pending.subarray(off - len, off))
          this.startup = false
        }
      } else {
        // typed message: byte type + int32 length (self-inclusive, without the type byte)
        if (rest < 5) break
        const len = 1 + this.pending.readInt32BE(off + 1)
        if (len < 5) {
          terminate = true
          break
        }
        if (rest < len) break
        const msg = this.pending.subarray(off, off + len)
        off += len
        if (msg[0] === TYPE_TERMINATE) {
          terminate = true
          break
        }
        if (resetsSearchPath(msg)) this.restorePath = true
        batch.push(msg)
      }
    }
    // keep the unconsumed tail (copied, so the big chunk can be freed)
    this.pending = off >= this.pending.length ? Buffer.alloc(0) : Buffer.from(this.pending.subarray(off))

    if (batch.length) {
      const input = new Uint8Array(batch.length === 1 ? Buffer.from(batch[0]) : Buffer.concat(batch))
      const last = batch[batch.length - 1][0]
      // restore search_path only at a message boundary where the backend is
      // idle again (after a simple Query or an extended-protocol Sync)
      const restore = this.restorePath && (last === TYPE_QUERY || last === TYPE_SYNC)
      if (restore) this.restorePath = false
      this.enqueue(() => this.process(input, restore))
    }
    if (terminate) {
      this.pending = Buffer.alloc(0)
      this.enqueue(() => this.socket?.end())
    }
    return this.chain
  }

  enqueue(fn) {
    this.chain = this.chain.then(fn).catch((err) => {
      debug(`handler error: ${err?.message ?? err}`)
      this.handleError(err)
    })
  }

  async process(input, restore) {
    if (!this.socket || !this.active) return
    this.inspectData('incoming', input)
    // copy at once: the returned view is reused by the next PGlite call
    const reply = Buffer.from(db.execProtocolRawSync(input))
    if (restore) db.execProtocolRawSync(RESTORE_SEARCH_PATH_MSG) // reply dropped
    await db.syncToFs()
    this.inspectData('outgoing', reply)
    if (reply.length && this.socket?.writable) {
      await new Promise((resolve, reject) =>
        this.socket.write(reply, (err) => (err ? reject(err) : resolve())),
      )
    }
  }
}

// --- session reset between clients ----------------------------------------------
// All clients share PGlite's single backend, so session state (open
// transaction, named prepared statements - asyncpg reuses "__asyncpg_stmt_N__"
// names on every new connection -, portals, advisory locks, SET values, temp
// tables, LISTENs) would leak into the next connection. Reset after each client.
async function resetSession() {
  try {
    await db.execProtocolRaw(SYNC_MSG) // leave a possible extended-protocol error state
    await db.exec('ROLLBACK') // only a warning when no transaction is open
    await db.exec('DISCARD ALL')
    await db.exec(RESTORE_SEARCH_PATH)
  } catch (err) {
    log(`session reset failed: ${err?.message ?? err}`)
  }
}

// --- connection queue: one client at a time ---------------------------------------
const queue = []
const sockets = new Set()
let busy = false
let stopping = false

function serveNext() {
  if (busy || stopping) return
  const socket = queue.shift()
  if (!socket) return
  if (socket.destroyed) return serveNext()
  busy = true
  const handler = new FramedHandler({ db, closeOnDetach: true, debug: false })
  let done = false
  const finish = async () => {
    if (done) return
    done = true
    await resetSession()
    debug('client done')
    busy = false
    serveNext()
  }
  handler.addEventListener('close', finish)
  handler.addEventListener('error', (e) => {
    debug(`client error: ${e.detail?.message ?? e.detail}`)
    finish()
  })
  handler.attach(socket).then(
    () => {
      debug(`client attached ${socket.remoteAddress}:${socket.remotePort}`)
      if (socket.destroyed) {
        // closed while waiting for the lock: no 'close' event will follow
        handler.detach(true)
        finish()
      }
    },
    (err) => {
      log(`attach failed: ${err?.message ?? err}`)
      socket.destroy()
      finish()
    },
  )
}

const server = net.createServer((socket) => {
  sockets.add(socket)
  socket.on('close', () => sockets.delete(socket))
  socket.on('error', () => {}) // the attached socket's errors also reach its handler
  socket.setNoDelay(true)
  if (stopping) return socket.destroy()
  queue.push(socket)
  serveNext()
})

// --- lifecycle ----------------------------------------------------------------------
async function shutdown(signal) {
  if (stopping) return
  stopping = true
  debug(`${signal}: shutting down`)
  setTimeout(() => process.exit(0), 5000).unref()
  server.close()
  for (const socket of sockets) socket.destroy()
  try {
    await db.close()
  } catch (err) {
    log(`close failed: ${err?.message ?? err}`)
  }
  process.exit(0)
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
process.on('unhandledRejection', (err) => log(`unhandled rejection: ${err?.message ?? err}`))

try {
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
} catch (err) {
  log(`cannot listen on ${opts.host}:${opts.port}: ${err?.message ?? err}`)
  await db.close().catch(() => {})
  process.exit(1)
}
process.stdout.write(`READY ${server.address().port}\n`)
