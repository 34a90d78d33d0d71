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
//! A receipt names one delivery, `<entry id>/<attempt>`: the scripts that act on a
//! receipt (ack, nack, defer) first check that the entry is still pending with exactly
//! that delivery ([`HELD`]), so a stale receipt never touches the live redelivery.

/// Compare-and-delete. KEYS: lock key. ARGV: token. Returns 1 when deleted, else 0.
pub(crate) const RELEASE_LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Takes a lock, idempotently per token: the holder's own token restarts the TTL, a
/// free key is taken with `SET NX PX`. KEYS: lock key. ARGV: token, ttl_ms. Returns 1
/// when `token` holds the lock now, else 0.
///
/// Why a script rather than a bare `SET NX`: fred re-sends in-flight commands after a
/// reconnect, and a re-sent `SET NX` whose first copy did run answers "busy" for a lock
/// this very token holds, blocking the key for the whole TTL.
pub(crate) const ACQUIRE_LOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
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

/// Shared Lua helper (needs [`READ_ENTRY`]): whether entry `id` is still pending in
/// `group` with exactly the delivery `attempt` names (`base + delivery count ==
/// attempt`). Returns `{job, base}`, or nil and a code: -2 when the entry is no longer
/// pending (acked, dead-lettered, given back, lost; a pending entry deleted under us is
/// dropped from the pending list on the way), -3 when it was delivered again since.
const HELD: &str = r"
local function held(stream, group, id, attempt)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if #p == 0 then return nil, -2 end
  local entry = read_entry(stream, id)
  if entry == nil then
    redis.call('XACK', stream, group, id)
    return nil, -2
  end
  if entry[2] + tonumber(p[1][4]) ~= attempt then return nil, -3 end
  return entry, 0
end
";

/// Takes over up to `max_claims` reservations whose visibility timeout expired (idle ≥
/// visibility), oldest entry first. KEYS: stream, dead. ARGV: group, consumer,
/// visibility_ms, max_attempts, scan_limit, dead_max_len, max_claims.
///
/// One `XPENDING IDLE` looks at up to `max_claims + scan_limit` expired entries: an
/// entry whose attempts are used up goes to the dead letter instead (and the scan
/// continues), an entry deleted under us is dropped from the pending list. Returns
/// `{more, id, job, attempt, id, job, attempt, …}`: one triple per claimed entry, and
/// `more` = 1 when the scan stopped at a limit (more expired entries may be waiting, so
/// the caller reclaims again at once), 0 when it saw every expired entry.
pub(crate) fn reclaim() -> String {
    format!(
        "{READ_ENTRY}{}",
        r"
local want = tonumber(ARGV[7])
local limit = want + tonumber(ARGV[5])
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', limit)
local out = {0}
local claimed = 0
for i = 1, #p do
  if claimed >= want then
    out[1] = 1
    return out
  end
  local id = p[i][1]
  local deliveries = tonumber(p[i][4])
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
      out[#out + 1] = id
      out[#out + 1] = entry[1]
      out[#out + 1] = attempts + 1
      claimed = claimed + 1
    end
  end
end
if #p >= limit then out[1] = 1 end
return out
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

/// Acknowledges a batch of deliveries, each judged on its own: entry `id` is dropped
/// from the pending list and the stream only if it is still pending with the delivery
/// `attempt` names. KEYS: stream. ARGV: group, then `id, attempt` per receipt. Returns
/// one code per receipt, in order: 1 when acknowledged, -2 or -3 (see [`HELD`]) when
/// that receipt is stale and nothing changed for it. (The same receipt twice in a batch:
/// the first acks, the second finds the entry gone, -2.)
pub(crate) fn ack() -> String {
    format!(
        "{READ_ENTRY}{HELD}{}",
        r"
local codes = {}
for i = 2, #ARGV, 2 do
  local entry, code = held(KEYS[1], ARGV[1], ARGV[i], tonumber(ARGV[i + 1]))
  if entry == nil then
    codes[#codes + 1] = code
  else
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
    codes[#codes + 1] = 1
  end
end
return codes
"
    )
}

/// Gives a delivery back. KEYS: stream, retry, dead. ARGV: group, id, attempt,
/// last_attempt (dead-letter when `attempt` reaches it: the queue's `max_attempts` for a
/// nack, the attempt itself to dead-letter at once), delay_ms, error, dead_max_len.
///
/// Only acts when entry `id` is still pending with exactly the delivery this attempt
/// number names. Returns the retry delay in ms (≥ 0), -1 when dead-lettered, -2 when
/// the entry is no longer pending (acked, dead-lettered, lost), -3 when it was
/// redelivered since (a stale receipt).
pub(crate) fn nack() -> String {
    format!(
        "{READ_ENTRY}{HELD}{}",
        r"
local attempt = tonumber(ARGV[3])
local entry, code = held(KEYS[1], ARGV[1], ARGV[2], attempt)
if entry == nil then return code end
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

/// Gives a delivery back WITHOUT using an attempt: the job is written again with `base =
/// attempt - 1`, so its next delivery carries the same attempt number; never
/// dead-letters. With a zero delay the new entry goes straight into the stream (waking
/// blocked readers at once: this is also how a `reserve` whose caller has gone hands its
/// delivery back), otherwise into the retry set, due after the delay. KEYS: stream,
/// retry. ARGV: group, id, attempt, delay_ms. Only acts when entry `id` is still pending
/// with exactly this delivery. Returns the delay in ms (≥ 0), or -2 / -3 (see [`HELD`]).
pub(crate) fn defer() -> String {
    format!(
        "{READ_ENTRY}{HELD}{}",
        r"
local attempt = tonumber(ARGV[3])
local entry, code = held(KEYS[1], ARGV[1], ARGV[2], attempt)
if entry == nil then return code end
local base = attempt - 1
if base < 0 then base = 0 end
local delay = tonumber(ARGV[4])
if delay <= 0 then
  redis.call('XADD', KEYS[1], '*', 'job', entry[1], 'base', base)
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], now + delay, ARGV[2] .. '|' .. base .. '|' .. entry[1])
end
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

/// Deletes the group's consumers that hold no pending entries and have been idle
/// (`XINFO CONSUMERS` `idle`: since their last interaction with the group) at least
/// `idle_ms`, except `keep` (the caller's own name). KEYS: stream. ARGV: group, keep,
/// idle_ms. Returns how many were deleted. The check and the delete are one atomic
/// step, so a consumer that received an entry in between is never deleted with it
/// (`XGROUP DELCONSUMER` would drop its pending entries, and with them its jobs).
pub(crate) const PRUNE_CONSUMERS: &str = r"
local deleted = 0
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, c in ipairs(consumers) do
  local name, pending, idle = nil, nil, nil
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = tonumber(c[i + 1])
    elseif c[i] == 'idle' then idle = tonumber(c[i + 1]) end
  end
  if name ~= nil and name ~= ARGV[2] and pending == 0 and idle ~= nil
      and idle >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    deleted = deleted + 1
  end
end
return deleted
";
