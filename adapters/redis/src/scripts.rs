//! The Lua scripts, as source text. Each runs atomically on the server, which is what
//! makes "check then act" steps (compare-and-delete, bounded enqueue, move to the dead
//! letter) safe against concurrent workers. Every script touches only keys passed in
//! `KEYS` and sharing one hash tag, so they run on Redis Cluster too.
//!
//! Time, where needed, is read from the server (`TIME`): all workers then agree on when a
//! retry is due, whatever their own clocks say.
//!
//! Stream entries of the job queue carry two fields: `job` (the encoded job) and `base`
//! (how many attempts were made before this entry was written: 0 for a fresh job, the
//! failed attempt's number for a retry). The attempt of a delivery is `base` plus the
//! entry's delivery count in the consumer group, which Redis keeps across redeliveries.

/// Compare-and-delete. KEYS: lock key. ARGV: token. Returns 1 when deleted, else 0.
pub(crate) const RELEASE_LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Bounded enqueue. KEYS: stream, retry. ARGV: job, max_len.
/// Returns `{'ok', id}`, or `{'full', jobs held}` without writing.
pub(crate) const ENQUEUE: &str = r"
local held = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if held >= tonumber(ARGV[2]) then
  return {'full', held}
end
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[1], 'base', '0')
return {'ok', id}
";

/// Shared Lua helper: the `job` and `base` fields of stream entry `id`, or nil when the
/// entry no longer exists.
const READ_ENTRY: &str = r"
local function read_entry(stream, id)
  local e = redis.call('XRANGE', stream, id, id)
  if #e == 0 then return nil end
  local fields = e[1][2]
  local job, base = '', 0
  for i = 1, #fields, 2 do
    if fields[i] == 'job' then job = fields[i + 1]
    elseif fields[i] == 'base' then base = tonumber(fields[i + 1]) or 0 end
  end
  return {job, base}
end
";

/// Takes over one reservation whose visibility timeout expired (idle ≥ visibility).
/// KEYS: stream, dead. ARGV: group, consumer, visibility_ms, max_attempts, scan_limit,
/// dead_max_len.
///
/// An entry whose attempts are used up goes to the dead letter instead (and the scan
/// continues); an entry deleted under us is dropped from the pending list. Returns
/// `{id, job, attempt}` for the claimed entry, or nil.
pub(crate) fn reclaim() -> String {
    format!(
        "{READ_ENTRY}{}",
        r"
for _ = 1, tonumber(ARGV[5]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', 1)
  if #p == 0 then return nil end
  local id = p[1][1]
  local deliveries = tonumber(p[1][4])
  local entry = read_entry(KEYS[1], id)
  if entry == nil then
    redis.call('XACK', KEYS[1], ARGV[1], id)
  else
    local attempts = entry[2] + deliveries
    if attempts >= tonumber(ARGV[4]) then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
        'job', entry[1], 'attempts', attempts, 'entry', id,
        'error', 'not acknowledged within the visibility timeout')
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
    else
      -- Without JUSTID, XCLAIM bumps the delivery count: that is the attempt counter.
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id)
      return {id, entry[1], attempts + 1}
    end
  end
end
return nil
"
    )
}

/// Moves due retries back into the stream. KEYS: stream, retry. ARGV: batch limit.
/// Members of the retry set are `{old entry id}|{base}|{job}`.
/// Returns milliseconds until the next retry is due (0 if more are due now), or -1.
pub(crate) const PROMOTE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local base, job = string.match(member, '^[^|]*|([^|]*)|(.*)$')
  if base ~= nil then
    redis.call('XADD', KEYS[1], '*', 'job', job, 'base', base)
  end
  redis.call('ZREM', KEYS[2], member)
end
local upcoming = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #upcoming == 0 then return -1 end
local wait = tonumber(upcoming[2]) - now
if wait < 0 then wait = 0 end
return wait
";

/// Acknowledges entry `id`: drops it from the pending list and from the stream.
/// KEYS: stream. ARGV: group, id. Returns how many pending entries were acknowledged.
pub(crate) const ACK: &str = r"
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return acked
";

/// Gives a delivery back. KEYS: stream, retry, dead. ARGV: group, id, attempt,
/// max_attempts, delay_ms, error, dead_max_len.
///
/// Only acts when entry `id` is still pending with exactly the delivery this attempt
/// number names. Returns the retry delay in ms (≥ 0), -1 when dead-lettered, -2 when
/// the entry is no longer pending (acked, dead-lettered, lost), -3 when it was
/// redelivered since (a stale receipt).
pub(crate) fn nack() -> String {
    format!(
        "{READ_ENTRY}{}",
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return -2 end
local entry = read_entry(KEYS[1], ARGV[2])
if entry == nil then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return -2
end
local attempt = tonumber(ARGV[3])
if entry[2] + tonumber(p[1][4]) ~= attempt then return -3 end
if attempt >= tonumber(ARGV[4]) then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*',
    'job', entry[1], 'attempts', attempt, 'entry', ARGV[2], 'error', ARGV[6])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local delay = tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], now + delay, ARGV[2] .. '|' .. attempt .. '|' .. entry[1])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return delay
"
    )
}

/// Moves entry `id` to the dead letter unconditionally (an undecodable job).
/// KEYS: stream, dead. ARGV: group, id, job, attempts, error, dead_max_len.
pub(crate) const BURY: &str = r"
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
  'job', ARGV[3], 'attempts', ARGV[4], 'entry', ARGV[2], 'error', ARGV[5])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
";

/// A consistent snapshot of the counts. KEYS: stream, retry, dead. ARGV: group.
/// Returns `{undelivered + delayed, pending, dead}`.
pub(crate) const STATS: &str = r"
local len = redis.call('XLEN', KEYS[1])
local pending = 0
if len > 0 then
  pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
end
local ready = len - pending
if ready < 0 then ready = 0 end
return {ready + redis.call('ZCARD', KEYS[2]), pending, redis.call('XLEN', KEYS[3])}
";
